"""The ``appliance`` command: check prints what is served; flags beat the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from appliance.cli import main
from tests.support.poll import until
from tests.support.server import free_port

CONFIG = """\
auth:
  api_keys:
    - {name: team-a, key: "super-secret-value"}
models:
  - {name: m0, backend: scripted, workers: 2}
routes:
  - {alias: chat, targets: [m0]}
"""


def test_check_prints_models_routes_and_key_names_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "m0" in out and "scripted" in out and "chat" in out and "team-a" in out
    assert "super-secret-value" not in out


def test_check_reports_problems_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("workers: 2", "workers: 2, colour: red"))
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models[0].colour (line 5): unknown key 'colour'" in err


def test_check_refuses_a_usage_ledger_that_cannot_be_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Said before anything starts, not as a traceback from the server's start-up."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("these are my notes, not a database " * 100)
    for usage_path, words in [
        (blocker / "usage.db", "is not a folder"),
        (tmp_path, "is not a file"),
        (not_sqlite, "is not a usage ledger"),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(CONFIG + f"state: {{usage_path: '{usage_path}'}}\n")
        assert main(["check", "-c", str(path)]) == 2
        assert words in capsys.readouterr().err
    fine = tmp_path / "new" / "usage.db"
    path.write_text(CONFIG + f"state: {{usage_path: '{fine}'}}\n")
    assert main(["check", "-c", str(path)]) == 0
    assert f"usage ledger: {fine}" in capsys.readouterr().out
    assert not fine.parent.exists()  # checking creates nothing


def test_flag_beats_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("APPLIANCE_CONFIG", "/does/not/exist.yaml")
    monkeypatch.setenv("APPLIANCE_PORT", "9001")
    # check takes no --port, so the env value shows; -c beats APPLIANCE_CONFIG.
    assert main(["check", "-c", str(path)]) == 0
    assert "127.0.0.1:9001" in capsys.readouterr().out
    monkeypatch.delenv("APPLIANCE_CONFIG")


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "m0" in result.stdout


def test_serve_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    """README, Commands: flags beat ``APPLIANCE_*`` variables, which beat the file. The
    file says port A and console logs; the environment says port B, JSON logs, another
    config and host; the flags say port C, console logs, this config and 127.0.0.2."""
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + f"server: {{port: {file_port}}}\nlogging: {{format: console}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_CONFIG=str(tmp_path / "does-not-exist.yaml"),
        APPLIANCE_HOST="127.0.0.3",
        APPLIANCE_PORT=str(env_port),
        APPLIANCE_LOG_FORMAT="json",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "appliance", "serve", "-c", str(path)),
                *("--host", "127.0.0.2", "--port", str(flag_port), "--log-format", "console"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:

            def ready() -> bool:
                assert process.poll() is None, log.read_text()
                url = f"http://127.0.0.2:{flag_port}/readyz"
                return httpx.get(url, timeout=1).status_code == 200

            until(ready, what="the server on the flags' host and port")
            for host, port in [("127.0.0.3", env_port), ("127.0.0.1", file_port)]:
                with pytest.raises(httpx.ConnectError):
                    httpx.get(f"http://{host}:{port}/readyz", timeout=1)
        finally:
            process.terminate()
            process.wait(30)
    lines = log.read_text().splitlines()
    assert any("cluster_started" in line for line in lines), lines
    assert not any(line.startswith("{") for line in lines), "console, as the flag says"
