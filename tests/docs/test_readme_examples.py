"""The README's curl and Python examples run against the default config, as written.

The real appliance serves ``configs/cluster.yaml`` (SmolLM2, MiniLM, the scripted model)
on a free loopback port; each runnable ``sh`` and ``python`` block of the README runs with
``127.0.0.1:8000`` pointed at it. curl is told to fail on an error status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.docs import readme
from tests.support.server import RunningServer

DEFAULT = readme.ROOT / "configs" / "cluster.yaml"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(DEFAULT)


def _aimed(block: readme.Block, server: RunningServer) -> str:
    return block.text.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")


def _run(argv: list[str], block: readme.Block) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=240, cwd=readme.ROOT, env={**os.environ}
    )
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.parametrize("block", readme.runnable("sh"), ids=lambda b: b.id)
def test_readme_shell_block_runs(block: readme.Block, server: RunningServer) -> None:
    script = _aimed(block, server).replace("curl ", "curl --fail-with-body --max-time 120 ")
    done = _run(["bash", "-euo", "pipefail", "-c", script], block)
    assert done.stdout.strip(), f"{block.id} printed nothing"


@pytest.mark.parametrize("block", readme.runnable("python"), ids=lambda b: b.id)
def test_readme_python_block_runs(block: readme.Block, server: RunningServer) -> None:
    done = _run([sys.executable, "-c", _aimed(block, server)], block)
    assert done.stdout.strip(), f"{block.id} printed nothing"


def test_every_runnable_block_talks_to_the_server() -> None:
    """A runnable sh/python block that does not call the server belongs elsewhere."""
    for block in readme.runnable("sh") + readme.runnable("python"):
        assert "127.0.0.1:8000" in block.text, (
            f"{block.id} does not call the server: mark it <!-- not run: why -->"
        )
