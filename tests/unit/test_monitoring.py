"""Monitoring as people run it: the alert rules pass promtool's check and its unit tests,
every metric the rules and the Grafana dashboard name is one the service exports (read off
a running fast-tier app's /metrics), the rate limiter's degraded gauge, and Debian's
Prometheus scraping a running app with the shipped config while the rules fire."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.migrations import upgrade_to_head
from modules.cache import response_cache_from_settings
from modules.metrics import AppCollector
from modules.ratelimit import Limits, RateLimiter
from tests.support import Api, RunningServer, fake_app, free_port, make_settings, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/llm-service.json"
TOKEN = "scrape-" + "m" * 24
# Made by Prometheus itself for every target, not by the service.
SYNTHETIC = {"up"}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run scripts/ensure-prometheus.sh (as root)")
    done = subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_pass_promtools_check() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(RULES))


def test_every_alert_fires_in_promtools_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_every_alert_has_a_delay_a_severity_and_words_for_people() -> None:
    for rule in alert_rules():
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression selects: strings, label matchers, ranges and
    grouping lists removed, then every name that is not a function, keyword or number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    grouping = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, " ", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        if name.lower() not in KEYWORDS and not text[match.end() :].lstrip().startswith("("):
            names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (model, le) (rate(a_bucket{x="y(z)"}[$__rate_interval])))'
        " / on (model) group_left sum(b_total) > bool 2 or up"
    )
    assert metric_names(expression) == {"a_bucket", "b_total", "up"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name a running fast-tier app exports, histograms with their suffixes."""
    tmp_path = tmp_path_factory.mktemp("monitoring")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path, metrics_token=TOKEN))
    scraped: list[str] = []

    def scrape(client: httpx.Client) -> bool:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        scraped.append(response.text)
        return "http_requests_total{" in response.text

    with RunningServer(app) as server, httpx.Client(base_url=server.base_url) as client:
        # One routed request: the HTTP metrics exist once its middleware has counted it
        # (after the response went out).
        assert client.get("/").status_code == 200
        assert wait_for(lambda: scrape(client), timeout=10), scraped[-1]
    names = set()
    for family in text_string_to_metric_families(scraped[-1]):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_the_dashboard_and_the_alerts_name_only_exported_metrics(exported: set[str]) -> None:
    expressions = [str(rule["expr"]) for rule in alert_rules()]
    expressions += list(dashboard_expressions())
    used = set().union(*(metric_names(expression) for expression in expressions))
    assert "llm_time_to_first_token_seconds_bucket" in used
    assert "http_requests_total" in used
    assert used - SYNTHETIC <= exported, sorted(used - SYNTHETIC - exported)


def test_the_dashboard_shows_what_operators_ask_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    for name in (
        "llm_requests_total",
        "llm_completion_tokens_total",
        "llm_time_to_first_token_seconds_bucket",
        "llm_queue_depth",
        "llm_busy_slots",
        "llm_cache_hits_total",
        "llm_fallbacks_total",
        "llm_remote_node_turns_total",
    ):
        assert name in used, name


class BrokenCounters:
    async def add(self, key: str, amount: int, ttl: int) -> int:
        raise ConnectionError("redis is down")

    async def get(self, key: str) -> int:
        raise ConnectionError("redis is down")


def degraded_gauge(collector: AppCollector) -> float | None:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "llm_ratelimit_degraded":
            (sample,) = family.samples
            return sample.value
    return None


async def test_the_limiter_gauge_says_when_redis_was_lost(tmp_path: Path) -> None:
    cache = response_cache_from_settings(make_settings("sqlite://", tmp_path), None)
    limits = Limits(requests_per_minute=5, tokens_per_minute=0, tokens_per_day=0)
    limiter = RateLimiter(
        counters=BrokenCounters(),
        default=limits,
        per_role={},
        login_per_ip_per_minute=0,
        login_failures_per_account=0,
        login_failure_window=900,
    )
    collector = AppCollector(lambda: None, cache, limiter)
    assert degraded_gauge(collector) == 0
    await limiter.admit("u", "user", 1)  # the store fails: counted per process
    assert limiter.degraded
    assert degraded_gauge(collector) == 1
    assert degraded_gauge(AppCollector(lambda: None, cache)) == 0  # no limiter: not degraded


def prometheus_config(tmp_path: Path, live: str, dead: str) -> Path:
    """deploy/prometheus/prometheus.yml as shipped, pointed at `live` and `dead` (host:port)
    with the token in a file, evaluated every second, and the alert rules with no `for`
    (the conditions, not their durations, are what this test checks: alerts_test.yml
    checks the durations)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "token").write_text(TOKEN)
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    job["static_configs"] = [{"targets": [live, dead]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def firing(prometheus: str) -> set[tuple[str, str]]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {
        (alert["labels"]["alertname"], alert["labels"].get("instance", ""))
        for alert in alerts
        if alert["state"] == "firing"
    }


def test_prometheus_scrapes_the_service_and_the_rules_fire(tmp_path: Path) -> None:
    """Debian's Prometheus with the shipped config and rules, scraping a running app whose
    Redis is gone (the limits degrade) beside an address where nothing answers."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run scripts/ensure-prometheus.sh (as root)")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    settings = make_settings(
        database_url,
        tmp_path,
        metrics_token=TOKEN,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        rate_limit_requests_per_minute=100,
    )
    with RunningServer(fake_app(settings)) as server:
        api = Api(base_url=server.base_url, app=server.app, database_url=database_url)
        with api.client(api.user_token()) as client:  # the limiter meets the lost Redis
            assert client.post("/llm/generate", json={"prompt": "Hi"}).status_code == 200
        live, dead = f"127.0.0.1:{server.port}", f"127.0.0.1:{free_port()}"
        port = free_port()
        command = [
            binary,
            f"--config.file={prometheus_config(tmp_path, live, dead)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        log = (tmp_path / "prometheus.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        prometheus = f"http://127.0.0.1:{port}"
        try:
            wanted = {("LLMServiceDown", dead), ("LLMRateLimitsDegraded", live)}
            seen: set[tuple[str, str]] = set()

            def fired() -> bool:
                # Starting, Prometheus answers 503 with a text body.
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    seen.update(firing(prometheus))
                return wanted <= seen

            assert wait_for(fired, timeout=60), (seen, (tmp_path / "prometheus.log").read_text())
            assert ("LLMServiceDown", live) not in seen  # the live one is scraped, token and all
            query = {"query": f'up{{job="llm-service", instance="{live}"}}'}
            up = httpx.get(f"{prometheus}/api/v1/query", params=query, timeout=5).json()
            assert up["data"]["result"][0]["value"][1] == "1"
        finally:
            process.terminate()
            process.wait(20)
            log.close()
