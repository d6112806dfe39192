"""What a reload will do: the next cluster beside the current one, and what it cannot change."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.config import ApplianceConfig
from appliance.config.schema import StateConfig
from appliance.config.tls import file_digests
from appliance.local.threads import thread_share
from appliance.serving.cluster import Cluster
from appliance.serving.registry import ModelGroup, Registry


@dataclass
class ReloadOutcome:
    """What one reload did."""

    ok: bool
    reason: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Plan:
    cluster: Cluster
    fresh: list[ModelGroup]
    retired: list[ModelGroup]
    carried: list[str]
    before: set[str]

    def outcome(self, reason: str) -> ReloadOutcome:
        fresh = [g.name for g in self.fresh]
        return ReloadOutcome(
            ok=True,
            reason=reason,
            added=[n for n in fresh if n not in self.before],
            changed=[n for n in fresh if n in self.before],
            removed=[g.name for g in self.retired if g.name not in self.cluster.registry.groups],
            carried=self.carried,
        )


def plan_next(current: Cluster, config: ApplianceConfig) -> Plan:
    """The next cluster: unchanged models carried over, the rest built anew.

    New local workers get their share of the cores as the new config counts them;
    carried-over ones keep theirs, and their lifecycle (loaded or not, last used, memory
    measured): the memory budget (one :class:`Residency` per process) passes on too.
    """
    old = current.registry.groups
    threads = thread_share(config)
    groups: list[ModelGroup] = []
    fresh: list[ModelGroup] = []
    carried: list[str] = []
    residency = current.residency
    for model in config.models:
        previous = old.get(model.name)
        if previous is not None and previous.config == model:
            groups.append(previous)
            carried.append(model.name)
        else:
            group = ModelGroup.from_config(model, threads=threads, residency=residency)
            groups.append(group)
            fresh.append(group)
    kept = {id(g) for g in groups}
    retired = [g for g in old.values() if id(g) not in kept]
    registry = Registry.of(config, groups, current.registry.created)
    return Plan(Cluster(config, registry, residency), fresh, retired, carried, set(old))


def read_at_start(started: ApplianceConfig, config: ApplianceConfig) -> list[str]:
    """Settings read once at start whose new values differ from those the process has.

    ``server.drain_timeout_s`` applies to reload drains and shutdown at once, but the
    shutdown kill deadline the server got at start cannot grow without a restart.
    ``server.tls`` is read by Granian at start; a TLS file replaced on disk since is told
    by :func:`tls_files_replaced`.
    """
    moved = [
        f"server.{name}"
        for name in ("host", "port", "processes", "header_timeout_s", "tls")
        if getattr(config.server, name) != getattr(started.server, name)
    ]
    if config.server.drain_timeout_s > started.server.drain_timeout_s:
        moved.append("server.drain_timeout_s")
    if config.auth.window_s != started.auth.window_s:
        moved.append("auth.window_s")
    moved += [
        f"state.{name}"
        for name in StateConfig.model_fields
        if getattr(config.state, name) != getattr(started.state, name)
    ]
    # The request log's writer is made at start: its folder, retention and whether there
    # is one at all; what it keeps (models, keys, redaction) follows a reload.
    moved += [
        f"capture.{name}"
        for name in ("path", "retention_days", "queue")
        if getattr(config.capture, name) != getattr(started.capture, name)
    ]
    if config.capture.enabled and not started.capture.enabled:
        moved.append("capture.enabled")
    if config.telemetry != started.telemetry:
        moved.append("telemetry")  # the tracer is built once per process
    return moved


def tls_files_replaced(
    started: ApplianceConfig, config: ApplianceConfig, at_start: dict[str, bytes | None]
) -> list[str]:
    """The ``server.tls`` files (``server.tls.cert_file``...) whose content differs from what
    they held at start (``at_start``, :func:`appliance.config.tls.file_digests`), while the
    TLS settings themselves are unchanged: Granian serves the old ones until a restart."""
    if config.server.tls is None or config.server.tls != started.server.tls:
        return []
    now = file_digests(config.server.tls)
    return [f"server.tls.{name}" for name, digest in now.items() if at_start.get(name) != digest]


def startup_budget(groups: list[ModelGroup]) -> float:
    """How long fresh workers may take to load (local models say; others are instant)."""
    return max((getattr(g.config, "startup_timeout_s", 10.0) for g in groups), default=10.0)
