"""deploy/kubernetes: every manifest is valid Kubernetes 1.30, and what must agree agrees.

Validation is kubernetes-validate's, against Kubernetes' own OpenAPI schemas, strict
(unknown fields are errors), offline. The cross-checks read the values from the manifests
and from the appliance itself, so neither side can drift alone: the grace period against the
ConfigMap's drain time and the server's own shutdown grace, probe paths against the app's
routes, the ConfigMap's cluster.yaml against the appliance's config validation, every
``${VAR}`` against the container's environment and the Secret's keys. packaging/kube-check.sh
plays the same manifests under podman and checks them end to end.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon.inspect
import kubernetes_validate
import pytest

from appliance.config import ApplianceConfig
from appliance.config.loader import parse_config
from appliance.http.app import create_app
from appliance.local import CONFIG_CHECKS
from appliance.runtime.server import kill_timeout_s
from tests.deploy import manifests
from tests.deploy.manifests import BASE, LOCAL_MODELS, Doc

VERSION = "1.30"
FOLDERS = [BASE, LOCAL_MODELS]
IDS = ["base", "local-models"]


def validate(doc: Doc) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def resource_files(folder: Path) -> list[Path]:
    spec = manifests.kustomization(folder)
    return [folder / r for r in spec.get("resources", []) if (folder / r).is_file()]


def patch_files(folder: Path) -> list[Path]:
    return [folder / p["path"] for p in manifests.kustomization(folder).get("patches", [])]


def app_container(docs: list[Doc]) -> Doc:
    spec = manifests.pod_spec(manifests.find(docs, "Deployment", "appliance"))
    containers = spec["containers"]
    assert [c["name"] for c in containers] == ["appliance"]
    return dict(containers[0])


def config_of(docs: list[Doc]) -> ApplianceConfig:
    """The ConfigMap's cluster.yaml, validated as the appliance validates it at start (the
    model files' checks included), with every variable set as the container sets it."""
    environ = {name: "1" for name in env_names(app_container(docs))}
    return parse_config(
        manifests.cluster_yaml(docs), source="configmap", environ=environ, checks=CONFIG_CHECKS
    )


def env_names(container: Doc) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


# --- Kubernetes' own schemas ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [p for f in FOLDERS for p in resource_files(f)] + [manifests.SECRET_EXAMPLE],
    ids=lambda p: str(p.relative_to(BASE)),
)
def test_every_manifest_file_is_valid_kubernetes_1_30(path: Path) -> None:
    docs = manifests.load_docs(path)
    assert docs, f"{path} holds no manifest"
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_what_kustomize_builds_is_valid_kubernetes_1_30(folder: Path) -> None:
    """Patches are partial manifests: they are validated as applied."""
    for doc in manifests.build(folder):
        validate(doc)


def test_every_file_in_the_folder_is_a_resource_a_patch_or_the_example_secret() -> None:
    """So that no manifest sits beside the others unvalidated (or unapplied)."""
    known = {manifests.SECRET_EXAMPLE}
    for folder in FOLDERS:
        known |= {folder / "kustomization.yaml", *resource_files(folder), *patch_files(folder)}
    found = set(BASE.rglob("*.yaml")) | set(BASE.rglob("*.yml"))
    assert found == known, f"not accounted for: {sorted(map(str, found - known))}"


def test_validation_is_strict_a_misspelt_field_fails() -> None:
    """The control: the validator does reject what a cluster would."""
    deployment = copy.deepcopy(manifests.find(manifests.build(), "Deployment", "appliance"))
    manifests.pod_spec(deployment)["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_a_kustomize_feature_the_tests_do_not_follow_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(ValueError, match="configMapGenerator"):
        manifests.build(tmp_path)


# --- What must agree with the appliance -----------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_the_configmap_is_a_valid_appliance_config_served_on_the_container_port(
    folder: Path,
) -> None:
    docs = manifests.build(folder)
    config = config_of(docs)
    ports = {p["name"]: p["containerPort"] for p in app_container(docs)["ports"]}
    assert config.server.host == "0.0.0.0"
    assert config.server.port == ports["http"]
    volume = next(
        v
        for v in manifests.pod_spec(manifests.find(docs, "Deployment", "appliance"))["volumes"]
        if v.get("configMap", {}).get("name") == "appliance-config"
    )
    mount = next(m for m in app_container(docs)["volumeMounts"] if m["name"] == volume["name"])
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    assert app_container(docs)["args"] == [
        "serve",
        "--config",
        f"{mount['mountPath']}/cluster.yaml",
    ]


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_termination_grace_is_prestop_plus_drain_plus_the_servers_shutdown_grace(
    folder: Path,
) -> None:
    """After preStop, SIGTERM: requests in flight get drain_timeout_s, the shutdown its
    grace (the server's own watchdog ends it then). A shorter grace period would SIGKILL
    streams the appliance means to finish; a longer one is never used."""
    docs = manifests.build(folder)
    config = config_of(docs)
    command = app_container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep", command
    pre_stop = int(command[1])
    grace = manifests.pod_spec(manifests.find(docs, "Deployment", "appliance"))[
        "terminationGracePeriodSeconds"
    ]
    assert grace == pre_stop + kill_timeout_s(config), (
        f"terminationGracePeriodSeconds {grace} != preStop {pre_stop} s + drain "
        f"{math.ceil(config.server.drain_timeout_s)} s + shutdown grace"
    )


def routes() -> dict[str, str]:
    """GET path -> the resource class serving it."""
    app = create_app(
        ApplianceConfig.model_validate({"models": [{"name": "m", "backend": "scripted"}]})
    )
    return {
        r.path: r.class_name
        for r in falcon.inspect.inspect_routes(app.app)  # type: ignore[arg-type]
        if any(m.method == "GET" and not m.internal for m in r.methods)
    }


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_probes_ask_the_routes_meant_for_them(folder: Path) -> None:
    container = app_container(manifests.build(folder))
    served = routes()
    ready = container["readinessProbe"]["httpGet"]
    live = container["livenessProbe"]["httpGet"]
    assert (ready["path"], served.get(ready["path"])) == ("/readyz", "ReadyResource")
    assert (live["path"], served.get(live["path"])) == ("/healthz", "HealthResource")
    port_names = {p["name"] for p in container["ports"]}
    assert {ready["port"], live["port"]} <= port_names


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_every_variable_of_the_config_is_set_and_every_secret_key_exists(folder: Path) -> None:
    docs = manifests.build(folder)
    used = manifests.variables(manifests.cluster_yaml(docs))
    container = app_container(docs)
    assert used <= env_names(container), f"unset: {sorted(used - env_names(container))}"
    secret = manifests.secret_values()
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for c in manifests.all_containers(docs)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert {r["name"] for r in refs} == {"appliance"}
    assert {r["key"] for r in refs} <= set(secret), "a key the example Secret lacks"
    assert set(secret) <= {r["key"] for r in refs}, "a Secret key nothing reads"
    # Secret values come from the Secret, never written into the config or the manifests
    assert not [e for e in container.get("env", []) if "value" in e and e["name"] in secret]


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_redis_url_names_the_redis_service_and_redis_persists(folder: Path) -> None:
    docs = manifests.build(folder)
    config = config_of(docs)
    assert config.state.redis_url is not None
    url = urlsplit(config.state.redis_url.get_secret_value())
    service = manifests.find(docs, "Service", str(url.hostname))
    statefulset = manifests.find(docs, "StatefulSet", "appliance-redis")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]
    redis = manifests.pod_spec(statefulset)["containers"][0]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    data_dir = re.search(r"--dir (\S+)", command)
    assert data_dir is not None
    assert {m["name"] for m in redis["volumeMounts"] if m["mountPath"] == data_dir[1]} <= claims


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_service_pdb_hpa_and_policy_select_the_right_pods(folder: Path) -> None:
    docs = manifests.build(folder)
    deployment = manifests.find(docs, "Deployment", "appliance")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(manifests.find(docs, "Service", "appliance")["spec"]["selector"], labels)
    pdb = manifests.find(docs, "PodDisruptionBudget", "appliance")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["replicas"] >= 2
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "no eviction possible"
    hpa = manifests.find(docs, "HorizontalPodAutoscaler", "appliance")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "appliance",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    policy = manifests.find(docs, "NetworkPolicy", "appliance-redis")
    assert matches(policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"], labels)


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_pods_run_as_the_images_user_with_a_read_only_root_and_tmp_writable(
    folder: Path,
) -> None:
    docs = manifests.build(folder)
    uid = re.search(r"^ARG APP_UID=(\d+)$", (manifests.ROOT / "Containerfile").read_text(), re.M)
    assert uid is not None
    spec = manifests.pod_spec(manifests.find(docs, "Deployment", "appliance"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(uid[1])
    for container in manifests.all_containers(docs):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in app_container(docs)["volumeMounts"]}
    assert mounts.get("/tmp") in empty, "the pid file (and local models' files) need /tmp"


def test_local_models_use_the_cpu_limit_as_threads_one_process_each() -> None:
    docs = manifests.build(LOCAL_MODELS)
    config = config_of(docs)
    container = app_container(docs)
    local = [m for m in config.models if m.backend in ("llama_cpp", "onnx")]
    assert local
    assert config.server.processes == 1
    for model in local:
        assert model.workers == 1
        assert model.options.n_threads is not None
    text = manifests.cluster_yaml(docs)
    assert re.search(r"n_threads: \$\{(\w+)\}", text)
    variable = re.findall(r"n_threads: \$\{(\w+)\}", text)
    source = {e["name"]: e.get("valueFrom", {}) for e in container["env"]}
    for name in variable:
        assert source[name]["resourceFieldRef"]["resource"] == "limits.cpu"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits == requests, "Guaranteed QoS: the model's memory and threads are reserved"
    assert config.local.memory_budget_mb is not None
    memory_mb = int(limits["memory"].removesuffix("Mi"))
    assert config.local.memory_budget_mb < memory_mb


def test_the_podman_rendering_is_valid_and_keeps_what_it_does_not_have_to_change() -> None:
    docs = manifests.build()
    secret = {k: f"value-of-{k}" for k in manifests.secret_values()}
    images = {c["image"]: "localhost/x:check" for c in manifests.all_containers(docs)}
    played = manifests.for_podman(docs, secret=secret, images=images, ports=[18001, 18002])
    for doc in played:
        validate(doc)
    kinds = sorted(d["kind"] for d in played)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "PersistentVolumeClaim", "Pod"]
    original = app_container(docs)
    for doc, port in zip(
        [d for d in played if d["kind"] == "Deployment"], [18001, 18002], strict=True
    ):
        spec = manifests.pod_spec(doc)
        container = spec["containers"][0]
        assert container["ports"][0]["hostPort"] == port
        assert {e["name"]: e["value"] for e in container["env"]} == {
            name: f"value-of-{name}" for name in env_names(original)
        }
        for key in ("args", "readinessProbe", "livenessProbe", "lifecycle", "resources"):
            assert container[key] == original[key]
        assert (
            spec["terminationGracePeriodSeconds"]
            == manifests.pod_spec(manifests.find(docs, "Deployment", "appliance"))[
                "terminationGracePeriodSeconds"
            ]
        )
    assert (
        manifests.find(played, "ConfigMap", "appliance-config")["data"]
        == manifests.find(docs, "ConfigMap", "appliance-config")["data"]
    )
