"""Settings: defaults, the seeds' aliases, secret rules, URL normalization."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modules.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "JWT_SECRET",
        "JWT_CONSTANT",
        "LLM_MODEL_PATH",
        "LLM_NAME",
        "PORT",
        "DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_embedded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'llm_service.db'}"
    assert settings.uses_embedded_database
    assert settings.resolve_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_seed_aliases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setenv("JWT_CONSTANT", "s" * 32)
    monkeypatch.setenv("LLM_NAME", str(model))
    monkeypatch.setenv("PORT", "9001")
    settings = Settings()
    assert settings.jwt_secret == "s" * 32
    assert settings.resolve_model_path() == model
    assert settings.port == 9001


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(jwt_secret="too-short")


def test_flash_attention_is_auto_on_or_off() -> None:
    assert Settings().llm_flash_attention == "auto"
    assert Settings(llm_flash_attention="off").llm_flash_attention == "off"
    with pytest.raises(ValidationError, match="llm_flash_attention"):
        Settings(llm_flash_attention="sideways")


def test_production_needs_a_secret() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET is required"):
        Settings(environment="production")


def test_dev_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).resolve_jwt_secret()
    second = Settings(data_dir=tmp_path).resolve_jwt_secret()
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert Settings(database_url=given).effective_database_url == expected


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a file"):
        Settings(llm_model_path=str(tmp_path / "missing.gguf")).resolve_model_path()


def test_rate_limit_overrides_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown limits"):
        Settings(rate_limit_role_overrides={"admin": {"requests_per_hour": 5}})
    with pytest.raises(ValidationError, match="negative"):
        Settings(rate_limit_role_overrides={"admin": {"tokens_per_day": -1}})


def test_several_models_are_parsed_default_first(tmp_path: Path) -> None:
    settings = Settings(
        llm_models=f"a={tmp_path}/a.gguf, b={tmp_path}/b.gguf", llm_default_model="b"
    )
    assert [alias for alias, _ in settings.model_specs()] == ["b", "a"]
    with pytest.raises(ValueError, match="alias=path"):
        Settings(llm_models="nonsense").model_specs()
    with pytest.raises(ValueError, match="not in LLM_MODELS"):
        Settings(llm_models=f"a={tmp_path}/a.gguf", llm_default_model="z").model_specs()


def test_pools_and_fallbacks_are_checked(tmp_path: Path) -> None:
    settings = Settings(
        llm_models=f"big=http://a:8000/v1#m | http://b:8000/v1#m,small={tmp_path}/s.gguf",
        llm_fallbacks="big=small",
    )
    specs = settings.model_specs()
    assert specs[0] == ("big", "http://a:8000/v1#m|http://b:8000/v1#m")
    assert settings.fallbacks([alias for alias, _ in specs]) == {"big": "small"}
    with pytest.raises(ValueError, match="every server of a pool is a URL"):
        Settings(llm_models="big=http://a:8000/v1|/models/b.gguf").model_specs()
    for wrong, problem in (
        ("big=huge", "'huge', which is not a model"),
        ("big", "is not alias=next"),
        ("big=small,big=small", "falls back twice or to itself"),
        ("big=big", "falls back twice or to itself"),
    ):
        with pytest.raises(ValueError, match=problem):
            Settings(llm_fallbacks=wrong).fallbacks(["big", "small"])
