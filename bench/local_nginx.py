"""Debian's nginx on loopback, running the repository's own deploy/nginx/llm-service.conf in
front of the given gateways: for the scale-out tests (tests/model/test_scale.py) and the
gateway benchmark (bench/gateway.py). `scripts/ensure-nginx.sh` installs nginx."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "llm-service.conf"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


def site_config(gateways: list[str], port: int) -> str:
    """The repository's site with these loopback gateways in place of compose's
    `gateway-N` (a line for a gateway not given is dropped), listening on `port`."""
    lines = []
    for line in SITE.read_text().splitlines(keepends=True):
        server = re.search(r"server gateway-(\d+):8000", line)
        if server:
            number = int(server.group(1))
            if number > len(gateways):
                continue
            address = gateways[number - 1].removeprefix("http://")
            line = line.replace(server.group(0), f"server {address}")
        lines.append(line)
    return "".join(lines).replace("listen 8080;", f"listen 127.0.0.1:{port};")


@contextmanager
def running_nginx(gateways: list[str], work: Path) -> Iterator[str]:
    """nginx in front of `gateways` once it answers /health: its URL. Stopped on exit."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed: scripts/ensure-nginx.sh installs it")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    prefix = work / "nginx"
    prefix.mkdir()
    (prefix / "site.conf").write_text(site_config(gateways, port))
    temps = "".join(f"    {kind}_temp_path {prefix}/{kind};\n" for kind in TEMP_PATHS)
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n"
        + f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        + f"http {{\n    access_log off;\n{temps}    include {prefix}/site.conf;\n}}\n"
    )
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log = prefix / "error.log"
                tail = log.read_text()[-2000:] if log.exists() else "(no error log)"
                raise RuntimeError(f"nginx did not start: {tail}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
