"""Regenerate the status page screenshots in docs/: ``python docs/make_screenshots.py``
(``... requests`` for the request log's only).

Starts the appliance with scripted models and a pair of fake upstreams (one of them
stopped, so a worker shows as unhealthy), sends some traffic, and photographs the page at
desktop and phone widths in headless Chromium. Then one with the request log on: a few
requests from two keys, the page's "Requests" list and one request opened.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium  # noqa: E402
from tests.support.fake_upstream import FakeUpstream  # noqa: E402
from tests.support.server import RunningServer  # noqa: E402


def status_page() -> None:
    ups = [FakeUpstream().start(), FakeUpstream().start()]
    config = {
        "models": [
            {
                "name": "gpu-llama",
                "backend": "openai",
                "health": {"interval_s": 0.5, "timeout_s": 0.3},
                "options": {"base_url": [u.base_url for u in ups], "model": "ok"},
            },
            {
                "name": "test-model-name-0",
                "backend": "scripted",
                "workers": 2,
                "options": {"reply": ["Hello", " world."]},
            },
            {"name": "scripted-embed", "backend": "scripted", "type": "embedding"},
        ],
        "routes": [{"alias": "default-chat", "targets": ["gpu-llama", "test-model-name-0"]}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = RunningServer(config, Path(tmp))
        try:
            for i in range(60):
                httpx.post(
                    f"{server.base_url}/v1/chat/completions",
                    json={
                        "model": "default-chat",
                        "messages": [{"role": "user", "content": f"hi {i}"}],
                    },
                )
            ups[1].stop()
            time.sleep(1.5)
            for name, size in (
                ("status-page.png", (1200, 820)),
                ("status-page-phone.png", (390, 844)),
            ):
                with chromium(*size) as driver:
                    driver.get(f"{server.base_url}/")  # type: ignore[attr-defined]
                    time.sleep(2.0)
                    driver.save_screenshot(str(ROOT / "docs" / name))  # type: ignore[attr-defined]
                print("wrote", ROOT / "docs" / name)
        finally:
            server.stop()
            for up in ups:
                up.stop()


ADMIN = "admin-secret"
QUESTIONS = [
    "What is the capital of France?",
    "Summarise the plot of Hamlet in one sentence.",
    "Write a haiku about autumn.",
    "Translate 'good morning' into Spanish.",
]


def request_log() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "models": [
                {
                    "name": "gpt-4o-mini",
                    "backend": "scripted",
                    "options": {"reply": ["The capital", " of France", " is Paris."]},
                },
                {"name": "llama-3.1-8b", "backend": "scripted", "options": {"delay_ms": 40}},
            ],
            "auth": {
                "api_keys": [
                    {"name": "support-bot", "key": "k-support"},
                    {"name": "data-team", "key": "k-data"},
                ]
            },
            "server": {"admin_key": ADMIN},
            "capture": {
                "enabled": True,
                "path": str(Path(tmp) / "requests"),
                "redact": [r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b"],
            },
        }
        server = RunningServer(config, Path(tmp))
        try:
            for i, question in enumerate(QUESTIONS * 2):
                key, model = ("k-support", "gpt-4o-mini") if i % 2 else ("k-data", "llama-3.1-8b")
                client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key)
                client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": question},
                    ],
                    stream=bool(i % 3 == 0),
                    extra_headers={"x-request-id": f"req-{i:03d}"},
                )
            openai.OpenAI(
                base_url=f"{server.base_url}/v1", api_key="k-support"
            ).chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {
                        "role": "user",
                        "content": "My card is 4111 1111 1111 1111, what is the capital of France?",
                    }
                ],
                extra_headers={"x-request-id": "req-card"},
            )
            time.sleep(1.5)
            with chromium(1200, 1300) as driver:
                driver.get(f"{server.base_url}/healthz")  # type: ignore[attr-defined]
                driver.execute_script(  # type: ignore[attr-defined]
                    "localStorage.setItem('applianceAdminKey', arguments[0])", ADMIN
                )
                driver.get(f"{server.base_url}/")  # type: ignore[attr-defined]
                time.sleep(2.5)
                driver.execute_script(  # type: ignore[attr-defined]
                    "document.querySelector('tr[data-request=\"req-card\"]').click()"
                )
                time.sleep(1.0)
                driver.execute_script(  # type: ignore[attr-defined]
                    "document.getElementById('request').scrollIntoView()"
                )
                driver.save_screenshot(str(ROOT / "docs" / "request-log.png"))  # type: ignore[attr-defined]
            print("wrote", ROOT / "docs" / "request-log.png")
        finally:
            server.stop()


def main() -> None:
    if sys.argv[1:] != ["requests"]:
        status_page()
    request_log()


if __name__ == "__main__":
    main()
