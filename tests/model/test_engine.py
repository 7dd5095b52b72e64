"""Continuous batching: several requests decoded together, conversations resumed from the
KV cache, and an engine that survives bad jobs. Through HTTP unless the engine itself is
the subject."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from app import create_app
from app.migrations import upgrade_to_head
from modules.llm.inference import ChatMessage, Failed, Finished, SamplingParams, TokenDelta
from tests.model.conftest import ModelApi
from tests.support import Api, RunningServer, generate, make_settings, ok

GREEDY = {"temperature": 0, "max_tokens": 48}


def test_greedy_output_is_the_same_alone_and_beside_seven_others(
    api: ModelApi, user_token: str
) -> None:
    prompt = "Write a short story about a lighthouse keeper."
    alone = ok(generate(api, user_token, prompt=prompt, settings=GREEDY))["response"]
    others = [f"Explain topic number {i} in a few sentences." for i in range(7)]
    tokens = [api.user_token() for _ in others]

    with ThreadPoolExecutor(max_workers=8) as pool:
        target = pool.submit(generate, api, user_token, prompt=prompt, settings=GREEDY)
        crowd = [
            pool.submit(generate, api, t, prompt=p, settings=GREEDY)
            for t, p in zip(tokens, others, strict=True)
        ]
        batched = ok(target.result())["response"]
        for future in crowd:
            assert ok(future.result())["usage"]["completion_tokens"] > 0
    assert batched == alone


def test_requests_run_concurrently_in_slots(api: ModelApi, user_token: str) -> None:
    engine = api.backend.engine
    assert engine.parallel == 8
    seen: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            seen.append(engine.busy_slots)
            await asyncio.sleep(0.01)

    async def run() -> None:
        watcher = asyncio.create_task(watch())
        async with httpx.AsyncClient(
            base_url=api.base_url, headers={"Authorization": f"Bearer {user_token}"}, timeout=120
        ) as client:
            responses = await asyncio.gather(
                *[
                    client.post(
                        "/llm/generate",
                        json={
                            "prompt": f"Count to {20 + i}.",
                            "settings": {"max_tokens": 40},
                            "use_cache": False,
                        },
                    )
                    for i in range(4)
                ]
            )
        stop.set()
        await watcher
        assert all(r.status_code == 200 for r in responses)

    asyncio.run(run())
    assert max(seen) >= 2  # decoded side by side, not one after another


def test_seed_reproduces_sampled_output(api: ModelApi, user_token: str) -> None:
    def sample(seed: int) -> str:
        body = {
            "prompt": "Invent a name for a cat.",
            "settings": {"temperature": 1.2, "seed": seed},
        }
        response: str = ok(generate(api, user_token, **body))["response"]
        return response

    assert sample(99) == sample(99)
    # At this temperature a seed matters: other seeds give other answers.
    assert len({sample(seed) for seed in (1, 2, 3, 4)}) > 1


def test_follow_up_turn_reuses_the_cache(api: ModelApi, user_token: str) -> None:
    first = ok(generate(api, user_token, prompt="Name a planet.", settings=GREEDY))
    second = ok(
        generate(
            api,
            user_token,
            prompt="Name another one.",
            conversation_id=first["conversation_id"],
            settings=GREEDY,
        )
    )
    # Everything the first turn left in the cache (its prompt, most of its answer) is reused.
    assert second["usage"]["cached_tokens"] >= first["usage"]["prompt_tokens"]
    assert second["usage"]["prompt_tokens"] > second["usage"]["cached_tokens"]


def test_cache_never_crosses_owners(api: ModelApi) -> None:
    body = {
        "prompt": f"A question nobody asked before: {uuid.uuid4()}",
        "system": "You are a careful assistant.",  # the user's own: never shared
        "settings": GREEDY,
    }
    alice, bob = api.user_token(), api.user_token()
    first = ok(generate(api, alice, **body))
    again = ok(generate(api, alice, **body))
    assert again["usage"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1
    other = ok(generate(api, bob, **body))
    assert other["usage"]["cached_tokens"] == 0


def test_only_the_default_system_prompt_is_shared_between_users(api: ModelApi) -> None:
    prompt = f"Another fresh question: {uuid.uuid4()}"
    alice, bob = api.user_token(), api.user_token()
    first = ok(generate(api, alice, prompt=prompt, settings=GREEDY))
    other = ok(generate(api, bob, prompt=prompt, settings=GREEDY))
    # Bob reuses the template's default system turn, never Alice's own words.
    assert 0 < other["usage"]["cached_tokens"] < first["usage"]["prompt_tokens"] - 10


def test_evicted_conversation_resumes_from_saved_state(api: ModelApi, user_token: str) -> None:
    engine = api.backend.engine
    first = ok(generate(api, user_token, prompt="Tell me about owls.", settings=GREEDY))
    saves_before = engine.stats.state_saves
    restores_before = engine.stats.state_restores
    # Nine other users take every slot, so this user's cache must leave its slot.
    crowd = [api.user_token() for _ in range(9)]
    with ThreadPoolExecutor(max_workers=9) as pool:
        list(
            pool.map(lambda t: ok(generate(api, t, prompt="Say one word.", settings=GREEDY)), crowd)
        )
    assert engine.stats.state_saves > saves_before
    follow_up = ok(
        generate(
            api,
            user_token,
            prompt="And about eagles?",
            conversation_id=first["conversation_id"],
            settings=GREEDY,
        )
    )
    assert engine.stats.state_restores > restores_before
    assert follow_up["usage"]["cached_tokens"] >= first["usage"]["prompt_tokens"]
    # The restored state answers as a cold run of the same prompt does...
    conversation = [
        {"role": "user", "content": "Tell me about owls."},
        {"role": "assistant", "content": first["response"]},
        {"role": "user", "content": "And about eagles?"},
    ]
    stranger = api.user_token()
    restores = engine.stats.state_restores
    cold = ok(generate(api, stranger, messages=conversation, settings=GREEDY))
    # ...word for word at first. Not to the end: llama.cpp's kernels depend on the batch's
    # shape, so a prompt read cold and one restored then continued round differently, and
    # greedy decoding may part after a few dozen tokens (on an AMD EPYC, after 25). A
    # broken restore parts at once.
    pairs = list(zip(cold["response"], follow_up["response"], strict=False))
    same = next((n for n, (a, b) in enumerate(pairs) if a != b), len(pairs))
    assert same >= 40, (cold["response"], follow_up["response"])
    # ...and that cold run got nothing of the owner's saved state: only the shared template.
    assert engine.stats.state_restores == restores
    assert cold["usage"]["cached_tokens"] < first["usage"]["prompt_tokens"] - 10


def test_engine_deadline_ends_a_generation(api: ModelApi) -> None:
    backend = api.backend

    async def run() -> Finished:
        prompt = await backend.chat_prompt([ChatMessage("user", "Write a long story.")])
        handle = backend.stream(
            prompt, SamplingParams(temperature=0.8, max_tokens=500, seed=1), owner="t", timeout=0.5
        )
        async for event in handle.events():
            if isinstance(event, Finished):
                return event
        raise AssertionError("no Finished event")

    finished = asyncio.run(asyncio.wait_for(run(), 30))
    assert finished.finish_reason == "timeout"
    assert finished.completion_tokens < 500


def test_a_bad_job_fails_alone_and_the_engine_lives_on(api: ModelApi, user_token: str) -> None:
    engine = api.backend.engine

    async def bad() -> Failed | Finished | None:
        handle = engine.submit(
            [engine.model.n_vocab + 5],
            SamplingParams(temperature=0, max_tokens=4),
            owner="test",
            timeout=30,
        )
        async for event in handle.events():
            if isinstance(event, Failed | Finished):
                return event
        return None

    outcome = asyncio.run(bad())
    assert isinstance(outcome, Failed)
    assert engine.is_running
    assert ok(generate(api, user_token, prompt="Still there?", settings=GREEDY))["response"]


def test_shutdown_ends_running_generations_cleanly(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    app = create_app(make_settings(database_url, tmp_path))
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url, timeout=60) as client:
        token = Api(base_url=server.base_url, app=app, database_url=database_url).user_token()
        engine = app.state.llm.registry.default.engine

        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [
                pool.submit(
                    generate,
                    client,
                    token,
                    prompt="Write a long essay.",
                    settings={"max_tokens": 500},
                )
                for _ in range(3)
            ]
            while engine.busy_slots < 1:
                time.sleep(0.01)
            engine.stop()
            statuses = [f.result().status_code for f in futures]
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    assert not engine.is_running


def test_one_owner_with_more_conversations_than_slots_keeps_each_cache(
    api: ModelApi, user_token: str
) -> None:
    """A gateway's service account holds all of its users' conversations: a slot taken by
    another conversation of the same owner keeps the first one's cache in the store."""
    engine = api.backend.engine
    settings = {"temperature": 0, "max_tokens": 8}
    firsts = [
        ok(
            generate(
                api, user_token, prompt=f"Conversation {n}: name a {topic}.", settings=settings
            )
        )
        for n, topic in enumerate(
            ["fruit", "river", "bird", "colour", "tree", "city", "planet", "metal", "song", "game"]
        )
    ]
    assert len(firsts) > engine.parallel
    restores = engine.stats.state_restores
    again = ok(
        generate(
            api,
            user_token,
            prompt="And another one?",
            conversation_id=firsts[0]["conversation_id"],
            settings=settings,
        )
    )
    assert engine.stats.state_restores > restores
    # The whole first turn came from the saved cache, not only the template's start.
    assert again["usage"]["cached_tokens"] >= firsts[0]["usage"]["prompt_tokens"]


async def first_token_at(handle: Any, loop: asyncio.AbstractEventLoop) -> float:
    first = math.inf
    async for event in handle.events():
        if isinstance(event, TokenDelta) and first == math.inf:
            first = loop.time()
        if isinstance(event, Finished | Failed):
            break
    return first


def test_an_idle_engine_starts_a_burst_in_one_step(api: ModelApi) -> None:
    """The second request of a burst arrives 10 ms after the first; the engine, idle, waits
    for it (LLM_BURST_WAIT_MS, widened here to 0.5 s; 30 ms in all at most), so both start
    in the same step: their first tokens come in one hand-off to the event loop. Without
    the wait, the first request's prompt step would start alone, at once. (Short prompts
    share a step; longer ones are read in turn, see the next test: that limit is lifted
    here.)"""
    engine = api.backend.engine
    saved = engine.gather_seconds, engine.prefill_group_tokens
    engine.gather_seconds = 0.5  # generous: the test is about batching, not timing
    engine.prefill_group_tokens = engine.prefill_chunk

    async def burst() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        params = SamplingParams(temperature=0, max_tokens=4)
        backend = api.backend
        sea = await backend.chat_prompt([ChatMessage("user", "Tell me about the sea.")])
        sky = await backend.chat_prompt([ChatMessage("user", "Tell me about the sky.")])
        prompt_a, prompt_b = list(sea.tokens), list(sky.tokens)
        a = engine.submit(prompt_a, params, owner="burst-a", timeout=60)
        waiting_a = asyncio.create_task(first_token_at(a, loop))
        await asyncio.sleep(0.01)
        b = engine.submit(prompt_b, params, owner="burst-b", timeout=60)
        waiting_b = asyncio.create_task(first_token_at(b, loop))
        return await waiting_a, await waiting_b

    try:
        first_a, first_b = asyncio.run(burst())
    finally:
        engine.gather_seconds, engine.prefill_group_tokens = saved
    assert math.isfinite(first_a)
    assert abs(first_a - first_b) < 0.005


def test_prompts_that_arrive_together_are_read_in_turn(api: ModelApi) -> None:
    """Four requests reach an idle engine together. Reading a prompt is compute-bound, so
    reading all four in one step would give each its first token when the last prompt is
    read; read one after another, in arrival order, the first gets its token first and the
    median request waits half as long."""
    engine = api.backend.engine
    saved = engine.gather_seconds
    engine.gather_seconds = 0.5  # all four are in slots before the first step
    topics = ["the sea", "the sky", "a mountain", "a forest"]

    async def together() -> list[float]:
        loop = asyncio.get_running_loop()
        params = SamplingParams(temperature=0, max_tokens=2)
        handles = []
        for index, topic in enumerate(topics):
            message = ChatMessage("user", f"Write three sentences about {topic}, please.")
            prompt = await api.backend.chat_prompt([message])
            handles.append(
                engine.submit(list(prompt.tokens), params, owner=f"turn-{index}", timeout=60)
            )
        return list(await asyncio.gather(*(first_token_at(handle, loop) for handle in handles)))

    try:
        firsts = asyncio.run(together())
    finally:
        engine.gather_seconds = saved
    assert all(map(math.isfinite, firsts))
    assert firsts == sorted(firsts)
    assert firsts[0] < firsts[-1] - 0.005  # not one step for all


def test_metrics_report_the_engines_steps_and_its_time_between_decodes(
    api: ModelApi, user_token: str
) -> None:
    ok(generate(api, user_token, prompt="Count to five.", settings=GREEDY))
    with api.client() as client:
        text = client.get("/metrics").text
    values = {
        line.split("{", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llm_engine_")
    }
    assert values["llm_engine_steps_total"] > 0
    assert values["llm_engine_decode_seconds_total"] > 0
    # The engine's own work between decodes is a small share of its time.
    assert values["llm_engine_between_decodes_seconds_total"] > 0
    assert (
        values["llm_engine_between_decodes_seconds_total"]
        < values["llm_engine_decode_seconds_total"]
    )
