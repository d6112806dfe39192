"""Podman's side of the Kubernetes check: the played manifests and what it reads of them.

:class:`Play` renders deploy/kubernetes (or an overlay) for ``podman kube play``
(:func:`tests.deploy.manifests.for_podman`) with fresh Secret values and free loopback
ports, plays it on a network of its own and removes all of it again; the functions read
pods' logs and memory. tests/deploy/kube_play.py drives the checks.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import openai
import yaml

from tests.deploy import manifests
from tests.support.server import free_port

REPLICAS = 2
NETWORK = "appliance-kube-check"
CONFIG_VOLUME = "appliance-config"  # the ConfigMap's name: podman names its volume so


def podman(*args: str, check: bool = True) -> str:
    """Run podman; its stdout."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


class Play:
    """The played manifests: files in ``work``, pods, volumes and a network in podman."""

    def __init__(
        self,
        work: Path,
        image: str,
        redis_image: str,
        *,
        folder: Path = manifests.BASE,
        replicas: int = REPLICAS,
    ) -> None:
        self.work = work
        self.secret = {k: secrets.token_hex(16) for k in manifests.secret_values()}
        self.ports = [free_port() for _ in range(replicas)]
        built = manifests.build(folder)
        self.memory_request = built_memory(built)
        self.cpu_limit = app_container(built)["resources"].get("limits", {}).get("cpu")
        images = {
            app_container(built)["image"]: image,
            manifests.pod_spec(manifests.find(built, "StatefulSet", "appliance-redis"))[
                "containers"
            ][0]["image"]: redis_image,
        }
        self.docs = manifests.for_podman(built, secret=self.secret, images=images, ports=self.ports)
        self.file = work / "play.yaml"
        self.file.write_text(yaml.safe_dump_all(self.docs, sort_keys=False))
        (work / "volumes").write_text("\n".join(manifests.volume_names(self.docs)) + "\n")
        (work / "network").write_text(NETWORK + "\n")
        self.pods = [f"appliance-{i}-pod-0" for i in range(replicas)]
        self.containers = [f"{pod}-appliance" for pod in self.pods]
        self.clients = [
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1",
                api_key=self.secret["APPLIANCE_API_KEY"],
                max_retries=0,
                timeout=60,
            )
            for port in self.ports
        ]

    def up(self) -> None:
        self.down()  # leftovers of a killed run would be reused (a ConfigMap volume, stale)
        podman("network", "create", NETWORK)
        # The ConfigMap's volume, laid out as the kubelet lays out a ConfigMap volume
        # before podman fills it (podman writes the files through the symlinks): edits
        # then swap ..data as the kubelet does.
        podman("volume", "create", CONFIG_VOLUME)
        config = manifests.find(self.docs, "ConfigMap", CONFIG_VOLUME)
        write_like_the_kubelet(config_folder(), config["data"])
        podman("kube", "play", "--network", NETWORK, str(self.file))

    def down(self) -> None:
        podman("kube", "down", str(self.file), check=False)
        for volume in manifests.volume_names(self.docs):
            podman("volume", "rm", "--force", volume, check=False)
        podman("network", "rm", "--force", NETWORK, check=False)

    def logs(self, i: int) -> str:
        """Pod ``i``'s appliance log (stdout and stderr)."""
        done = subprocess.run(
            ["podman", "logs", self.containers[i]],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout + done.stderr

    def events(self, i: int, event: str) -> list[dict[str, Any]]:
        """Pod ``i``'s JSON log lines of one event."""
        out = []
        for line in self.logs(i).splitlines():
            if f'"{event}"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


def app_container(docs: list[manifests.Doc]) -> manifests.Doc:
    """The appliance Deployment's container."""
    spec = manifests.pod_spec(manifests.find(docs, "Deployment", "appliance"))
    return dict(spec["containers"][0])


def built_memory(docs: list[manifests.Doc]) -> int:
    """The appliance container's memory request, in bytes."""
    return quantity(app_container(docs)["resources"]["requests"]["memory"])


def quantity(text: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1Gi``, ``500M``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def peak_rss(container: str) -> int:
    """Peak RSS (VmHWM) of the container's processes together, in bytes."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", container).strip()
    children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True, check=False)
    pids = [pid, *children.stdout.split()]
    total = 0
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def config_folder() -> Path:
    """Where the ConfigMap's volume lives on this machine."""
    inspect = ("volume", "inspect", "--format", "{{.Mountpoint}}", CONFIG_VOLUME)
    return Path(podman(*inspect).strip())


def write_like_the_kubelet(folder: Path, files: Mapping[str, str]) -> None:
    """Write a ConfigMap's files as the kubelet's atomic writer does: into a new
    ``..<timestamp>`` folder, then a ``..data_tmp`` symlink to it renamed over ``..data``;
    each file is a symlink through ``..data``, made once; the previous folder is removed.
    """
    previous = [p for p in folder.glob("..2*") if p.is_dir() and not p.is_symlink()]
    fresh = folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{secrets.token_hex(4)}"
    fresh.mkdir(mode=0o755)
    for name, text in files.items():
        (fresh / name).write_text(text)
        (fresh / name).chmod(0o644)
    (folder / "..data_tmp").symlink_to(fresh.name)
    (folder / "..data_tmp").rename(folder / "..data")
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")
    for old in previous:
        shutil.rmtree(old)
