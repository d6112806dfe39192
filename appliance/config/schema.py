"""The schema of cluster.yaml: one pydantic model per section.

Read it beside ``configs/cluster.yaml``. Unknown keys are errors; every field says what
it is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from appliance.config.auth import AuthConfig
from appliance.config.backends import ModelConfig, OpenAIModel
from appliance.config.capture import CaptureConfig, capture_problems
from appliance.config.credentials import url_secrets
from appliance.config.model import NAME_PATTERN, LocatedValueError, Strict
from appliance.config.telemetry import TelemetryConfig
from appliance.config.tls import TlsConfig


class LocatedProblems(ValueError):
    """Several :class:`LocatedValueError` found by one check, all reported together."""

    def __init__(self, problems: list[LocatedValueError]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def reference_problems(
    models: Sequence[tuple[str, str] | None],
    routes: Sequence[tuple[str, Sequence[str]] | None],
    key_models: Sequence[Sequence[str] | None],
) -> list[LocatedValueError]:
    """Every name that does not resolve: duplicate models, routes and keys naming unknowns.

    Takes plain values, so that the loader can run it on a file whose other parts are
    invalid (and report everything in one run).

    Args:
        models: ``(name, type)`` of each ``models`` entry; None where it has no usable name.
        routes: ``(alias, targets)`` of each ``routes`` entry; None where unusable.
        key_models: Each key's ``models`` (None: all models).
    """
    problems: list[LocatedValueError] = []
    names: dict[str, str] = {}
    for i, model in enumerate(models):
        if model is None:
            continue
        name, type_ = model
        if name in names:
            problems.append(
                LocatedValueError(f"two models are named {name!r}", ("models", i, "name"))
            )
        names.setdefault(name, type_)
    aliases: set[str] = set()
    for i, route in enumerate(routes):
        if route is None:
            continue
        alias, targets = route
        if alias in names or alias in aliases:
            problems.append(
                LocatedValueError(
                    f"alias {alias!r} is already a model or alias name", ("routes", i, "alias")
                )
            )
        aliases.add(alias)
        missing = [t for t in targets if t not in names]
        if missing:
            problems.append(
                LocatedValueError(
                    f"unknown models {missing}; models are {sorted(names)}",
                    ("routes", i, "targets"),
                )
            )
        types = {names[t] for t in targets if t in names}
        if len(types) > 1:
            problems.append(
                LocatedValueError(
                    f"targets mix model types {sorted(types)}", ("routes", i, "targets")
                )
            )
    public = set(names) | aliases
    for i, allowed in enumerate(key_models):
        unknown = [m for m in allowed or [] if m not in public]
        if unknown:
            problems.append(
                LocatedValueError(
                    f"unknown models {unknown}; known are {sorted(public)}",
                    ("auth", "api_keys", i, "models"),
                )
            )
    return problems


class ServerConfig(Strict):
    """Where and how the HTTP server listens."""

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to bind.")
    tls: TlsConfig | None = Field(
        None,
        description="HTTPS served directly (see TLS in the README). Its files are read at "
        "start: a change here, or a file replaced on disk, needs a restart.",
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Serving processes. 1: the appliance's own process serves (Granian "
        "embedded, no second interpreter); more: a supervising process and that many "
        "Granian worker processes, each with its own workers.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted; larger -> 413."
    )
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="On reload or shutdown, how long requests in flight may take to finish.",
    )
    watch_config: bool = Field(
        True, description="Reload when the config file changes (SIGHUP always reloads)."
    )
    admin_key: SecretStr | None = Field(
        None,
        description="If set, /metrics and /status.json need `Authorization: Bearer <admin_key>`.",
    )
    stream_ping_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="While a stream waits for its next chunk, send an SSE comment this often.",
    )
    send_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description=(
            "Longest a write to a client may wait. A client that stops reading its stream"
            " counts as gone after it: the stream is closed (its slot freed) and charged"
            " what was sent."
        ),
    )
    header_timeout_s: float = Field(
        30.0,
        gt=0,
        le=300,
        description=(
            "Longest wait for a request's headers. A connection that sends nothing, trickles"
            " its headers, or stays idle between kept-alive requests is closed after it."
            " Needs a restart."
        ),
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "Longest a request body may take to arrive, from the first read to the last byte;"
            " then 408 `request_timeout` and the connection closes."
        ),
    )


class LoggingConfig(Strict):
    """Structured logging."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Threshold.")
    format: Literal["json", "console"] = Field(
        "json", description="json for machines, console for humans."
    )
    access_log: bool = Field(True, description="One line per request.")


class RouteConfig(Strict):
    """An alias served by an ordered list of models: the first that can answer does."""

    alias: str = Field(pattern=NAME_PATTERN, description="Public id clients may use.")
    targets: list[str] = Field(min_length=1, description="Model names, in fallback order.")
    spill_after_s: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="Spill on expected wait: a target (not the last) whose expected wait "
        "for a slot (its queue and recent service times, or a local model's load) is "
        "longer than this is passed over at once for the next one; 0: whenever it would "
        "queue. Absent: targets are tried in order, moving on only on errors.",
    )

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: list[str]) -> list[str]:
        if len(set(targets)) != len(targets):
            raise ValueError("targets must not repeat a model")
        return targets

    @model_validator(mode="after")
    def _somewhere_to_spill(self) -> RouteConfig:
        if self.spill_after_s is not None and len(self.targets) < 2:
            raise LocatedValueError(
                "spill_after_s needs a second target to spill to", ("spill_after_s",)
            )
        return self


class StateConfig(Strict):
    """Shared state for several replicas. Absent: everything stays in this process."""

    redis_url: SecretStr | None = Field(
        None, description="Redis holding per-key rpm/tpm windows, e.g. redis://host:6379/0."
    )
    on_error: Literal["open", "closed"] = Field(
        "open", description="Redis unreachable: admit (open, logged) or refuse with 503."
    )
    timeout_s: float = Field(0.25, gt=0, le=10, description="Redis connect and reply timeout.")
    redis_cluster: bool = Field(
        False, description="redis_url names a node of a Redis Cluster (the others are found)."
    )
    usage_path: Path | None = Field(
        None,
        description="SQLite file of the usage ledger (one row per model request), e.g. "
        "/var/lib/appliance/usage.sqlite. Absent: no ledger; budgets count in memory only.",
    )


class BillingConfig(Strict):
    """How costs are named."""

    currency: str = Field(
        "USD", min_length=1, max_length=8, description="Currency of prices and budgets."
    )


class LocalConfig(Strict):
    """Local models (llama_cpp, onnx) as a whole."""

    memory_budget_mb: int | None = Field(
        None,
        ge=1,
        description="Memory the worker processes of local models may use together, in MB, "
        "shared out evenly among Granian processes. Before a model loads, the least "
        "recently used idle models are unloaded to make room. A model's need is estimated "
        "from its files (and n_ctx) until its workers' real RSS has been measured. A model "
        "that cannot fit alone, or startup models that cannot fit together, are errors. "
        "Absent: no budget.",
    )


class ApplianceConfig(Strict):
    """The whole of cluster.yaml."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    models: list[ModelConfig] = Field(min_length=1, description="The models served.")
    routes: list[RouteConfig] = Field(default_factory=list, description="Aliases.")
    state: StateConfig = Field(default_factory=StateConfig, description="Shared state.")
    local: LocalConfig = Field(default_factory=LocalConfig, description="Local models.")
    billing: BillingConfig = Field(default_factory=BillingConfig, description="Costs.")
    capture: CaptureConfig = Field(default_factory=CaptureConfig, description="Request log.")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="Traces.")

    @model_validator(mode="after")
    def _names_resolve(self) -> ApplianceConfig:
        problems = reference_problems(
            [(m.name, m.type) for m in self.models],
            [(r.alias, r.targets) for r in self.routes],
            [k.models for k in self.auth.api_keys],
        )
        public = {m.name for m in self.models} | {r.alias for r in self.routes}
        keys = [k.name for k in self.auth.api_keys]
        problems += capture_problems(self.capture, public, keys, self.state.usage_path)
        if problems:
            raise LocatedProblems(problems)
        return self

    def secrets(self) -> list[str]:
        """Every secret value in the config, for log redaction."""
        out = [k.key.get_secret_value() for k in self.auth.api_keys if k.key is not None]
        if self.server.admin_key is not None:
            out.append(self.server.admin_key.get_secret_value())
        if self.state.redis_url is not None:
            redis_url = self.state.redis_url.get_secret_value()  # may hold a password
            out += [redis_url, *url_secrets(redis_url)]
        for model in self.models:
            if isinstance(model, OpenAIModel):
                out.extend(model.options.secrets())
        out.extend(self.telemetry.secrets())
        return [s for s in out if s]
