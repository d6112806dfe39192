"""Admin commands posted in the runtime folder: they reach the other registered processes,
their answers come back, a process that does not answer is reported, and nothing stays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.runtime import commands
from appliance.runtime import processes as runtime

# A registered process that answers each command addressed to it (or, with "mute", none).
CHILD = """
import os, signal, sys, time
from pathlib import Path
from appliance.runtime import commands, processes as runtime
folder, mute = Path(sys.argv[1]), sys.argv[2] == "mute"
taken = set()
def wake(*_):
    for command in commands.pending(folder, taken):
        commands.answer(folder, command, {"pid": os.getpid(), "did": command.action})
signal.signal(signal.SIGUSR2, signal.SIG_IGN if mute else wake)
registration = runtime.register(str(folder))
print("registered", flush=True)
time.sleep(60)  # alive until the test kills it
"""


def start_child(folder: Path, mode: str = "answer") -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), mode], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "registered"
    return child


def stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait(10)


async def test_a_command_reaches_every_other_process_and_their_answers_come_back(
    tmp_path: Path,
) -> None:
    children = [start_child(tmp_path), start_child(tmp_path)]
    try:
        command = commands.post(tmp_path, "unload", "smol")
        assert command is not None
        assert sorted(command.to) == sorted(child.pid for child in children)
        answers = await commands.collect(tmp_path, command, timeout_s=60)
        assert answers == {child.pid: {"pid": child.pid, "did": "unload"} for child in children}
        commands.withdraw(tmp_path, command)
        assert list((tmp_path / "commands").iterdir()) == []
    finally:
        for child in children:
            stop(child)


async def test_a_process_that_does_not_answer_is_reported_and_not_waited_for(
    tmp_path: Path,
) -> None:
    mute = start_child(tmp_path, "mute")
    try:
        command = commands.post(tmp_path, "load", "smol")
        assert command is not None
        assert await commands.collect(tmp_path, command, timeout_s=0.2) == {mute.pid: "no_answer"}
        stop(mute)
        assert await commands.collect(tmp_path, command, timeout_s=60) == {mute.pid: "gone"}
    finally:
        stop(mute)
    commands.withdraw(tmp_path, command)
    assert list((tmp_path / "commands").iterdir()) == []


def test_a_process_alone_posts_nothing(tmp_path: Path) -> None:
    registration = runtime.register(str(tmp_path))  # this process only
    try:
        assert commands.post(tmp_path, "load", "smol") is None
    finally:
        assert registration is not None
        registration.close()
    assert not (tmp_path / "commands").exists()


def test_an_answer_after_the_sender_stopped_waiting_is_dropped(tmp_path: Path) -> None:
    mute = start_child(tmp_path, "mute")
    try:
        command = commands.post(tmp_path, "load", "smol")
        assert command is not None
        commands.withdraw(tmp_path, command)
        commands.answer(tmp_path, command, {"late": True})
        assert list((tmp_path / "commands").iterdir()) == []
    finally:
        stop(mute)


def test_only_commands_addressed_to_this_process_are_taken(tmp_path: Path) -> None:
    child = start_child(tmp_path, "mute")
    try:
        command = commands.post(tmp_path, "load", "smol")
        assert command is not None
        taken: set[str] = set()
        assert commands.pending(tmp_path, taken) == []  # addressed to the child, not here
        commands.withdraw(tmp_path, command)
    finally:
        stop(child)
