"""Running the real appliance (``python -m appliance serve``) on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.poll import PollTimeout, until


def metric_in(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels in Prometheus text (0 if none).

    For a before/after pair read from :meth:`RunningServer.metrics_text`.
    """
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = all(sample.labels.get(k) == v for k, v in labels.items())
            if sample.name == name and wanted:
                total += sample.value
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """An appliance process started from a config dict; stop it with :meth:`stop`.

    A config with ``server.tls`` is spoken to over HTTPS: ``tls`` is then the client's
    context (the CA that signed the server's certificate, and a client certificate where
    the server asks for one). ``cwd``: the folder it runs in (relative paths in the
    config are relative to it).
    """

    def __init__(
        self,
        config: dict[str, Any] | Path,
        tmp: Path,
        env: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port()
        if isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = tmp / "cluster.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
        https = _serves_tls(self.config_path)
        # Keyword arguments of every httpx call this makes to the server.
        self.client: dict[str, Any] = {"verify": tls} if tls is not None else {}
        self.log_path = tmp / "server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "serve",
                "-c",
                str(self.config_path),
                "--port",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.base_url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        def ready_or_exited() -> bool:
            if self.process.poll() is not None:
                return True  # no use waiting: said below
            return httpx.get(f"{self.base_url}/readyz", timeout=1, **self.client).status_code == 200

        try:
            until(ready_or_exited, timeout=timeout, what="/readyz answering 200")
        except PollTimeout:
            self.stop()
            raise RuntimeError(f"appliance not ready in {timeout}s:\n{self.log()}") from None
        if self.process.poll() is not None:
            raise RuntimeError(f"appliance exited early:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def events(self, name: str, **fields: object) -> list[dict[str, object]]:
        """Its JSON log events called ``name`` with these fields."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                event = orjson.loads(line)
                if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                    found.append(event)
        return found

    def event_count(self, name: str, **fields: object) -> int:
        """How many JSON log events called ``name`` with these fields it has written."""
        return len(self.events(name, **fields))

    def metrics_text(self, admin_key: str | None = None) -> str:
        """The body of ``/metrics`` (which must answer 200)."""
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        response = httpx.get(f"{self.base_url}/metrics", headers=headers, timeout=10, **self.client)
        assert response.status_code == 200, response.text
        return response.text

    def metric(self, name: str, admin_key: str | None = None, **labels: str) -> float:
        """The sum of the samples of ``name`` on ``/metrics`` with these labels."""
        return metric_in(self.metrics_text(admin_key), name, **labels)

    def status(self, admin_key: str | None = None) -> dict[str, Any]:
        """The body of ``/status.json`` (which must answer 200)."""
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        response = httpx.get(
            f"{self.base_url}/status.json", headers=headers, timeout=10, **self.client
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _serves_tls(path: Path) -> bool:
    """Whether the config file has a ``server.tls`` section (False if it does not parse)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    server = data.get("server") if isinstance(data, dict) else None
    return isinstance(server, dict) and bool(server.get("tls"))


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Granian's workers, local model workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def ledger_rows(path: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of ``query`` on the usage ledger at ``path`` (none while it does not exist)."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return conn.execute(query, params).fetchall()


class WatchWitness:
    """A second appliance watching a file of its own in the same folder as another config.

    For a test that must show a watcher did *not* react: change the watched-or-not file,
    then :meth:`see_a_change`. Once this witness has reloaded a change written after the
    other file's, a watcher of the other file (same folder, same debounce) has had its
    chance, and the test may assert that nothing happened.
    """

    def __init__(self, folder: Path, tmp: Path) -> None:
        self.path = folder / "witness.yaml"
        self._version = 0
        self._write()
        tmp.mkdir(parents=True, exist_ok=True)
        self.server = RunningServer(self.path, tmp)

    def _write(self) -> None:
        reply = [f"witness v{self._version}"]
        model = {"name": "witness", "backend": "scripted", "options": {"reply": reply}}
        self.path.write_text(yaml.safe_dump({"models": [model]}))

    def see_a_change(self) -> None:
        """Change the witness's file now; return once its watcher has reloaded it."""
        before = self.server.event_count("config_reloaded", reason="file_changed")
        self._version += 1
        self._write()
        until(
            lambda: self.server.event_count("config_reloaded", reason="file_changed") > before,
            what="the witness reloading its changed file",
        )

    def stop(self) -> None:
        self.server.stop()
