"""SIGTERM to `llm-service serve` while the real model streams two long answers, one on
/llm/generate and one on /v1: when the grace period ends each stream gets an error saying
the server is restarting (in its own shape) and a proper end of its body, and the process,
model unloaded, exits within the grace period plus two seconds."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from modules.llm.api.streaming import RESTARTING
from modules.llm.module import MEMORY_DRAIN_SECONDS
from tests.support import PASSWORD, RecordedStream, start_server, stop, wait_for

GRACE = 3  # the model may give a token a second on a busy machine
# Greedy counting: the model goes on until max_tokens, far beyond the grace period.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
LONG = {"max_tokens": 1000, "temperature": 0, "seed": 1}


def test_sigterm_mid_stream_sends_a_restarting_error_then_exits_in_time(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "",
        "SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "LLM_CONTEXT_SIZE": "2048",
        "LLM_PARALLEL": "2",
    }
    with open(log_file, "wb") as output:
        process, base_url = start_server(env, output)
    try:
        with httpx.Client(base_url=base_url, timeout=60) as anonymous:
            anonymous.post("/auth/register", json={"email": "m@example.com", "password": PASSWORD})
            token = anonymous.post(
                "/auth/login", json={"email": "m@example.com", "password": PASSWORD}
            ).json()["access_token"]
        client = httpx.Client(
            base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )
        generate, completion = RecordedStream(), RecordedStream()
        readers = [
            threading.Thread(
                target=generate.read,
                args=(
                    client,
                    "/llm/generate",
                    {
                        "prompt": f"Continue this list up to 1000: {COUNTING}",
                        "stream": True,
                        "use_cache": False,
                        "settings": LONG,
                    },
                ),
            ),
            threading.Thread(
                target=completion.read,
                args=(
                    client,
                    "/v1/completions",
                    {"prompt": COUNTING, "stream": True, "use_cache": False, **LONG},
                ),
            ),
        ]
        for reader in readers:
            reader.start()
        assert wait_for(lambda: len(generate.events) > 3 and len(completion.events) > 3, 60), (
            generate.error,
            completion.error,
        )

        terminated = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(GRACE + 10)
        exited = time.monotonic()
        for reader in readers:
            reader.join(10)
        client.close()
    finally:
        if process.poll() is None:
            stop(process)
    log = log_file.read_text()

    assert "Finished server process" in log, log
    # The grace period, then the last turns' embeddings (at most MEMORY_DRAIN_SECONDS: on a
    # busy machine making the embedding context takes seconds), then the engine's stop.
    assert exited - terminated <= GRACE + MEMORY_DRAIN_SECONDS + 2, log

    for stream in (generate, completion):
        assert stream.error is None, (stream.error, log)
        assert stream.ended_cleanly
        # The model went on within the grace period; at its end the stream was told.
        assert any(terminated + 0.2 < at < terminated + GRACE - 0.2 for *_, at in stream.events)
        *_, at = stream.events[-1]
        assert terminated + GRACE - 0.2 < at < terminated + GRACE + 1
    name, data, _ = generate.events[-1]
    assert name == "error"
    assert json.loads(data)["detail"] == RESTARTING
    assert json.loads(data)["status"] == 503
    assert {name for name, *_ in generate.events[1:-1]} == {"token"}

    name, data, _ = completion.events[-1]
    error = json.loads(data)["error"]
    assert (error["message"], error["type"]) == (RESTARTING, "server_error")
    assert all(json.loads(data).get("choices") for _, data, _ in completion.events[:-1])
