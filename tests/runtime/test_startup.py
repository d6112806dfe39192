"""``appliance serve`` refuses an address someone serves; ``reload`` signals only a server.

Granian listens with SO_REUSEPORT, so without its own check a second server on a served
port starts and takes a share of the connections. PID files outlive a killed server, and
the PID they name may be given to another program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from appliance.runtime.server import default_pid_file
from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer, descendants, free_port


def write_config(folder: Path, reply: str, **sections: object) -> Path:
    path = folder / f"{reply}.yaml"
    path.write_text(yaml.safe_dump(cluster_config(scripted("a", [reply]), **sections)))
    return path


def appliance(*args: object) -> subprocess.CompletedProcess[str]:
    """``appliance ARGS`` run to its end (a server that starts is killed at the timeout)."""
    argv = [sys.executable, "-m", "appliance", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def start_serve(config: Path, port: int, *args: object) -> subprocess.Popen[bytes]:
    """``appliance serve`` in the background, once it answers ``/readyz``."""
    argv = [sys.executable, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)]
    process = subprocess.Popen([*argv, *map(str, args)], stdout=subprocess.DEVNULL)
    until(lambda: ready(port) or process.poll() is not None, what="the server ready or gone")
    assert process.poll() is None, "the server started"
    return process


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def reply(port: int) -> str:
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "a", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    content: str = answer.json()["choices"][0]["message"]["content"]
    return content


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(30)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process (what a reused PID may belong to)."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def test_a_second_server_on_a_served_address_is_refused_in_one_line(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    keys = {"api_keys": [{"name": "ops", "key": "sk-" + "x" * 24}]}
    first = start_server(cluster_config(scripted("a", ["one"]), auth=keys))
    # Another config, no keys, its own PID file: nothing it shares with the first but
    # the address.
    other = write_config(tmp_path, "impostor")
    done = appliance("serve", "-c", other, "--port", first.port, "--pid-file", tmp_path / "x")
    assert done.returncode == 1
    assert (done.stdout + done.stderr).splitlines() == [
        f"appliance: 127.0.0.1:{first.port} is already in use by the appliance server "
        f"with PID {first.process.pid}"
    ]
    headers = {"Authorization": "Bearer " + "sk-" + "x" * 24}
    for _ in range(10):  # every request the first's (the kernel would spread them)
        refused = httpx.get(f"{first.base_url}/v1/models", timeout=10)
        assert refused.status_code == 401
    assert httpx.get(f"{first.base_url}/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize("reuse_port", [True, False], ids=["so_reuseport", "plain"])
def test_a_port_another_program_listens_on_is_refused_in_one_line(
    tmp_path: Path, reuse_port: bool
) -> None:
    port = free_port()
    with socket.socket() as listening:
        if reuse_port:  # as Granian listens: without a check of its own, the port is shared
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind(("127.0.0.1", port))
        listening.listen()
        done = appliance("serve", "-c", write_config(tmp_path, "one"), "--port", port)
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1, lines  # no traceback
    words = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    command = " ".join(w.decode() for w in words if w)  # short: no space after the last
    by = f"appliance: 127.0.0.1:{port} is already in use by PID {os.getpid()}: "
    assert lines[0].startswith(by + command[:60]), "the listener: its PID and command line"


def test_a_restart_right_after_a_stop_is_not_blocked_by_its_closed_connections(
    tmp_path: Path,
) -> None:
    config, port = write_config(tmp_path, "one"), free_port()
    first = start_serve(config, port)
    with httpx.Client(timeout=10) as client:  # a kept-alive connection the server closes
        assert client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    assert lingering(port), "the stopped server's connection still holds the port"
    again = start_serve(config, port)
    try:
        assert reply(port) == "one"
    finally:
        stop(again)


def lingering(port: int) -> bool:
    """A closed connection on local ``port`` waiting out TIME_WAIT or FIN_WAIT2."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(
        int(f[1].rsplit(":", 1)[1], 16) == port and f[3] in ("05", "06")
        for f in (row.split() for row in rows)
    )


def test_processes_2_share_the_port_and_a_second_server_is_still_refused(
    tmp_path: Path,
) -> None:
    config, port = write_config(tmp_path, "one", server={"processes": 2}), free_port()
    first = start_serve(config, port)
    try:
        assert {reply(port) for _ in range(4)} == {"one"}
        workers = [pid for pid in descendants(first.pid) if pid != first.pid]
        assert len(workers) == 2
        pid_file = str(default_pid_file(port))
        for pid in workers:  # forked: the lock ends with the main process, not with them
            assert pid_file not in open_files(pid)
        assert pid_file in open_files(first.pid)
        done = appliance("serve", "-c", write_config(tmp_path, "two"), "--port", port)
        assert done.returncode == 1
        assert f"127.0.0.1:{port} is already in use" in done.stderr
        assert reply(port) == "one"
    finally:
        stop(first)


def open_files(pid: int) -> list[str]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile (a connection)
            found.append(os.readlink(fd))
    return found


def test_reload_refuses_a_pid_file_whose_server_was_killed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    config, port, pid_file = write_config(tmp_path, "one"), free_port(), tmp_path / "a.pid"
    killed = start_serve(config, port, "--pid-file", pid_file)
    killed.kill()
    killed.wait()
    assert pid_file.read_text() == str(killed.pid), "kill -9 leaves the file behind"
    pid_file.write_text(str(sleeper.pid))  # the system gave that PID to another program

    done = appliance("reload", "-c", config, "--pid-file", pid_file)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"appliance: cannot signal the server: {pid_file} names PID {sleeper.pid}, but no "
        "running server holds it (its server is gone, and that PID may now be another "
        "program's): nothing signalled"
    ]
    assert sleeper.poll() is None, "the unrelated process was not signalled"

    # The files the killed server left (its PID file, its address's lock) are taken over.
    again = start_serve(config, port, "--pid-file", pid_file)
    try:
        assert pid_file.read_text() == str(again.pid)
        done = appliance("reload", "-c", config, "--pid-file", pid_file)
        assert done.returncode == 0, done.stderr
        assert f"reload signalled to PID {again.pid}" in done.stdout
        assert again.poll() is None
    finally:
        stop(again)


def test_a_second_server_given_a_pid_file_a_running_server_holds_is_refused(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    first = start_server(cluster_config(scripted("a", ["one"])))
    held = default_pid_file(first.port)
    done = appliance("serve", "-c", first.config_path, "--port", free_port(), "--pid-file", held)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"appliance: {held} is held by a running server (PID {first.process.pid})"
    ]
    assert held.read_text() == str(first.process.pid)
    assert httpx.get(f"{first.base_url}/readyz", timeout=10).status_code == 200


def test_serve_takes_over_a_pid_file_naming_a_live_unrelated_process(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    config, port, pid_file = write_config(tmp_path, "one"), free_port(), tmp_path / "a.pid"
    pid_file.write_text(str(sleeper.pid))  # left by a server that is gone; PID reused
    server = start_serve(config, port, "--pid-file", pid_file)
    try:
        assert pid_file.read_text() == str(server.pid)
    finally:
        stop(server)
    assert not pid_file.exists()
    assert sleeper.poll() is None


def test_a_host_name_instead_of_an_address_is_one_line(tmp_path: Path) -> None:
    config, port = write_config(tmp_path, "one"), free_port()
    done = appliance("serve", "-c", config, "--host", "localhost", "--port", port)
    assert done.returncode == 1
    assert (done.stdout + done.stderr).splitlines() == [
        f"appliance: cannot listen on localhost:{port}: the host must be an IP address such "
        "as 127.0.0.1, 0.0.0.0 or ::, not a name"
    ]
