"""``appliance check`` says what several processes cost with local models."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.cli import main

CONFIG = """\
server: {{processes: {processes}}}
models:
  - {{name: chat, backend: llama_cpp, workers: 2, options: {{model: {{path: /m.gguf}}}}}}
  - {{name: up, backend: openai, options: {{base_url: "http://h:1/v1"}}}}
"""


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], processes: int) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(processes=processes))
    assert main(["check", "-c", str(path)]) == 0
    return capsys.readouterr().out


def test_check_warns_that_every_process_starts_its_own_local_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = check(tmp_path, capsys, processes=3)
    assert "every process starts its own local model workers" in out
    assert "3 x 2 = 6 model processes" in out
    assert "no cap" in out  # the openai model's concurrency


def test_check_with_one_process_shows_threads_without_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = check(tmp_path, capsys, processes=1)
    assert "every process starts" not in out
    assert "local model workers: 2 per process" in out and "(default)" in out
