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
    assert sorted(built) == ["app", "app-gpu", "inference"]
    for name in ("migrate", "inference", "gateway-1", "gateway-2"):
        assert services[name]["image"] == services["app"]["image"] == "llm-service:latest"
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


def test_the_scale_profile_puts_nginx_before_two_gateways_and_one_inference_node() -> None:
    services = compose()["services"]
    scale = sorted(name for name, s in services.items() if s.get("profiles") == ["scale"])
    assert scale == ["gateway-1", "gateway-2", "inference", "nginx"]
    gateways = [services["gateway-1"], services["gateway-2"]]
    assert gateways[0]["environment"] == gateways[1]["environment"]
    environment = gateways[0]["environment"]
    assert environment["LLM_MODELS"].startswith("chat=http://inference:8000/v1#")
    assert environment["REDIS_URL"]
    assert environment["DATABASE_URL"].startswith("postgresql://")
    # Only nginx's forwarded address is believed.
    nginx = services["nginx"]
    assert environment["TRUSTED_PROXIES"] == nginx["networks"]["scale"]["ipv4_address"]
    mount = "./deploy/nginx/llm-service.conf:/etc/nginx/conf.d/default.conf:ro"
    assert mount in nginx["volumes"]
    assert services["inference"]["environment"]["ALLOW_REGISTRATION"] == "false"


def test_the_nginx_config_is_safe_for_streams() -> None:
    conf = (ROOT / "deploy/nginx/llm-service.conf").read_text()
    directives = dict(
        re.findall(
            r"^\s*(proxy_buffering|proxy_read_timeout|proxy_http_version) (\S+);", conf, re.M
        )
    )
    assert directives == {
        "proxy_buffering": "off",
        "proxy_read_timeout": "600s",
        "proxy_http_version": "1.1",
    }
    assert re.findall(r"server (gateway-\d):8000", conf) == ["gateway-1", "gateway-2"]
    # The edge replaces what a client claims to be its address.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf


def test_nothing_in_env_can_unbind_a_container_from_its_port() -> None:
    """.env.example says HOST=127.0.0.1 (right for `make run`): copied to .env, it reached
    the containers through env_file and bound the app to the container's loopback, so the
    published port reset every connection. Compose's own environment wins over env_file."""
    services = compose()["services"]
    for name, service in services.items():
        if service.get("image", "").startswith("llm-service"):
            environment = service["environment"]
            assert environment["HOST"] == "0.0.0.0", name  # noqa: S104 (inside a container)
            assert environment["PORT"] == "8000", name
            for published in service.get("ports", []):
                assert published.endswith(":8000"), name


def test_the_image_builds_with_no_registry_but_its_base_images() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # A `# syntax=` line makes BuildKit fetch its frontend from Docker Hub first.
    assert not re.search(r"^#\s*syntax\s*=", dockerfile, re.MULTILINE | re.IGNORECASE)
    # A wheels/ directory in the context, when there is one, is where pip looks first.
    # The CPU stage only: a CPU wheel would make the cuda target a CPU build.
    assert dockerfile.count("COPY pyproject.toml README.md wheel[s] ./") == 1
    assert dockerfile.count("pip install --find-links=/app .") == 1
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env", "bench/.cache"} <= set(ignored)


def test_the_monitoring_profile_mounts_the_rules_and_the_dashboard() -> None:
    document = compose()
    services = document["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    rules = "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro"
    assert rules in prometheus["volumes"]
    dashboard = "./deploy/grafana/llm-service.json:/var/lib/grafana/dashboards/llm-service.json:ro"
    assert dashboard in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert prometheus["secrets"] == ["metrics_token"]
    assert document["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["app:8000"]}]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    for service in (prometheus, grafana):
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
