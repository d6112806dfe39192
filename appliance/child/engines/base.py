"""What an engine offers; unsupported operations raise a 400."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from appliance.config.backends import ModelFile
from appliance.errors import InvalidRequestError


class Engine:
    """A loaded model. Methods block; call them from a thread.

    Args:
        name: The public model name, used in replies.

    Attributes:
        dimensions: The size of the model's embeddings (embedding models only).
        cpu: What the runtime's CPU code uses here, for the load log (llama.cpp: the
            variant chosen for this CPU and its features, ``icelake: SSE3 ... AVX512``).
    """

    dimensions: int | None = None
    cpu: str | None = None

    def __init__(self, name: str) -> None:
        self.name = name

    def warm_up(self) -> None:
        """Run the model once, as little as it can (a token, an embedding), so that a
        model that cannot run here fails its load rather than its first request."""

    def chat(self, body: dict[str, Any], stop: threading.Event | None = None) -> dict[str, Any]:
        """One reply; ``stop`` set: it ends after the token being made, as it stands."""
        raise _unsupported("chat/completions")

    def chat_stream(self, body: dict[str, Any], stop: threading.Event) -> Iterator[dict[str, Any]]:
        raise _unsupported("chat/completions")

    def completion(
        self, body: dict[str, Any], stop: threading.Event | None = None
    ) -> dict[str, Any]:
        raise _unsupported("completions")

    def completion_stream(
        self, body: dict[str, Any], stop: threading.Event
    ) -> Iterator[dict[str, Any]]:
        raise _unsupported("completions")

    def embed(self, texts: list[str], dimensions: int | None = None) -> tuple[Any, int]:
        """Vectors for ``texts`` (float lists or 1-d float32 arrays) and tokens they took.

        Args:
            texts: The inputs.
            dimensions: Keep this many leading dimensions (see :func:`shorten`); the
                caller checked it is at most :attr:`dimensions`.
        """
        raise _unsupported("embeddings")

    def rerank(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """One relevance score per document, and the tokens they took."""
        raise _unsupported("rerank")


def shorten(vectors: Any, dimensions: int | None) -> Any:
    """Vectors cut to their first ``dimensions`` and L2-normalised again, as OpenAI does.

    Vectors already that size or smaller (or ``dimensions`` of ``None``) are returned as
    they are; shortened ones are 1-d float32 arrays.
    """
    if dimensions is None or not len(vectors) or len(vectors[0]) <= dimensions:
        return vectors
    import numpy as np  # a local-model dependency, like the engines that call this

    matrix = np.asarray(vectors, dtype=np.float32)[:, :dimensions]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return list(matrix / np.clip(norms, 1e-12, None))


def _unsupported(what: str) -> InvalidRequestError:
    return InvalidRequestError(f"This model does not serve /{what}.", code="model_not_supported")


def resolve(file: ModelFile) -> Path:
    """The path of a model file, which must exist."""
    if file.path is not None:
        path = Path(file.path).expanduser()
    else:
        assert file.package is not None and file.file is not None
        spec = find_spec(file.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise FileNotFoundError(f"package {file.package!r} is not installed")
        # Located, not imported: some model packages import heavy plugins on import.
        path = Path(locations[0]) / file.file
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    return path
