"""What a local model costs in memory: estimated from its files, measured once it runs.

Before a model has run, its need is estimated per worker process as the runtime
(Python and the engine's libraries), its files, and what its context takes:

- llama.cpp: the KV cache, ``n_ctx`` x layers x (K and V widths) x 2 bytes (f16), read
  from the GGUF header, plus compute buffers;
- ONNX Runtime: attention activations of a full batch, which grow with
  ``batch_size`` x ``max_length``\\ :sup:`2` (ONNX Runtime keeps its arena at the peak).

The constants were measured on SmolLM2-135M (Q4_1) and all-MiniLM-L6-v2 (int8): the
estimates come out a little above the peak RSS those workers reached. Once a model's
workers run, their real RSS (``/proc/<pid>/status``) is what counts.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from appliance.config.model import LocatedValueError

if TYPE_CHECKING:
    from appliance.config import ApplianceConfig
    from appliance.config.backends import ModelFile

MB = 1024 * 1024

_LLAMA_RUNTIME_MB = 80.0  # python, llama.cpp and the worker's server, before the model
_LLAMA_COMPUTE_MB = 32.0  # llama.cpp's compute buffers at the default n_batch
_ONNX_RUNTIME_MB = 250.0  # python, ONNX Runtime, tokenizers and the session
_ONNX_BYTES_PER_SQUARE_TOKEN = 320  # activations per text per token^2 (MiniLM, measured)
_KV_FALLBACK_DIVISOR = 4096  # no readable GGUF header: a file's bytes / this per token


@dataclass(frozen=True)
class Estimate:
    """A local model's estimated need: ``workers`` processes of ``runtime+files+context``."""

    workers: int
    runtime_mb: float
    files_mb: float
    context_mb: float

    @property
    def per_worker_mb(self) -> float:
        """One worker process."""
        return self.runtime_mb + self.files_mb + self.context_mb

    @property
    def total_mb(self) -> float:
        """Every worker process of the model."""
        return self.workers * self.per_worker_mb

    def describe(self) -> str:
        """``260 MB (1 worker x (runtime 80 + files 94 + context 86 MB))``."""
        plural = "s" if self.workers != 1 else ""
        return (
            f"{self.total_mb:.0f} MB ({self.workers} worker{plural} x (runtime "
            f"{self.runtime_mb:.0f} + files {self.files_mb:.0f} + context "
            f"{self.context_mb:.0f} MB))"
        )


@dataclass(frozen=True)
class Usage:
    """One process's memory now and at its peak (``VmRSS``, ``VmHWM``), in MB."""

    rss_mb: float
    peak_mb: float


def estimate(model: object) -> Estimate | None:
    """The estimated need of a local model; None for other backends or missing files."""
    from appliance.config.backends import LlamaCppModel, OnnxModel

    if isinstance(model, LlamaCppModel):
        path = _path(model.options.model)
        if path is None:
            return None
        size = path.stat().st_size
        per_token = _kv_bytes_per_token(path) or size / _KV_FALLBACK_DIVISOR
        context = model.options.n_ctx * per_token / MB
        return Estimate(model.workers, _LLAMA_RUNTIME_MB, size / MB, context + _LLAMA_COMPUTE_MB)
    if isinstance(model, OnnxModel):
        files = [_path(model.options.model), _path(model.options.tokenizer)]
        if None in files:
            return None
        size = sum(p.stat().st_size for p in files if p is not None)
        opts = model.options
        activations = opts.batch_size * opts.max_length**2 * _ONNX_BYTES_PER_SQUARE_TOKEN
        return Estimate(model.workers, _ONNX_RUNTIME_MB, size / MB, activations / MB)
    return None


def process_usage(pid: int) -> Usage | None:
    """A live process's memory, from ``/proc`` (None where there is none: gone, not Linux)."""
    fields: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    if "VmRSS" not in fields:
        return None  # a zombie has no memory left to count
    return Usage(fields["VmRSS"], fields.get("VmHWM", fields["VmRSS"]))


class Footprint:
    """One local model's memory: what a load needs, and what its workers hold now.

    Args:
        model: The model's declaration.
        pids: Its worker processes' ids now (those running).
    """

    def __init__(self, model: object, pids: Callable[[], list[int]]) -> None:
        self.estimate = estimate(model)
        self.peak_mb: float | None = None  # measured in the last run
        self._pids = pids

    def need_mb(self) -> float:
        """Memory a load needs: the last measured peak, else the estimate."""
        if self.peak_mb is not None:
            return self.peak_mb
        return self.estimate.total_mb if self.estimate is not None else 0.0

    def held_mb(self, serving: list[int], workers: int) -> float:
        """The peak RSS of its ``serving`` processes, and the share of the need of each
        other one of its ``workers`` (starting)."""
        usages = [u for pid in serving if (u := process_usage(pid)) is not None]
        share = self.need_mb() / max(1, workers)
        return sum(u.peak_mb for u in usages) + share * max(0, workers - len(usages))

    def rss_mb(self) -> float | None:
        """The RSS of its worker processes now (None while none runs)."""
        found = [u.rss_mb for pid in self._pids() if (u := process_usage(pid)) is not None]
        return round(sum(found), 1) if found else None

    def measure(self, workers: int) -> None:
        """Keep the peak of its running workers as its need (before they stop), when every
        one of its ``workers`` runs."""
        usages = [process_usage(pid) for pid in self._pids()]
        if usages and len(usages) == workers and None not in usages:
            self.peak_mb = sum(u.peak_mb for u in usages if u is not None)


def _path(file: ModelFile) -> Path | None:
    from appliance.child.engines.base import resolve

    try:
        return resolve(file)
    except (FileNotFoundError, ValueError, ImportError):
        return None


def _kv_bytes_per_token(path: Path) -> float | None:
    stat = path.stat()
    return _kv_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _kv_cached(path: str, size: int, mtime_ns: int) -> float | None:
    """KV-cache bytes per token of context (f16 K and V), from a GGUF file's header."""
    try:
        with open(path, "rb") as file:
            meta = _gguf_metadata(file)
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return None
    if meta is None:
        return None
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return None

    def number(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int | float) and value > 0 else None

    layers, width, heads = (
        number("block_count"),
        number("embedding_length"),
        number("attention.head_count"),
    )
    if layers is None or width is None or heads is None:
        return None
    kv_heads = number("attention.head_count_kv") or heads
    key = number("attention.key_length") or width // heads
    value = number("attention.value_length") or width // heads
    return float(layers * kv_heads * (key + value) * 2)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _gguf_metadata(file: IO[bytes]) -> dict[str, object] | None:
    """The scalar and string key/values of a GGUF (v2+) header; arrays are skipped."""
    if file.read(4) != b"GGUF":
        return None
    (version,) = struct.unpack("<I", file.read(4))
    if version < 2:
        return None
    _tensors, count = struct.unpack("<QQ", file.read(16))
    if count > 100_000:
        raise ValueError("implausible GGUF header")
    out: dict[str, object] = {}
    for _ in range(count):
        key = _string(file)
        (kind,) = struct.unpack("<I", file.read(4))
        if kind == _ARRAY:
            (inner,) = struct.unpack("<I", file.read(4))
            (length,) = struct.unpack("<Q", file.read(8))
            for _ in range(length):
                _skip(file, inner)
            continue
        out[key] = _string(file) if kind == _STRING else _scalar(file, kind)
    return out


def _scalar(file: IO[bytes], kind: int) -> object:
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise ValueError(f"unknown GGUF value type {kind}")
    return struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0]


def _string(file: IO[bytes]) -> str:
    (length,) = struct.unpack("<Q", file.read(8))
    if length > 1 << 24:
        raise ValueError("implausible GGUF string")
    return file.read(length).decode("utf-8")


def _skip(file: IO[bytes], kind: int) -> None:
    if kind == _STRING:
        (length,) = struct.unpack("<Q", file.read(8))
        file.seek(length, 1)
    elif kind in _SCALARS:
        file.seek(struct.calcsize(_SCALARS[kind]), 1)
    else:
        raise ValueError(f"nested GGUF array of type {kind}")


def budget_problems(config: ApplianceConfig) -> list[LocatedValueError]:
    """Each local model must fit the budget alone, and startup models together."""
    budget = config.local.memory_budget_mb
    if budget is None:
        return []
    share = budget / config.server.processes
    per = f"local.memory_budget_mb {budget} / server.processes {config.server.processes}"
    at_start = 0.0
    problems: list[LocatedValueError] = []
    for i, model in enumerate(config.models):
        need = estimate(model)
        if need is None:
            continue  # not a local model, or its file is missing: its load will say so
        if need.total_mb > share:
            problems.append(
                LocatedValueError(
                    f"model {model.name!r} needs about {need.describe()}, more than the "
                    f"memory budget of {share:g} MB ({per})",
                    ("models", i),
                )
            )
        if getattr(model, "load", None) == "startup":
            at_start += need.total_mb
    if at_start > share:
        problems.append(
            LocatedValueError(
                f"the `load: startup` models need about {at_start:.0f} MB together, more "
                f"than the memory budget of {share:g} MB ({per}); make some `on_demand`",
                ("local", "memory_budget_mb"),
            )
        )
    return problems
