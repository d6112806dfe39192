"""The README's Commands section names every subcommand and flag; every override is named."""

from __future__ import annotations

import re

import pytest

from appliance.cli import main
from appliance.config import Settings
from appliance.config.settings import ENV_PREFIX
from tests.docs import readme


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def subcommands(capsys: pytest.CaptureFixture[str]) -> list[str]:
    usage = help_of(capsys)
    found = re.search(r"\{([a-z,]+)\}", usage)
    assert found, usage
    return found.group(1).split(",")


def options(help_text: str) -> list[list[str]]:
    """Each option of a ``--help`` text, as its names (``["-c", "--config"]``)."""
    out = []
    for line in help_text.splitlines():
        if line.startswith("  -"):
            spec = re.split(r"\s{2,}", line.strip())[0]
            names = re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", spec)
            if names and names[0] not in ("-h", "--help"):
                out.append(names)
    return out


def test_every_subcommand_and_flag_is_in_the_commands_section(
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = readme.section("Commands")
    commands = subcommands(capsys)
    assert {"serve", "check", "reload", "worker", "usage"} <= set(commands)
    for command in commands:
        assert f"appliance {command}" in section, f"`appliance {command}` is not in Commands"
        line = next(x for x in section.splitlines() if x.startswith(f"appliance {command}"))
        missing = [
            " / ".join(names)
            for names in options(help_of(capsys, command))
            if not any(re.search(rf"(?<![\w-]){n}\b", line) for n in names)
        ]
        assert not missing, f"`appliance {command}` flags missing from its Commands line: {missing}"


def test_every_environment_override_is_named() -> None:
    text = readme.text()
    names = [ENV_PREFIX + field.upper() for field in Settings.model_fields]
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"overrides the README does not name: {missing}"
