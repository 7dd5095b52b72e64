"""What a gateway adds: the same streamed chat completions sent to an inference node
directly, through a gateway replica, and through nginx in front of the gateway, in one run.

The inference node is `llm-service serve` with the bundled model; the gateway is
`llm-service serve` with only that node as a remote model (no model file); nginx runs the
repository's deploy/nginx/llm-service.conf. Requests rotate over the three paths, so each
path sees the same prompts and the same machine load. Caches are off, so every request
generates. Reported per path: time to first token (p50, p95), tokens/s per stream after the
first token, and the same against the direct path; also the gateway's start-up time.

    .venv/bin/python bench/gateway.py [--rounds 12] [--max-tokens 64] [--concurrency 1 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
from local_nginx import nginx_binary, running_nginx  # bench/local_nginx.py
from openai import OpenAI
from service import free_port  # bench/service.py

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("llm-service"))
PASSWORD = "bench-pass-123"
TOPICS = ("a lighthouse", "a fox", "the sea", "a clock", "a garden", "a train", "a kite")
NO_LIMITS = {
    "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
    "RATE_LIMIT_TOKENS_PER_MINUTE": "0",
    "RATE_LIMIT_TOKENS_PER_DAY": "0",
    "LLM_MAX_IN_FLIGHT_PER_USER": "0",
    "REGISTRATIONS_PER_HOUR_PER_IP": "0",
    "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP": "0",
    "CACHE_ENABLED": "false",
    "REDIS_URL": "",
    "DATABASE_URL": "",
    "JWT_SECRET": "bench-secret-" + "x" * 40,
    "LOG_LEVEL": "WARNING",
}


def wait_healthy(url: str, process: subprocess.Popen[bytes], limit: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if process.poll() is not None:
            sys.exit(f"{url}: the server exited")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    sys.exit(f"{url}: not healthy after {limit} s")


@contextmanager
def serve(env: dict[str, str]) -> Iterator[tuple[str, float]]:
    """`llm-service serve`: its URL and seconds from start to a healthy /health."""
    port = free_port()
    full = {**os.environ, **NO_LIMITS, **env, "PORT": str(port)}
    process = subprocess.Popen(
        [CLI, "serve"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, wait_healthy(url, process)
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def nginx_before(gateway: str, work: Path) -> Iterator[str | None]:
    if nginx_binary() is None:
        print("nginx not found (scripts/ensure-nginx.sh installs it): no nginx path")
        yield None
        return
    with running_nginx([gateway], work) as url:
        yield url


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        [CLI, *args], env={**os.environ, **NO_LIMITS, **env}, input=stdin, text=True,
        capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def gateway_token(url: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/auth/register", json={"email": "bench@example.com", "password": PASSWORD})
        login = client.post(
            "/auth/login", json={"email": "bench@example.com", "password": PASSWORD}
        )
        key = client.post(
            "/auth/api-keys",
            json={"name": "bench"},
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        secret: str = key.json()["key"]
        return secret


def one_stream(client: OpenAI, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """TTFT, tokens/s after the first token, completion tokens."""
    sent = time.perf_counter()
    first = 0.0
    tokens = 0
    stream = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and not first:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    ended = time.perf_counter()
    first = first or ended
    rate = (tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0.0
    return first - sent, rate, tokens


def run_round(
    clients: dict[str, OpenAI], order: list[str], prompt: str, max_tokens: int, concurrency: int
) -> dict[str, list[tuple[float, float, int]]]:
    """Each path in turn: `concurrency` streams sent together."""
    results: dict[str, list[tuple[float, float, int]]] = {}
    with ThreadPoolExecutor(concurrency) as pool:
        for name in order:
            prompts = [f"{prompt} (part {n})" for n in range(concurrency)]
            stream = partial(one_stream, clients[name], max_tokens=max_tokens)
            results[name] = list(pool.map(stream, prompts))
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    # In production the gateway and nginx run on other machines than the node: leave them
    # (and this client) a core, or their per-token work competes with the node's decoding.
    parser.add_argument("--node-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    lines = [
        f"# Gateway overhead ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs)",
        "",
        f"{args.rounds} rounds per concurrency, {args.max_tokens}-token streamed chat "
        "completions (temperature 0), paths rotated within each round; the inference node "
        f"decodes on {args.node_threads} thread(s).",
        "",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        node_env = {
            "DATA_DIR": str(work / "node"),
            "LLM_MODEL_ALIAS": "smol",
            "LLM_PARALLEL": str(max(args.concurrency)),
            "LLM_THREADS": str(args.node_threads),
            "LLM_QUEUE_SIZE": "64",
            "ALLOW_REGISTRATION": "false",
        }
        cli(
            "create-admin",
            "--email",
            "ops@example.com",
            "--password-stdin",
            env=node_env,
            stdin=PASSWORD,
        )
        node_key = cli("create-api-key", "--email", "ops@example.com", env=node_env)
        with serve(node_env) as (node, _):
            gateway_env = {
                "DATA_DIR": str(work / "gateway"),
                "LLM_MODELS": f"smol={node}/v1#smol",
                "LLM_REMOTE_API_KEYS": f"smol={node_key}",
                "LLM_MODEL_PATH": str(work / "no-model-here.gguf"),
                "TRUSTED_PROXIES": "127.0.0.1",
            }
            with serve(gateway_env) as (gateway, startup), nginx_before(gateway, work) as edge:
                key = gateway_token(gateway)
                clients = {
                    "direct": OpenAI(base_url=f"{node}/v1", api_key=node_key, max_retries=0),
                    "gateway": OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0),
                }
                if edge:
                    clients["nginx+gateway"] = OpenAI(
                        base_url=f"{edge}/v1", api_key=key, max_retries=0
                    )
                lines.append(
                    f"Gateway start to a healthy /health: {startup:.2f} s (no model file)."
                )
                lines.append("")
                for name in clients:  # warm up every path once
                    one_stream(clients[name], "Hello.", 8)
                for concurrency in args.concurrency:
                    table = measure(clients, args.rounds, args.max_tokens, concurrency)
                    lines += table
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench/results/gateway.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)


def measure(
    clients: dict[str, OpenAI], rounds: int, max_tokens: int, concurrency: int
) -> list[str]:
    names = list(clients)
    collected: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        prompt = f"Write a short story about {TOPICS[number % len(TOPICS)]}, round {number}."
        for name, results in run_round(clients, order, prompt, max_tokens, concurrency).items():
            collected[name] += results
    base_ttft = statistics.median(t for t, _, _ in collected["direct"])
    base_rate = statistics.median(r for _, r, _ in collected["direct"])
    lines = [
        f"## Concurrency {concurrency}",
        "",
        "| path | TTFT p50 | TTFT p95 | tok/s per stream (p50) | TTFT vs direct "
        "| tok/s vs direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        ttfts = [t for t, _, _ in collected[name]]
        rates = [r for _, r, _ in collected[name]]
        ttft, rate = statistics.median(ttfts), statistics.median(rates)
        added_ms = (ttft - base_ttft) * 1000
        lines.append(
            f"| {name} | {ttft * 1000:.1f} ms | {percentile(ttfts, 0.95) * 1000:.1f} ms | "
            f"{rate:.1f} | {added_ms:+.1f} ms ({ttft / base_ttft:.2f}x) | {rate / base_rate:.2f}x |"
        )
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
