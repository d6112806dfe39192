"""llama.cpp's CPU code is chosen for the CPU it runs on, and the model says which.

The wheel ``make`` builds holds every x86-64 variant of llama.cpp's CPU backend
(``GGML_BACKEND_DL`` + ``GGML_CPU_ALL_VARIANTS``); the engine loads the best one for this
CPU. The real SmolLM2 runs in ``appliance worker``, which reports the variant and its
features in its load log line and on ``/healthz``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.child.engines.llama_cpu import cpu_features
from tests.support.poll import until

DEFAULT_CONFIG = Path(__file__).parents[2] / "configs" / "cluster.yaml"

# llama.cpp's feature names, and the flags /proc/cpuinfo gives the same instructions.
CPUINFO_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
# What a CPU has that its variant must use: each is in every variant above the one without.
BEST = ("AVX2", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AMX_INT8")


def test_features_are_the_cpu_backends_that_are_on() -> None:
    info = b"CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | OPENMP = 1 | BLAS : ACCELERATE = 1 | "
    assert cpu_features(info) == ("SSE3", "AVX", "OPENMP")
    assert cpu_features(b"") == ()


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    pytest.skip("no CPU flags in /proc/cpuinfo")


@pytest.fixture(scope="module")
def smollm2_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``appliance worker`` serving smollm2: its root URL and the file its log goes to."""
    folder = tmp_path_factory.mktemp("worker")
    port_file, log = folder / "port", folder / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "appliance", "worker", "-c", str(DEFAULT_CONFIG)),
                *("--model", "smollm2", "--port", "0", "--port-file", str(port_file)),
            ],
            env={**os.environ},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        until(
            lambda: port_file.exists() or process.poll() is not None,
            timeout=120,
            what="the worker writing its port file",
        )
        assert process.poll() is None, log.read_text()
        yield f"http://127.0.0.1:{int(port_file.read_text())}", log
    finally:
        process.terminate()
        process.wait(15)


def test_the_model_runs_the_best_cpu_variant_for_this_cpu(
    smollm2_worker: tuple[str, Path],
) -> None:
    root, log = smollm2_worker
    cpu = httpx.get(f"{root}/healthz", timeout=30).json()["cpu"]
    variant, _, listed = cpu.partition(": ")
    features = listed.split()
    assert variant != "built-in", f"a llama.cpp without CPU variants: {cpu}"
    flags = _cpu_flags()
    assert [f for f in features if f in CPUINFO_FLAGS and CPUINFO_FLAGS[f] not in flags] == []
    assert [f for f in BEST if CPUINFO_FLAGS[f] in flags and f not in features] == [], cpu
    lines = log.read_text().splitlines()
    [loaded] = [line for line in lines if "worker_warmed_up" in line]
    assert cpu in loaded
    assert [line for line in lines if "load_backend" in line] == []  # llama.cpp's own info
    # And it generates with it.
    reply = httpx.post(
        f"{root}/v1/completions",
        json={"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 4},
        timeout=60,
    ).json()
    assert reply["usage"]["completion_tokens"] > 0 and reply["choices"][0]["text"]
