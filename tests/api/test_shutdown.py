"""SIGTERM with answers in flight, on the fake backend: the server as `llm-service serve`
runs it (app.shutdown.run_server, uvicorn, signals) in a process of its own. What ends
within the grace period ends as usual; when the grace period ends, a stream still running
gets an `error` event saying the server is restarting and a proper end of its body, a whole
answer still waiting a 503; the process exits within the grace period plus two seconds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from modules.llm.api.streaming import RESTARTING, Drain, ServerRestarting
from tests.support import PASSWORD, RecordedStream, free_port, wait_for

GRACE = 2
ROOT = Path(__file__).resolve().parents[2]

# The fake backend says a word every 50 ms, up to max_tokens (at most 512): 25 s.
SERVER = """
import json, os
from pathlib import Path
from app.shutdown import run_server
from tests.support import fake_app, make_settings
options = json.loads(os.environ["SHUTDOWN_TEST_SERVER"])
settings = make_settings(options.pop("database_url"), Path(options.pop("data_dir")), **options)
run_server(fake_app(settings, token_delay=0.05, answer_tokens=100_000), settings)
"""


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[Served]:
    upgrade_to_head(postgres_url)
    port = free_port()
    options = {
        "database_url": postgres_url,
        "data_dir": str(tmp_path),
        "host": "127.0.0.1",
        "port": port,
        "shutdown_grace_seconds": GRACE,
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=ROOT,
            env={**os.environ, "SHUTDOWN_TEST_SERVER": json.dumps(options)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, timeout=60), log.read_text()
        yield Served(process, base_url, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_ends_streams_with_a_restarting_error_and_exits_in_time(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as anonymous:
        anonymous.post("/auth/register", json={"email": "s@example.com", "password": PASSWORD})
        token = anonymous.post(
            "/auth/login", json={"email": "s@example.com", "password": PASSWORD}
        ).json()["access_token"]
    client = httpx.Client(
        base_url=served.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    long = {"max_tokens": 500}
    generate, chat, short = RecordedStream(), RecordedStream(), RecordedStream()
    whole: list[httpx.Response] = []
    work = [
        threading.Thread(
            target=generate.read,
            args=(
                client,
                "/llm/generate",
                {"prompt": "Go on.", "stream": True, "settings": long},
            ),
        ),
        threading.Thread(
            target=chat.read,
            args=(
                client,
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Go on."}], "stream": True, **long},
            ),
        ),
        # 20 words in a second: this one ends within the grace period, as usual.
        threading.Thread(
            target=short.read,
            args=(
                client,
                "/llm/generate",
                {"prompt": "Short.", "stream": True, "settings": {"max_tokens": 20}},
            ),
        ),
        threading.Thread(
            target=lambda: whole.append(
                client.post("/llm/generate", json={"prompt": "All of it.", "settings": long})
            )
        ),
    ]
    for thread in work:
        thread.start()
    assert wait_for(lambda: len(generate.events) > 2 and len(chat.events) > 2), (
        generate.error,
        chat.error,
    )

    terminated = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    returncode = served.process.wait(GRACE + 10)
    exited = time.monotonic()
    for thread in work:
        thread.join(10)
    client.close()
    log = served.log.read_text()

    # A clean end (uvicorn then re-raises the signal it stopped for, as the exit status).
    assert returncode in (0, -signal.SIGTERM), log
    assert "Finished server process" in log
    assert exited - terminated <= GRACE + 2, log

    # Within the grace period the streams went on; at its end they were told, then ended.
    for stream in (generate, chat):
        assert stream.error is None, (stream.error, log)
        assert stream.ended_cleanly
        assert any(terminated + 0.5 < at < terminated + GRACE - 0.2 for *_, at in stream.events)
    name, data, at = generate.events[-1]
    assert name == "error"
    assert json.loads(data) == {
        "status": 503,
        "detail": RESTARTING,
        "request_id": json.loads(data)["request_id"],
    }
    assert terminated + GRACE - 0.2 < at < terminated + GRACE + 1
    assert [name for name, *_ in generate.events[1:-1]] == ["token"] * (len(generate.events) - 2)

    name, data, at = chat.events[-1]
    assert name is None
    error = json.loads(data)["error"]
    assert (error["message"], error["type"]) == (RESTARTING, "server_error")
    assert terminated + GRACE - 0.2 < at < terminated + GRACE + 1
    assert all("[DONE]" not in data for _, data, _ in chat.events)

    assert short.ended_cleanly
    assert short.events[-1][0] == "done"

    [answer] = whole
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    assert answer.json()["detail"] == RESTARTING


async def test_the_drain_interrupts_a_wait_and_only_its_own_cancellation() -> None:
    drain = Drain()
    never = asyncio.Event()

    async def waiter() -> str:
        with drain.watching() as wait:
            try:
                with wait:
                    await never.wait()
            except ServerRestarting:
                await asyncio.sleep(0)  # the task runs on, not cancelled
                return "restarting"
        return "done"

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    drain.start()
    assert await task == "restarting"
    assert task.cancelling() == 0

    # Started already: the next wait gives up at once.
    with drain.watching() as wait, pytest.raises(ServerRestarting), wait:
        pytest.fail("the wait ran")

    # Someone else's cancellation at the same time (the client left) goes on.
    other = Drain()
    task = asyncio.create_task(_wait_on(other, never))
    await asyncio.sleep(0.01)
    other.start()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_drain_leaves_a_task_that_is_not_waiting_until_its_next_wait() -> None:
    drain = Drain()
    sending = asyncio.Event()
    sent = asyncio.Event()
    steps: list[str] = []

    async def stream() -> None:
        with drain.watching() as wait:
            with wait:
                await asyncio.sleep(0)
            steps.append("event")
            sending.set()
            await sent.wait()  # a slow client: not a wait for the model
            steps.append("sent")
            try:
                with wait:
                    steps.append("never")
            except ServerRestarting:
                steps.append("restarting")

    task = asyncio.create_task(stream())
    await sending.wait()
    drain.start()
    sent.set()
    await task
    assert steps == ["event", "sent", "restarting"]


async def _wait_on(drain: Drain, event: asyncio.Event) -> None:
    with drain.watching() as wait:
        try:
            with wait:
                await event.wait()
        except ServerRestarting:
            pytest.fail("another cancellation was taken for the drain's")
