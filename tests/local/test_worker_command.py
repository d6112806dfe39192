"""``appliance worker``: a one-line refusal for what it cannot serve; its flags win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance import cli
from appliance.config import LoggingConfig, ModelConfig
from tests.conftest import cluster_config, scripted
from tests.local.models import smollm2


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    body = cluster_config(smollm2("small"), scripted("echo"))
    body["logging"] = {"level": "warning", "format": "json"}
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ([], "worker needs --model <name> with -c; local models: small"),
        (["--model", "echo"], "model 'echo' is a scripted model"),
        (["--model", "nope"], "no model 'nope' in the config; local models: small"),
    ],
)
def test_a_missing_or_non_local_model_is_one_line(
    config: Path, flags: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["worker", "-c", str(config), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("appliance: ") and said in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_log_flags_win_over_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def configure(logging: LoggingConfig, secrets: list[str]) -> None:
        seen["logging"] = logging

    def run(model: ModelConfig, *args: Any) -> None:
        seen["model"] = model.name

    monkeypatch.setattr("appliance.runtime.logging.configure_logging", configure)
    monkeypatch.setattr("appliance.child.server.run", run)
    flags = ["--model", "small", "--log-format", "console", "--log-level", "debug"]
    assert cli.main(["worker", "-c", str(config), *flags]) == 0
    assert seen["model"] == "small"
    assert (seen["logging"].format, seen["logging"].level) == ("console", "debug")
    assert cli.main(["worker", "-c", str(config), "--model", "small"]) == 0
    assert (seen["logging"].format, seen["logging"].level) == ("json", "warning")
