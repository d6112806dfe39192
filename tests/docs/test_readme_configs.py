"""Every YAML block of the README, and every shipped config, passes ``appliance check``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.cli import main
from tests.docs import readme

EXAMPLES = sorted((readme.ROOT / "configs" / "examples").glob("*.yaml"))
SHIPPED = [readme.ROOT / "configs" / "cluster.yaml", readme.ROOT / "packaging" / "container.yaml"]

_NEEDED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # no default: must be set


def check(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``appliance check`` on ``text`` with the variables it names set; its output."""
    for name in _NEEDED.findall(text):
        monkeypatch.setenv(name, f"readme-{name.lower()}")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = main(["check", "-c", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.mark.parametrize("block", readme.runnable("yaml"), ids=lambda b: b.id)
def test_readme_yaml_block_passes_check(
    block: readme.Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = check(block.text, tmp_path, monkeypatch, capsys)
    assert "MODEL" in out


@pytest.mark.parametrize(
    "path", EXAMPLES + SHIPPED, ids=lambda p: p.relative_to(readme.ROOT).as_posix()
)
def test_shipped_config_passes_check(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    check(path.read_text(), tmp_path, monkeypatch, capsys)


def test_the_examples_are_there_commented_and_named_in_the_readme() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"local.yaml", "proxy.yaml", "keys.yaml", "scale.yaml"} <= names
    for path in EXAMPLES:
        assert path.read_text().startswith("# "), f"{path.name} starts without a comment"
        assert f"configs/examples/{path.name}" in readme.text(), f"README omits {path.name}"


def test_every_config_file_the_readme_names_exists() -> None:
    named = set(re.findall(r"(?<![\w/])((?:configs|packaging)/[\w./-]+\.yaml)", readme.text()))
    assert named, "the README names no config file"
    missing = sorted(n for n in named if not (readme.ROOT / n).is_file())
    assert not missing, f"the README names config files that do not exist: {missing}"


def test_no_fenced_block_is_left_unchecked() -> None:
    """sh, python and yaml blocks either run (here or in test_readme_examples) or say why not."""
    for block in readme.blocks():
        assert block.language in {"", "sh", "python", "yaml"}, (
            f"{block.id}: no test runs ```{block.language} blocks; add one or mark it "
            "<!-- not run: why -->"
        )
