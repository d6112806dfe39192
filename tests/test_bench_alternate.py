"""bench/alternate.py's ``--compare OLD NEW``: it compares the trees it is given, or says
why it cannot; it never measures something else in their place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compare(old: Path | str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "relay.py"),
            "--streams",
            "5",
            *options,
            "--compare",
            str(old),
            str(ROOT),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_tree_without_the_package_is_refused_not_replaced_by_the_installed_one(
    tmp_path: Path,
) -> None:
    """A mistyped tree would otherwise run with whatever ``appliance`` the interpreter has
    installed, and its figures would be printed as the tree's."""
    done = compare(tmp_path / "no-such-tree", "--rounds", "1")
    assert done.returncode == 2, done.stdout
    assert "holds no appliance package" in done.stderr


def test_a_run_that_fails_shows_why(tmp_path: Path) -> None:
    package = tmp_path / "appliance"
    package.mkdir()
    (package / "__init__.py").write_text('raise ImportError("this tree is broken")\n')
    done = compare(tmp_path, "--rounds", "1")
    assert done.returncode != 0
    assert "this tree is broken" in done.stderr


def test_no_rounds_is_refused() -> None:
    done = compare(ROOT, "--rounds", "0")
    assert done.returncode == 2
    assert "--rounds" in done.stderr
