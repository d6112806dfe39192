"""llama.cpp's CPU code: the variant chosen for this CPU at run time, and what it uses.

``make`` builds llama.cpp as its own release builds are (``GGML_BACKEND_DL`` with
``GGML_CPU_ALL_VARIANTS``): libggml holds no CPU code; one ``libggml-cpu-<variant>.so`` per
x86-64 level (``x64``, ``sse42``, ``haswell``, ``skylakex``, ``icelake``, ``zen4``,
``sapphirerapids``...) sits next to it, and ggml loads the best one this CPU can run. It
looks for them next to the executable and in the working folder, never in llama-cpp-python's
``lib`` folder, and llama-cpp-python does not ask it to: :func:`load_cpu_backend` does, once
per process, before the first model. A build with its CPU code linked in (no variants in
the folder) needs nothing and is described the same way.
"""

from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_VARIANT = re.compile(r"/libggml-cpu-([\w.-]+)\.so\b")


@dataclass(frozen=True)
class CpuBackend:
    """What llama.cpp runs on here.

    Attributes:
        variant: The CPU variant loaded (``icelake``, say); ``None`` for a build with one,
            fixed, CPU backend.
        features: What that code uses, as ``llama_print_system_info`` says
            (``AVX2``, ``AVX512``, ``AMX_INT8``..., and ``OPENMP``, ``REPACK``).
    """

    variant: str | None
    features: tuple[str, ...]

    def describe(self) -> str:
        """One line for a log: ``icelake: SSE3 SSSE3 AVX ...``."""
        return f"{self.variant or 'built-in'}: {' '.join(self.features)}"


def load_cpu_backend() -> CpuBackend:
    """Load the best CPU variant of llama.cpp for this CPU (once), and say which it is.

    Raises:
        RuntimeError: The build has variants but none loads here (a folder missing some
            of its files): a model load would fail with "no backends are loaded".
    """
    import llama_cpp
    from llama_cpp import llama_cpp as bindings

    # llama.cpp's info lines ("load_backend: loaded CPU backend from ...") are not the
    # log's; errors still show. Llama(verbose=False) sets the same level, later.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    folder = Path(llama_cpp.__file__).parent / "lib"
    if any(folder.glob("libggml-cpu-*.so")):
        # ggml's functions as libllama links them: the wheel's libggml.so is a copy of the
        # libggml.so.0 it loaded, and opening that copy would load a second, empty, ggml.
        ggml: Any = bindings._lib
        ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path.restype = None
        if not ggml.ggml_backend_reg_by_name(b"CPU"):
            ggml.ggml_backend_load_all_from_path(str(folder).encode())
        if not ggml.ggml_backend_reg_by_name(b"CPU"):
            raise RuntimeError(
                f"llama.cpp loaded none of its CPU variants (libggml-cpu-*.so in {folder})"
            )
    return CpuBackend(_loaded_variant(), cpu_features(llama_cpp.llama_print_system_info()))


def cpu_features(system_info: bytes) -> tuple[str, ...]:
    """The CPU features ``llama_print_system_info`` reports as on (``CPU : AVX = 1 | ...``)."""
    text = system_info.decode(errors="replace")
    _, found, rest = text.partition("CPU :")
    if not found:
        return ()
    features = []
    for item in rest.split("|"):
        name, equals, value = item.partition("=")
        if not equals or ":" in name:  # the end of the CPU's list: the next backend's name
            break
        if value.strip() not in ("", "0"):
            features.append(name.strip())
    return tuple(features)


def _loaded_variant() -> str | None:
    """The ``libggml-cpu-<variant>.so`` mapped into this process, if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = _VARIANT.search(maps)
    return found.group(1) if found else None
