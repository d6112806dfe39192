"""What every model declaration has, whatever its backend: name, type, limits, health and prices."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

ModelType = Literal["llm", "embedding", "rerank"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"


class LocatedValueError(ValueError):
    """A validation failure that knows where in the YAML it belongs.

    Raised by cross-field checks on a parent model, so that the loader can point at the
    child that is wrong rather than at the parent.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthConfig(Strict):
    """Active probes (never a model call) and passive ejection of failing workers."""

    interval_s: float = Field(
        5.0, ge=0, description="Seconds between probes of each worker; 0 turns probes off."
    )
    timeout_s: float = Field(
        2.0, gt=0, description="A probe slower than this counts as one failure (see failures)."
    )
    failures: int = Field(
        3,
        ge=1,
        le=1000,
        description="Consecutive failed requests or timed-out probes that eject a worker "
        "(a probe refused or answered with an error ejects it at once).",
    )
    cooldown_s: float = Field(
        2.0, gt=0, description="First ejection's length without probes; doubles each time."
    )
    max_cooldown_s: float = Field(60.0, gt=0, description="Longest cool-down.")


class PricingConfig(Strict):
    """What a model's tokens cost, per million, in the currency of ``billing.currency``."""

    input_per_mtok: float = Field(
        0.0, ge=0, description="Price of a million input tokens (prompt, inputs, documents)."
    )
    output_per_mtok: float = Field(0.0, ge=0, description="Price of a million generated tokens.")


class ModelBase(Strict):
    """Fields every model declaration has, whatever its backend."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Public model id that clients put in `model`.",
    )
    type: ModelType = Field("llm", description="What the model serves: llm, embedding or rerank.")
    workers: int = Field(1, ge=1, le=256, description="Worker instances of this model.")
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Requests one worker handles at once; more wait in the queue. Absent or "
        "null: no cap, as an upstream server batches requests on its own (openai) and the "
        "scripted backend needs none. Local models default to 1.",
    )
    queue_size: int = Field(
        64,
        ge=0,
        le=100_000,
        description="Requests that may wait for a free worker; beyond that -> 429.",
    )
    queue_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for a free worker before a 503."
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Extra attempts on other workers or route targets, before any byte is sent.",
    )
    timeout_s: float = Field(
        600.0, gt=0, description="Deadline for a request, all attempts included, until its reply."
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health checking.")
    routing: Literal["least_busy", "affinity"] = Field(
        "least_busy",
        description="affinity: requests of one session (`x-session-id` header or `user`) "
        "go to the same healthy worker (KV-cache reuse); others least busy.",
    )
    required: bool | None = Field(
        None,
        description="Whether /readyz answers 200 only while this model has an available "
        "worker (up and not ejected). Absent: local models (llama_cpp, onnx) are required, "
        "openai and scripted models are not, so one upstream's outage does not take the "
        "replica out of a load balancer. With no required model, /readyz answers 200 once "
        "the server has started.",
    )

    pricing: PricingConfig | None = Field(
        None,
        description="Price per million input and output tokens, for the usage ledger and "
        "budgets. Absent: free (still counted). A change applies on reload.",
    )

    required_by_default: ClassVar[bool] = False

    @property
    def needed_for_readiness(self) -> bool:
        """``required``, or the backend's default when it is not given."""
        return self.required_by_default if self.required is None else self.required
