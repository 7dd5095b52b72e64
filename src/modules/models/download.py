"""Downloading a model file that a person can trust.

Model files are large (hundreds of MB to tens of GB) and come from the internet, so a
download here has to survive what large downloads meet and refuse what it should not take:

- only URLs under the admin's allowed prefixes are fetched, redirects included (each hop is
  checked; a file host that redirects to its CDN needs the CDN allowed too);
- the bytes go to `<target>.part` and reach `target` by one `os.replace` once whole and
  verified, so `target` never exists half-written;
- a cut connection resumes from the bytes already on disk (`Range`), in this call (retries
  with backoff) or a later one (a `.part` left by a failure or a cancellation);
- a sha256, when given, is checked before the file is accepted;
- the disk's free space is checked before the bytes arrive, not when it runs out.

Errors a person can act on are `DownloadError`s whose message never carries a URL's
credentials (userinfo, query strings: signed URLs put tokens there).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
# Backoff doubles from retry_delay, up to this.
MAX_RETRY_DELAY = 30.0
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
DEFAULT_PORTS = {"http": 80, "https": 443}
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

ProgressCallback = Callable[[int, int | None], None]


class DownloadError(Exception):
    """A download that failed in a way a person can act on; its message is safe to show."""


class _Retryable(Exception):
    """A failure that another try may not meet: a cut connection, a server error."""


def allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Whether `url` (http or https) lies under one of `prefixes`.

    Compared as parsed URLs (the parser httpx sends with), not as strings: the scheme, host
    and port must be equal and the path must start with the prefix's path, so neither
    `https://huggingface.co@evil.com/` nor `https://huggingface.co.evil.com/` passes for
    `https://huggingface.co/`.
    """
    candidate = _parsed(url)
    if candidate is None:
        return False
    for prefix in prefixes:
        allowed_url = _parsed(prefix)
        if (
            allowed_url is not None
            and _origin(candidate) == _origin(allowed_url)
            and (candidate.path or "/").startswith(allowed_url.path or "/")
        ):
            return True
    return False


def _parsed(url: str) -> httpx.URL | None:
    """`url` parsed and normalized (scheme and host lowercased, default port dropped), or
    None when it is not a plain http(s) URL. A `..` left in its path (written `%2e%2e`,
    which the parser keeps) could step out of a prefix on the server: refused."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    if any(segment in (".", "..") for segment in parsed.path.split("/")):
        return None
    return parsed


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    # httpx drops a default port only when the scheme was written in lower case.
    return url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme]


def shown_url(url: str) -> str:
    """`url` as it may be shown: no userinfo, query string or fragment."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(an invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(slots=True)
class _Part:
    """The `.part` file being written: its size and, with a sha256 to check, its hash so far."""

    path: Path
    size: int
    hasher: hashlib._Hash | None

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.size = 0
        if self.hasher is not None:
            self.hasher = hashlib.sha256()

    def count(self, data: bytes) -> None:
        """Account for a piece of the body just appended to the file."""
        self.size += len(data)
        if self.hasher is not None:
            self.hasher.update(data)


async def download(
    url: str,
    target: Path,
    *,
    sha256: str | None,
    prefixes: Sequence[str],
    on_progress: ProgressCallback | None = None,
    client: httpx.AsyncClient | None = None,
    max_retries: int = 5,
    retry_delay: float = 0.5,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Download `url` to `target`, resuming its `.part` if one exists; returns `target`.

    `on_progress(done, total)` is called at the start and after each chunk (`total` None
    while unknown). Cancelling keeps the `.part` for a later call to resume.
    """
    if not allowed(url, prefixes):
        raise DownloadError(f"refusing {shown_url(url)}: not under an allowed prefix")
    expected = sha256.lower() if sha256 is not None else None
    if expected is not None and not SHA256_HEX.fullmatch(expected):
        raise DownloadError("the expected sha256 must be 64 hexadecimal digits")
    target.parent.mkdir(parents=True, exist_ok=True)
    part_path = target.parent / (target.name + ".part")
    part = await asyncio.to_thread(_load_part, part_path, expected is not None)
    if on_progress is not None:
        on_progress(part.size, None)
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
    try:
        attempt = _Attempt(http, url, part, prefixes, on_progress, chunk_bytes)
        await _with_retries(attempt, max_retries, retry_delay)
    finally:
        if client is None:
            await http.aclose()
    if expected is not None and part.hasher is not None:
        actual = part.hasher.hexdigest()
        if actual != expected:
            part.path.unlink(missing_ok=True)
            raise DownloadError(f"sha256 mismatch: expected {expected}, got {actual}")
    os.replace(part.path, target)
    return target


def _load_part(path: Path, hashing: bool) -> _Part:
    """The `.part` as a previous try left it (or empty), its bytes hashed: run in a thread."""
    size = path.stat().st_size if path.exists() else 0
    hasher = hashlib.sha256() if hashing else None
    if hasher is not None and size:
        hash_file(path, hasher)
    return _Part(path, size, hasher)


def hash_file(path: Path, hasher: hashlib._Hash) -> None:
    """Feed a file to `hasher`, a megabyte at a time. Blocking."""
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            hasher.update(block)


async def _with_retries(attempt: _Attempt, max_retries: int, retry_delay: float) -> None:
    failures = 0
    while True:
        try:
            await attempt.run()
            return
        except _Retryable as exc:
            failures += 1
            if failures > max_retries:
                raise DownloadError(
                    f"gave up after {max_retries} retries: {exc}; the {attempt.part.size} "
                    "bytes received are kept and a new try resumes from them"
                ) from exc
            await asyncio.sleep(min(retry_delay * 2 ** (failures - 1), MAX_RETRY_DELAY))


@dataclass(slots=True)
class _Attempt:
    """One request for the bytes still missing, and the streaming of its answer."""

    http: httpx.AsyncClient
    url: str
    part: _Part
    prefixes: Sequence[str]
    on_progress: ProgressCallback | None
    chunk_bytes: int

    async def run(self) -> None:
        try:
            response = await self._follow_redirects()
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__} on {shown_url(self.url)}") from exc
        try:
            total = self._total_to_expect(response)
            if response.status_code == 416:
                return  # The part already holds the whole file.
            await self._stream(response, total)
        except httpx.TransportError as exc:
            raise _Retryable(f"the connection broke ({type(exc).__name__})") from exc
        finally:
            await response.aclose()

    async def _follow_redirects(self) -> httpx.Response:
        """The answer at the end of the redirects, each hop checked against the prefixes."""
        url = self.url
        headers = {"Accept-Encoding": "identity"}
        if self.part.size:
            headers["Range"] = f"bytes={self.part.size}-"
        for _hop in range(MAX_REDIRECTS + 1):
            request = self.http.build_request("GET", url, headers=headers)
            response = await self.http.send(request, stream=True, follow_redirects=False)
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or location is None:
                return response
            await response.aclose()
            url = urljoin(url, location)
            if not allowed(url, self.prefixes):
                host = urlsplit(url).hostname or shown_url(url)
                raise DownloadError(
                    f"refusing a redirect to {host} ({shown_url(url)}): not under an allowed "
                    "prefix; add it to the allowed prefixes if that host is trusted"
                )
        raise DownloadError(
            f"too many redirects (more than {MAX_REDIRECTS}) from {shown_url(self.url)}"
        )

    def _total_to_expect(self, response: httpx.Response) -> int | None:
        """Check the answer's status against the part; the file's whole size, if known."""
        status = response.status_code
        where = shown_url(str(response.url))
        if status == 200:
            total = _content_length(response)
        elif status == 206:
            total = self._resumed_total(response)
        elif status == 416 and self.part.size:
            return self._complete_part_size(response)
        elif status == 404:
            raise DownloadError(f"not found (HTTP 404): {where}")
        elif status >= 500:
            raise _Retryable(f"HTTP {status} from {where}")
        else:
            raise DownloadError(f"HTTP {status} {response.reason_phrase} from {where}")
        if total is not None:
            # A restart truncates the part first: either way the disk needs this much more.
            _check_free_space(self.part.path.parent, total - self.part.size)
        if status == 200 and self.part.size:
            self.part.restart()  # The server ignored the Range: start over.
        return total

    def _resumed_total(self, response: httpx.Response) -> int | None:
        match = CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is None or int(match[1]) != self.part.size:
            raise DownloadError(
                f"the server resumed at the wrong place ({response.headers.get('content-range')!r}"
                f" for {self.part.size} bytes already here)"
            )
        return int(match[3]) if match[3] != "*" else None

    def _complete_part_size(self, response: httpx.Response) -> int:
        """A 416: nothing left after the part's bytes, if the part has the file's size."""
        match = UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", ""))
        total = int(match[1]) if match else self.part.size
        if total != self.part.size:
            # The part does not fit this file (it changed, or the part is another's).
            self.part.restart()
            raise _Retryable(f"the partial file did not match the remote's {total} bytes")
        return total

    async def _stream(self, response: httpx.Response, total: int | None) -> None:
        """Append the body to the part; a short body is retryable, its bytes are kept."""
        part, report = self.part, self.on_progress
        reported = part.size
        # Unbuffered: the pieces (up to 64 KiB) go straight to the file, no copy in between.
        try:
            with part.path.open("ab", buffering=0) as file:
                async for piece in response.aiter_raw():
                    _write_all(file, piece)
                    part.count(piece)
                    if report is not None and part.size - reported >= self.chunk_bytes:
                        reported = part.size
                        report(part.size, total)
        finally:
            # Cut or not, what arrived is kept: the progress says so while a retry waits.
            if report is not None and part.size != reported:
                report(part.size, total)
        if total is not None and part.size < total:
            raise _Retryable(f"the body ended at {part.size} of {total} bytes")


def _write_all(file: io.FileIO, data: bytes) -> None:
    written = file.write(data)
    while written < len(data):  # A raw write may be partial.
        written += file.write(memoryview(data)[written:])


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DownloadError(
            f"not enough disk space in {directory}: the download needs {_size(needed)} more "
            f"and {_size(free)} is free"
        )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
