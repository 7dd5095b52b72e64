"""Response cache: time of a repeated /llm/generate request (a hit) against its first run
(a miss), through HTTP on a freshly started service. Prints the ratio of medians.

    .venv/bin/python bench/cache.py [--requests 10] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as workdir:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LLM_", "JWT_", "DATABASE_", "CACHE_", "REDIS_", "RATE_"))
        }
        env.update(
            {
                "DATA_DIR": workdir,
                "JWT_SECRET": secrets.token_urlsafe(36),
                "PORT": str(port),
                "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
            }
        )
        server = subprocess.Popen(
            [str(BIN / "llm-service"), "serve"],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the service did not start")
                    time.sleep(0.2)
                credentials = {"email": "bench@example.com", "password": "bench-password-1"}
                client.post("/auth/register", json=credentials)
                token = client.post("/auth/login", json=credentials).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                misses: list[float] = []
                hits: list[float] = []
                for index in range(args.requests):
                    body = {
                        "prompt": f"Write a few sentences about topic number {index}.",
                        "settings": {"max_tokens": args.max_tokens, "temperature": 0.7},
                    }
                    for times, expected in ((misses, False), (hits, True)):
                        started = time.perf_counter()
                        answer = client.post("/llm/generate", json=body, headers=headers).json()
                        times.append(time.perf_counter() - started)
                        assert answer["cache_hit"] is expected, answer
        finally:
            server.terminate()
            server.wait(20)
    miss, hit = statistics.median(misses), statistics.median(hits)
    print(f"requests: {args.requests} distinct prompts, max_tokens {args.max_tokens}, HTTP")
    print(f"miss median: {miss * 1000:.1f} ms, hit median: {hit * 1000:.1f} ms")
    print(f"hit is {miss / hit:.0f}x faster than the miss")


if __name__ == "__main__":
    main()
