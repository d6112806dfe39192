"""Running the real appliance (``python -m appliance serve``) on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """An appliance process started from a config dict; stop it with :meth:`stop`."""

    def __init__(self, config: dict | Path, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        if isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = tmp / "cluster.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
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
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"appliance exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"appliance not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
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

    def metric(self, name: str, admin_key: str | None = None, **labels: str) -> float:
        """The sum of the samples of ``name`` on ``/metrics`` with these labels."""
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        text = httpx.get(f"{self.base_url}/metrics", headers=headers, timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    total += sample.value
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
