"""The local engine's grammar, logprobs and n > 1, on the bundled SmolLM2, through the
backend (its `stream()` is where requests it cannot serve are refused)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import pytest

from modules.llm.inference import ChatMessage, Failed, Finished, SamplingParams, TokenDelta
from modules.llm.inference.errors import UnsupportedRequestError
from modules.llm.inference.events import TokenLogprob
from modules.llm.inference.grammars import json_grammar
from modules.llm.inference.llamacpp import LlamaCppBackend
from modules.llm.inference.llamacpp.sampler import GrammarCache
from tests.model.conftest import ModelApi

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
PROMPTS = (
    "Describe a made-up person as JSON.",
    "Who is the main character of your favourite book? Answer in JSON.",
    "Give me a customer record.",
)


@dataclass
class Answer:
    texts: dict[int, str] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    finished: Finished | None = None

    @property
    def text(self) -> str:
        return self.texts.get(0, "")

    @property
    def done(self) -> Finished:
        assert self.finished is not None
        return self.finished


async def answer(
    backend: LlamaCppBackend,
    text: str,
    params: SamplingParams,
    *,
    owner: str = "structured",
    cancel_after_text: bool = False,
) -> Answer:
    prompt = await backend.chat_prompt([ChatMessage("user", text)])
    handle = backend.stream(prompt, params, owner=owner, timeout=240)
    result = Answer()
    async for event in handle.events():
        if isinstance(event, TokenDelta):
            result.texts[event.choice] = result.texts.get(event.choice, "") + event.text
            result.logprobs.setdefault(event.choice, []).extend(event.logprobs)
            if cancel_after_text and event.text:
                handle.cancel()  # the events go on up to Finished
        elif isinstance(event, Finished):
            result.finished = event
        elif isinstance(event, Failed):
            raise event.error
    return result


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 280))


def person_errors(value: Any) -> list[str]:
    """What is wrong with `value` as an instance of PERSON (jsonschema is not installed)."""
    if not isinstance(value, dict):
        return ["not an object"]
    errors = [f"missing {key}" for key in PERSON["required"] if key not in value]
    errors += [f"unexpected {key}" for key in value if key not in PERSON["properties"]]
    if not isinstance(value.get("name", ""), str):
        errors.append("name is not a string")
    age = value.get("age", 0)
    if not isinstance(age, int) or isinstance(age, bool):
        errors.append("age is not an integer")
    tags = value.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 3 or not all(isinstance(t, str) for t in tags):
        errors.append("tags is not a list of at most 3 strings")
    return errors


def assert_slots_match_their_caches(backend: LlamaCppBackend) -> None:
    """Once the engine is idle, every slot's tokens are exactly what its sequence holds."""
    engine = backend.engine
    deadline = time.monotonic() + 10
    while engine.busy_slots or engine.queue_depth:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for slot in engine.placement.slots:
        highest = llama_cpp.llama_memory_seq_pos_max(engine.model.memory, slot.seq_id)
        assert highest == len(slot.tokens) - 1, (slot.seq_id, highest, len(slot.tokens))


def test_a_json_schema_grammar_gives_json_of_the_schema_greedy_and_sampled(
    api: ModelApi,
) -> None:
    backend = api.backend
    grammar = json_grammar(PERSON, strict=True, field="response_format")
    runs = [
        SamplingParams(temperature=0, max_tokens=80, grammar=grammar),
        SamplingParams(temperature=0.8, seed=7, max_tokens=80, grammar=grammar),
        SamplingParams(temperature=1.2, seed=8, max_tokens=80, grammar=grammar),
    ]

    async def all_answers() -> list[Answer]:
        return list(
            await asyncio.gather(
                *(answer(backend, prompt, params) for prompt in PROMPTS for params in runs)
            )
        )

    whole = 0
    for result in run(all_answers()):
        if result.done.finish_reason in ("length", "timeout"):
            continue  # cut short (timeout: on a machine far busier than this test expects)
        assert result.done.finish_reason == "stop"
        assert person_errors(json.loads(result.text)) == [], result.text
        whole += 1
    assert whole >= len(PROMPTS) * len(runs) // 2
    assert_slots_match_their_caches(backend)


def test_a_grammar_llama_cpp_cannot_parse_is_refused_before_it_is_queued(api: ModelApi) -> None:
    backend = api.backend
    engine = backend.engine

    async def refused(grammar: str) -> UnsupportedRequestError:
        prompt = await backend.chat_prompt([ChatMessage("user", "Hello")])
        params = SamplingParams(temperature=0, max_tokens=4, grammar=grammar)
        with pytest.raises(UnsupportedRequestError) as caught:
            backend.stream(prompt, params, owner="grammar", timeout=30)
        return caught.value

    steps = engine.stats.steps
    for grammar in ('root ::= "unterminated', 'start ::= "a"', "root ::= undefined-rule"):
        error = run(refused(grammar))
        assert error.field == "response_format"
    # llama.cpp's parser never returns from an inverted bound: it is not handed one.
    started = time.monotonic()
    assert run(refused('root ::= "a"{3,2}')).field == "response_format"
    assert time.monotonic() - started < 5
    assert engine.stats.steps == steps  # nothing reached the engine
    assert engine.queue_depth == 0


def test_grammars_are_parsed_once_and_freed(api: ModelApi) -> None:
    cache = GrammarCache(api.backend.model.vocab, size=2)
    grammars = ['root ::= "a"', 'root ::= "b"', 'root ::= "c"']
    for grammar in grammars:
        cache.check(grammar)
        cache.check(grammar)
        cache.sampler(grammar).close()
    assert len(cache) == 2  # the least recently used one was freed
    with pytest.raises(UnsupportedRequestError):
        cache.check("root ::= (")
    assert len(cache) == 2  # remembered as unparsable, within the same bound
    cache.close()
    assert len(cache) == 0


def test_logprobs_come_with_every_token_once_in_order(api: ModelApi) -> None:
    backend = api.backend
    prompt = "Name three colours."
    plain = run(answer(backend, prompt, SamplingParams(temperature=0, max_tokens=24)))
    params = SamplingParams(temperature=0, max_tokens=24, logprobs=True, top_logprobs=5)
    result = run(answer(backend, prompt, params))
    # Logprobs change nothing of the answer.
    assert result.text == plain.text
    entries = result.logprobs[0]
    assert len(entries) == result.done.completion_tokens
    assert "".join(entry.token for entry in entries) == result.text
    assert b"".join(bytes(entry.bytes) for entry in entries).decode() == result.text
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top) == 5
        tops = [top.logprob for top in entry.top]
        assert tops == sorted(tops, reverse=True)
        assert all(top <= 0 for top in tops)
        # Greedy: the chosen token is the most likely one.
        assert entry.top[0].logprob == pytest.approx(entry.logprob)
        assert entry.token in [top.token for top in entry.top]

    none = run(answer(backend, prompt, SamplingParams(temperature=0, max_tokens=8, logprobs=True)))
    assert len(none.logprobs[0]) == none.done.completion_tokens
    assert all(entry.top == () for entry in none.logprobs[0])


def test_logprobs_of_tokens_cut_by_a_stop_string_are_still_sent(api: ModelApi) -> None:
    backend = api.backend
    prompt = "Name three colours."
    plain = run(answer(backend, prompt, SamplingParams(temperature=0, max_tokens=24)))
    words = plain.text.split()
    assert len(words) > 3
    stop = words[3]  # a word of the answer: its tokens are generated, its text cut
    params = SamplingParams(temperature=0, max_tokens=24, logprobs=True, stop=(stop,))
    result = run(answer(backend, prompt, params))
    assert result.done.finish_reason == "stop"
    assert stop not in result.text
    assert len(result.logprobs[0]) == result.done.completion_tokens
    joined = "".join(entry.token for entry in result.logprobs[0])
    assert joined.startswith(result.text)
    assert stop in joined


def test_two_greedy_choices_are_the_greedy_answer_and_the_prompt_counts_once(
    api: ModelApi,
) -> None:
    backend = api.backend
    prompt = "Tell me about lighthouses."
    alone = run(answer(backend, prompt, SamplingParams(temperature=0, max_tokens=32)))
    both = run(answer(backend, prompt, SamplingParams(temperature=0, max_tokens=32, n=2)))
    assert both.texts == {0: alone.text, 1: alone.text}
    assert both.done.prompt_tokens == alone.done.prompt_tokens
    assert both.done.completion_tokens == 2 * alone.done.completion_tokens
    assert both.done.choice_reasons == (alone.done.finish_reason,) * 2
    assert both.done.reasons == both.done.choice_reasons
    assert_slots_match_their_caches(backend)


def test_sampled_choices_differ_and_a_seed_reproduces_them(api: ModelApi) -> None:
    backend = api.backend

    def choices(seed: int) -> Sequence[str]:
        params = SamplingParams(temperature=1.2, seed=seed, max_tokens=16, n=2)
        result = run(answer(backend, "Invent a name for a cat.", params))
        assert len(result.done.choice_reasons) == 2
        return (result.texts[0], result.texts[1])

    seen = [choices(seed) for seed in (1, 2, 3)]
    assert all(first and second for first, second in seen)
    assert any(first != second for first, second in seen)
    assert choices(2) == seen[1]
    assert_slots_match_their_caches(backend)


def test_more_choices_than_slots_are_refused(api: ModelApi) -> None:
    backend = api.backend
    slots = backend.engine.parallel

    async def refused() -> UnsupportedRequestError:
        prompt = await backend.chat_prompt([ChatMessage("user", "Hello")])
        with pytest.raises(UnsupportedRequestError) as caught:
            backend.stream(prompt, SamplingParams(max_tokens=4, n=slots + 1), owner="n", timeout=30)
        return caught.value

    error = run(refused())
    assert error.field == "n"
    assert str(error) == f"n is {slots + 1}; this model serves at most {slots} choices at once"


def test_cancelling_a_job_of_two_choices_ends_both(api: ModelApi) -> None:
    backend = api.backend
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=400, n=2)
    result = run(answer(backend, "Write a long story.", params, cancel_after_text=True))
    assert result.done.choice_reasons == ("cancelled", "cancelled")
    assert result.done.completion_tokens < 400
    assert_slots_match_their_caches(backend)


def test_a_job_of_n_choices_waits_in_order_for_n_free_slots(api: ModelApi) -> None:
    """A job that needs every slot waits while one is busy, and the job behind it waits
    too (in order: it is never starved by smaller ones); both run once the slot is free."""
    backend = api.backend
    engine = backend.engine
    slots = engine.parallel

    async def scenario() -> tuple[Answer, Answer]:
        long_params = SamplingParams(temperature=0.8, seed=1, max_tokens=400)
        long_run = asyncio.create_task(
            answer(backend, "Write a long story.", long_params, cancel_after_text=False)
        )
        while engine.busy_slots == 0:
            await asyncio.sleep(0.01)
        everyone = asyncio.create_task(
            answer(backend, "Say hello.", SamplingParams(temperature=0, max_tokens=4, n=slots))
        )
        await asyncio.sleep(0.05)
        small = asyncio.create_task(
            answer(backend, "Say bye.", SamplingParams(temperature=0, max_tokens=4))
        )
        await asyncio.sleep(0.2)
        assert engine.queue_depth == 2  # both wait, though slots - 1 are free
        assert engine.busy_slots == 1
        for slot in engine.placement.slots:
            if slot.active is not None:
                slot.active.job.cancelled.set()
        await long_run
        return await everyone, await small

    everyone, small = run(scenario())
    assert len(everyone.texts) == slots
    assert len(set(everyone.texts.values())) == 1  # greedy: every choice the same
    assert everyone.done.choice_reasons == (everyone.done.finish_reason,) * slots
    assert small.done.finish_reason in ("length", "stop")
    assert_slots_match_their_caches(backend)


def test_a_deadline_ends_every_choice(api: ModelApi) -> None:
    backend = api.backend

    async def timed_out() -> Finished:
        prompt = await backend.chat_prompt([ChatMessage("user", "Write a long story.")])
        params = SamplingParams(temperature=0.8, seed=4, max_tokens=500, n=3)
        handle = backend.stream(prompt, params, owner="deadline", timeout=0.5)
        async for event in handle.events():
            if isinstance(event, Finished):
                return event
        raise AssertionError("no Finished event")

    finished = run(timed_out())
    assert finished.choice_reasons == ("timeout",) * 3
    assert finished.completion_tokens < 3 * 500
    assert_slots_match_their_caches(backend)


def test_a_failure_of_one_choice_ends_them_all(
    api: ModelApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = api.backend
    step = backend.engine.batch_step
    real = step._logprobs
    calls = 0

    class FailsOnTheFifth:
        def of(self, index: int, token: int, top: int) -> TokenLogprob:
            nonlocal calls
            calls += 1
            if calls == 5:
                raise RuntimeError("a sampling failure")
            return real.of(index, token, top)

    monkeypatch.setattr(step, "_logprobs", FailsOnTheFifth())
    params = SamplingParams(temperature=0, max_tokens=40, n=2, logprobs=True)
    with pytest.raises(RuntimeError, match="a sampling failure"):
        run(answer(backend, "Tell me about owls.", params, owner="failing"))
    monkeypatch.undo()
    assert_slots_match_their_caches(backend)
    # The engine goes on.
    after = run(answer(backend, "Say hi.", SamplingParams(temperature=0, max_tokens=4, n=2)))
    assert len(after.done.choice_reasons) == 2
