"""Regenerate the status page screenshots in docs/: ``python docs/make_screenshots.py``.

Starts the appliance with scripted models and a pair of fake upstreams (one of them
stopped, so a worker shows as unhealthy), sends some traffic, and photographs the page at
desktop and phone widths in headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium  # noqa: E402
from tests.support.fake_upstream import FakeUpstream  # noqa: E402
from tests.support.server import RunningServer  # noqa: E402


def main() -> None:
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


if __name__ == "__main__":
    main()
