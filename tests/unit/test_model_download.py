"""Model downloads against a loopback HTTP server (`tests.support.FileServer`) that serves
files with Range support and misbehaves on request: a connection cut mid-body, a stall,
redirects, error statuses."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modules.models import DownloadError, allowed, download
from tests.support import FileServer

SIZE = 3 * 1024 * 1024 + 123
CHUNK = 64 * 1024
CONTENT = random.Random(7).randbytes(SIZE)
DIGEST = hashlib.sha256(CONTENT).hexdigest()
# The module, not the function of the same name that the package exports.
DOWNLOAD_MODULE = importlib.import_module("modules.models.download")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.gguf").write_bytes(CONTENT)
    with FileServer(root) as files:
        yield files


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "models" / "model.gguf"


def part_of(target: Path) -> Path:
    return target.with_name(target.name + ".part")


async def fetch(server: FileServer, target: Path, **options: Any) -> Path:
    options.setdefault("sha256", DIGEST)
    options.setdefault("prefixes", [server.base_url + "/"])
    options.setdefault("retry_delay", 0.01)
    options.setdefault("chunk_bytes", CHUNK)
    return await download(options.pop("url", server.url()), target, **options)


async def test_a_whole_download_reports_progress_up_to_the_total(
    server: FileServer, target: Path
) -> None:
    progress: list[tuple[int, int | None]] = []
    assert await fetch(server, target, on_progress=lambda *p: progress.append(p)) == target
    assert target.read_bytes() == CONTENT
    assert not part_of(target).exists()
    assert progress[0] == (0, None)
    assert progress[-1] == (SIZE, SIZE)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert len(progress) > SIZE // CHUNK // 2
    assert server.ranges() == [None]


async def test_a_cut_connection_resumes_with_range(server: FileServer, target: Path) -> None:
    server.cut_at = 1_000_000
    progress: list[tuple[int, int | None]] = []
    await fetch(server, target, sha256=DIGEST.upper(), on_progress=lambda *p: progress.append(p))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == DIGEST
    assert server.ranges() == [None, "bytes=1000000-"]
    # What arrived before the cut is reported as kept, exactly, while the retry waits.
    assert (1_000_000, SIZE) in progress


async def test_an_existing_part_is_resumed(server: FileServer, target: Path) -> None:
    target.parent.mkdir()
    part_of(target).write_bytes(CONTENT[:700_000])
    progress: list[tuple[int, int | None]] = []
    await fetch(server, target, on_progress=lambda *p: progress.append(p))
    assert target.read_bytes() == CONTENT
    assert server.ranges() == ["bytes=700000-"]
    assert progress[0] == (700_000, None)
    assert progress[-1] == (SIZE, SIZE)


async def test_a_complete_part_is_accepted_on_416(server: FileServer, target: Path) -> None:
    target.parent.mkdir()
    part_of(target).write_bytes(CONTENT)
    await fetch(server, target)
    assert target.read_bytes() == CONTENT
    assert server.ranges() == [f"bytes={SIZE}-"]


async def test_a_part_longer_than_the_file_starts_over(server: FileServer, target: Path) -> None:
    target.parent.mkdir()
    part_of(target).write_bytes(CONTENT + b"stale")
    await fetch(server, target)
    assert target.read_bytes() == CONTENT
    assert server.ranges() == [f"bytes={SIZE + 5}-", None]


async def test_a_server_ignoring_range_restarts_from_zero(server: FileServer, target: Path) -> None:
    server.ignore_range = True
    target.parent.mkdir()
    part_of(target).write_bytes(b"x" * 1000)  # Wrong bytes: only a restart gets the hash right.
    await fetch(server, target)
    assert target.read_bytes() == CONTENT


async def test_a_wrong_sha256_is_refused_and_the_part_removed(
    server: FileServer, target: Path
) -> None:
    with pytest.raises(DownloadError, match=f"sha256 mismatch: expected {'0' * 64}, got {DIGEST}"):
        await fetch(server, target, sha256="0" * 64)
    assert not target.exists()
    assert not part_of(target).exists()


async def test_a_url_outside_the_prefixes_is_refused_before_any_request(
    server: FileServer, target: Path
) -> None:
    with pytest.raises(DownloadError, match="not under an allowed prefix"):
        await fetch(server, target, prefixes=["https://huggingface.co/"])
    assert server.requests == []
    assert not target.parent.exists()


async def test_a_redirect_inside_the_prefixes_is_followed(server: FileServer, target: Path) -> None:
    server.redirects["/old.gguf"] = "/model.gguf"
    await fetch(server, target, url=server.url("/old.gguf"))
    assert target.read_bytes() == CONTENT
    assert [path for path, _ in server.requests] == ["/old.gguf", "/model.gguf"]


async def test_a_redirect_outside_the_prefixes_is_refused(server: FileServer, target: Path) -> None:
    server.redirects["/model.gguf"] = "https://evil.example/model.gguf?token=secret"
    with pytest.raises(DownloadError, match=r"redirect to evil\.example") as caught:
        await fetch(server, target)
    assert "secret" not in str(caught.value)
    assert len(server.requests) == 1
    assert not target.exists()


async def test_endless_redirects_are_refused(server: FileServer, target: Path) -> None:
    server.redirects["/loop.gguf"] = "/loop.gguf"
    with pytest.raises(DownloadError, match="too many redirects"):
        await fetch(server, target, url=server.url("/loop.gguf"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://huggingface.co/org/model.gguf", True),
        ("HTTPS://HuggingFace.CO:443/org/model.gguf", True),
        ("https://huggingface.co@evil.com/org/model.gguf", False),
        ("https://huggingface.co.evil.com/org/model.gguf", False),
        ("https://huggingface.co:8443/org/model.gguf", False),
        ("http://huggingface.co/org/model.gguf", False),
        ("ftp://huggingface.co/org/model.gguf", False),
        ("https://huggingface.co\\@evil.com/", False),
        ("https://evil.com/https://huggingface.co/", False),
        ("https://huggingface.co/%2e%2e/model.gguf", False),
        ("not a url", False),
    ],
)
def test_allowed_compares_parsed_urls(url: str, expected: bool) -> None:
    assert allowed(url, ["https://huggingface.co/"]) is expected


def test_allowed_on_a_path_prefix() -> None:
    prefixes = ["https://example.com/models/", "https://cdn.example.com"]
    assert allowed("https://example.com/models/a.gguf", prefixes)
    assert not allowed("https://example.com/other/a.gguf", prefixes)
    assert allowed("https://cdn.example.com/x", prefixes)
    assert not allowed("https://cdn.example.com.evil.com/x", prefixes)


async def test_not_found(server: FileServer, target: Path) -> None:
    with pytest.raises(DownloadError, match="not found"):
        await fetch(server, target, url=server.url("/missing.gguf"))
    assert len(server.requests) == 1


async def test_server_errors_are_retried_then_given_up(server: FileServer, target: Path) -> None:
    server.statuses["/model.gguf"] = 503
    with pytest.raises(DownloadError, match="gave up after 2 retries: HTTP 503"):
        await fetch(server, target, max_retries=2)
    assert len(server.requests) == 3


async def test_credentials_never_reach_the_message(server: FileServer, target: Path) -> None:
    url = server.url("/missing.gguf?token=secret").replace("://", "://user:pw@")
    with pytest.raises(DownloadError) as caught:
        await fetch(server, target, url=url)
    assert "secret" not in str(caught.value)
    assert "pw" not in str(caught.value)


async def test_too_little_free_space_is_refused(
    server: FileServer, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_usage(path: Any) -> SimpleNamespace:
        return SimpleNamespace(total=10 << 30, used=10 << 30, free=1000)

    monkeypatch.setattr(DOWNLOAD_MODULE.shutil, "disk_usage", disk_usage)
    with pytest.raises(DownloadError, match=r"needs 3\.0 MiB more and 1000 bytes is free"):
        await fetch(server, target)
    assert not target.exists()


async def test_cancelling_keeps_the_part_for_a_resume(server: FileServer, target: Path) -> None:
    server.stall_at = 512 * 1024
    started = asyncio.Event()

    def on_progress(done: int, total: int | None) -> None:
        if done:
            started.set()

    task = asyncio.create_task(fetch(server, target, on_progress=on_progress))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = part_of(target).stat().st_size
    assert 0 < kept <= 512 * 1024
    assert not target.exists()
    server.release.set()
    await fetch(server, target)
    assert target.read_bytes() == CONTENT
    assert server.ranges()[-1] == f"bytes={kept}-"
