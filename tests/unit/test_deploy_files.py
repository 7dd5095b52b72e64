"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): read them, and
check what they promise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from modules.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_one_image_serves_migrate_and_app() -> None:
    services = compose()["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert sorted(built) == ["app", "app-gpu"]
    assert services["migrate"]["image"] == services["app"]["image"] == "llm-service:latest"
    assert services["migrate"]["command"] == ["llm-service", "migrate"]


def test_every_setting_reaches_the_containers_from_env() -> None:
    services = compose()["services"]
    for name in ("app", "migrate", "app-gpu"):
        assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
        environment = services[name]["environment"]
        assert environment["ALLOW_REGISTRATION"] == "${ALLOW_REGISTRATION:-false}", name
    # .env.example, the template of .env, names every setting.
    example = (ROOT / ".env.example").read_text()
    missing = [
        name.upper()
        for name in Settings.model_fields
        if not re.search(rf"^#?\s*{name.upper()}=", example, re.MULTILINE)
    ]
    assert missing == []


def test_the_gpu_profile_reserves_gpus_and_builds_the_cuda_target() -> None:
    gpu = compose()["services"]["app-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"] == {"context": ".", "target": "cuda"}
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert gpu["environment"]["LLM_GPU_LAYERS"] == "${LLM_GPU_LAYERS:--1}"


def test_dockerfile_stages() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.MULTILINE)
    assert [alias for _, alias in stages] == ["build", "cuda-build", "cuda", ""]
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in dockerfile
    # The default (last) stage is the CPU image, on a supported Python.
    assert re.match(r"python:3\.1[1-3]-", stages[-1][0])
    assert dockerfile.rstrip().endswith('CMD ["llm-service", "serve"]')
