"""The Kubernetes manifests of deploy/kubernetes, read as kustomize would build them.

``build(folder)`` follows the subset of kustomize the repository's kustomizations use
(``resources``, ``patches`` as strategic merges, ``images``, ``namespace``, ``labels``);
:data:`KUSTOMIZE_KEYS` lists it, and a kustomization using anything else is refused, so
the tests never check a rendering that differs from ``kubectl apply -k``'s unnoticed.

``for_podman`` turns the built manifests into what Debian bookworm's podman 4.3 can play
(``podman kube play``): packaging/kube-check.sh plays that and checks it end to end.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
LOCAL_MODELS = BASE / "local-models"
SECRET_EXAMPLE = BASE / "secret.example.yaml"

Doc = dict[str, Any]

KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}
NOT_NAMESPACED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
# Lists a strategic merge patch merges element by element, by this key (Kubernetes'
# patchMergeKey for each).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def load_docs(path: Path) -> list[Doc]:
    """Every YAML document in one file (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomization(folder: Path) -> Doc:
    """The folder's kustomization.yaml; refuses keys :func:`build` does not follow."""
    doc = load_docs(folder / "kustomization.yaml")[0]
    unknown = set(doc) - KUSTOMIZE_KEYS
    if unknown:
        raise ValueError(f"{folder}: kustomize features not followed here: {sorted(unknown)}")
    return doc


def build(folder: Path = BASE) -> list[Doc]:
    """The manifests ``kubectl kustomize folder`` makes (for the features used here)."""
    spec = kustomization(folder)
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        target = (folder / entry).resolve()
        docs += build(target) if target.is_dir() else load_docs(target)
    for patch in spec.get("patches", []):
        for change in load_docs(folder / patch["path"]):
            target = find(docs, change["kind"], change["metadata"]["name"])
            docs[docs.index(target)] = merge(target, change)
    for rule in spec.get("images", []):
        for container in all_containers(docs):
            container["image"] = _image(container["image"], rule)
    for doc in docs:
        if "namespace" in spec and doc["kind"] not in NOT_NAMESPACED:
            doc["metadata"]["namespace"] = spec["namespace"]
        for label in spec.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


def _image(ref: str, rule: Mapping[str, str]) -> str:
    """A kustomize ``images`` rule applied to one image reference."""
    name, _, tag = ref.partition(":")
    if name != rule["name"]:
        return ref
    new, tag = rule.get("newName", name), rule.get("newTag", tag)
    return f"{new}:{tag}" if tag else new


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge of ``patch`` into ``base`` (maps deep, named lists by key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return out
    key = MERGE_KEYS.get(field)
    if key and isinstance(base, list) and isinstance(patch, list):
        out_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = [i for i, old in enumerate(out_list) if old.get(key) == item.get(key)]
            if at:
                out_list[at[0]] = merge(out_list[at[0]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def find(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    """The one manifest of that kind and name."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} manifests of kind {kind} named {name}")
    doc: Doc = found[0]
    return doc


def pod_spec(doc: Doc) -> Doc:
    """The pod template's spec of a workload (or a Pod's own spec)."""
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def all_containers(docs: Iterable[Doc]) -> list[Doc]:
    """Every container (and init container) of every workload."""
    out: list[Doc] = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"):
            spec = pod_spec(doc)
            out += spec.get("initContainers", []) + spec["containers"]
    return out


def cluster_yaml(docs: Iterable[Doc]) -> str:
    """The appliance's cluster.yaml, as the ConfigMap holds it."""
    return str(find(docs, "ConfigMap", "appliance-config")["data"]["cluster.yaml"])


def variables(text: str) -> set[str]:
    """The ``${VAR}`` names (without a default) a config reads from the environment."""
    return {m.group(1) for m in _VAR.finditer(text) if m.group(2) is None}


def secret_values(path: Path = SECRET_EXAMPLE) -> dict[str, str]:
    """The example Secret's keys and values (``stringData`` and decoded ``data``)."""
    secret = load_docs(path)[0]
    out = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return out | dict(secret.get("stringData", {}))


def for_podman(
    docs: list[Doc],
    *,
    secret: Mapping[str, str],
    images: Mapping[str, str],
    ports: list[int],
) -> list[Doc]:
    """What podman 4.3's ``kube play`` can run of ``docs``, on published loopback ports.

    - The appliance Deployment becomes one single-replica Deployment per port
      (``appliance-0``, ``appliance-1``, ...): podman would give every replica the same
      host port. Each publishes its ``http`` port on ``127.0.0.1:<port>``.
    - The Redis StatefulSet becomes a Pod named after its Service (podman's network DNS
      resolves pod names, as the cluster resolves the Service), its volume claim template
      a PersistentVolumeClaim (podman makes a named volume of it).
    - ``secretKeyRef`` values come from ``secret``: podman 4.3 reads Secrets only from
      its own secret store, in a form of its own.
    - ``emptyDir`` volumes get names of their own per pod: podman 4.3 makes a named
      volume of each, which pods with the same volume name would share.
    - Images are replaced by ``images`` (name -> local image), never pulled.
    - Kinds podman does not play (Service, PodDisruptionBudget, HPA, NetworkPolicy,
      Namespace) are left out; namespaces are dropped.
    """
    out: list[Doc] = []
    config = copy.deepcopy(find(docs, "ConfigMap", "appliance-config"))
    config["metadata"].pop("namespace", None)
    out.append(config)
    app = find(docs, "Deployment", "appliance")
    for i, port in enumerate(ports):
        copy_ = copy.deepcopy(app)
        name = f"appliance-{i}"
        copy_["metadata"] = {"name": name, "labels": app["metadata"].get("labels", {})}
        copy_["spec"]["replicas"] = 1
        spec = pod_spec(copy_)
        _for_podman_pod(spec, name, secret, images)
        for container in spec["containers"]:
            for each in container.get("ports", []):
                if each.get("name") == "http":
                    each.update(hostPort=port, hostIP="127.0.0.1")
        out.append(copy_)
    redis = find(docs, "StatefulSet", "appliance-redis")
    pod: Doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": redis["spec"]["serviceName"],
            "labels": redis["spec"]["template"]["metadata"]["labels"],
        },
        "spec": copy.deepcopy(redis["spec"]["template"]["spec"]),
    }
    _for_podman_pod(pod["spec"], pod["metadata"]["name"], secret, images)
    for template in redis["spec"].get("volumeClaimTemplates", []):
        claim = f"{template['metadata']['name']}-{redis['metadata']['name']}-0"
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": copy.deepcopy(template["spec"]),
            }
        )
        pod["spec"].setdefault("volumes", []).append(
            {"name": template["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
        )
    out.append(pod)
    return out


def _for_podman_pod(
    spec: Doc, name: str, secret: Mapping[str, str], images: Mapping[str, str]
) -> None:
    renamed = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{name}-{volume['name']}"
    for container in spec.get("initContainers", []) + spec["containers"]:
        container["image"] = images[container["image"]]
        container["imagePullPolicy"] = "Never"
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                env.pop("valueFrom")
                env["value"] = secret[ref["key"]]
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])


def volume_names(played: Iterable[Doc]) -> list[str]:
    """The named volumes podman makes for ``played`` (to remove them afterwards)."""
    names: set[str] = set()
    for doc in played:
        if doc["kind"] in ("ConfigMap", "PersistentVolumeClaim"):
            names.add(doc["metadata"]["name"])
        elif doc["kind"] in ("Deployment", "Pod"):
            names |= {v["name"] for v in pod_spec(doc).get("volumes", []) if "emptyDir" in v}
    return sorted(names)
