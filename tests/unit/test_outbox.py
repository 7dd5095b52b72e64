"""The engine's outbox: streamed text reaches the event loop at most every interval, while
a stream's first text and its end go at once; what waited goes as one delta per stream."""

from __future__ import annotations

import asyncio
import time

from modules.llm.inference import Finished, SamplingParams, TokenDelta
from modules.llm.inference.events import Event, TokenLogprob
from modules.llm.inference.llamacpp.jobs import GenerationJob, Outbox


def job_on(loop: asyncio.AbstractEventLoop, outbox: Outbox) -> GenerationJob:
    return GenerationJob(
        prompt_tokens=[1],
        params=SamplingParams(temperature=0, max_tokens=4),
        owner="someone",
        deadline=time.monotonic() + 60,
        loop=loop,
        outbox=outbox,
    )


async def delivered(job: GenerationJob) -> list[Event]:
    await asyncio.sleep(0)  # the hand-off is a callback on this loop
    events = []
    while not job.events.empty():
        events.append(job.events.get_nowait())
    return events


async def test_text_waits_for_the_interval_but_the_first_text_and_the_end_do_not() -> None:
    outbox = Outbox(interval=3600)
    job = job_on(asyncio.get_running_loop(), outbox)

    job.emit(TokenDelta("Once"))
    outbox.flush_due()
    assert await delivered(job) == [TokenDelta("Once")]

    job.emit(TokenDelta(" upon"))
    outbox.flush_due()
    job.emit(TokenDelta(" a time"))
    outbox.flush_due()
    assert await delivered(job) == []  # held: the interval has not passed

    end = Finished("stop", prompt_tokens=1, completion_tokens=3)
    job.emit(end)
    outbox.flush_due()
    # What waited goes as one delta: one SSE write and one client read.
    assert await delivered(job) == [TokenDelta(" upon a time"), end]


async def test_with_no_interval_every_step_hands_off() -> None:
    outbox = Outbox(interval=0)
    job = job_on(asyncio.get_running_loop(), outbox)
    for text in ("a", "b", "c"):
        job.emit(TokenDelta(text))
        outbox.flush_due()
        assert await delivered(job) == [TokenDelta(text)]


async def test_flush_sends_whatever_waits() -> None:
    outbox = Outbox(interval=3600)
    job = job_on(asyncio.get_running_loop(), outbox)
    job.emit(TokenDelta("a"))
    outbox.flush_due()
    job.emit(TokenDelta("b"))
    outbox.flush()  # the engine going idle, or stopping
    assert await delivered(job) == [TokenDelta("a"), TokenDelta("b")]


async def test_each_stream_keeps_its_own_text_in_order() -> None:
    outbox = Outbox(interval=3600)
    loop = asyncio.get_running_loop()
    first, second = job_on(loop, outbox), job_on(loop, outbox)
    for job in (first, second):
        job.emit(TokenDelta("<"))
    outbox.flush_due()
    for text in ("a", "b"):
        first.emit(TokenDelta(text))
        second.emit(TokenDelta(text.upper()))
    end = Finished("length", prompt_tokens=1, completion_tokens=3)
    first.emit(end)
    outbox.flush_due()
    assert await delivered(first) == [TokenDelta("<"), TokenDelta("ab"), end]
    assert await delivered(second) == [TokenDelta("<"), TokenDelta("AB")]


def logprob(token: str) -> TokenLogprob:
    return TokenLogprob(token, -0.5, tuple(token.encode()))


async def test_each_choice_keeps_its_own_text_and_logprobs_in_order() -> None:
    outbox = Outbox(interval=3600)
    loop = asyncio.get_running_loop()
    job = GenerationJob(
        prompt_tokens=[1],
        params=SamplingParams(temperature=0, max_tokens=4, n=2, logprobs=True),
        owner="someone",
        deadline=time.monotonic() + 60,
        loop=loop,
        outbox=outbox,
    )
    job.emit(TokenDelta("<", 0, (logprob("<"),)))
    outbox.flush_due()
    for text in ("a", "b"):
        job.emit(TokenDelta(text, 0, (logprob(text),)))
        job.emit(TokenDelta(text.upper(), 1, (logprob(text.upper()),)))
    job.emit(TokenDelta("", 1, (logprob("!"),)))  # a token whose text is held back
    end = Finished("length", prompt_tokens=1, completion_tokens=5, choice_reasons=("length",) * 2)
    job.emit(end)
    outbox.flush_due()
    assert await delivered(job) == [
        TokenDelta("<", 0, (logprob("<"),)),
        TokenDelta("ab", 0, (logprob("a"), logprob("b"))),
        TokenDelta("AB", 1, (logprob("A"), logprob("B"), logprob("!"))),
        end,
    ]
