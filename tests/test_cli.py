"""The ``appliance`` command: check prints what is served; flags beat the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main

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
