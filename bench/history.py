"""History fitting: the time to prepare one chat turn (sanitize the new messages, fit the
stored history into the context, render and tokenize the prompt) against the length of the
stored conversation, on the bundled SmolLM2 model loaded as the app loads it (the app's
backend factory and model registry), in this process, without HTTP or the database.

For each size, a fresh `PromptPreparer` prepares a first turn (nothing of the history
cleaned or measured yet) and then `--repeats` repeat turns (the history's cleaned texts and
token counts cached, as on every later turn of a conversation); the repeat figure is their
median. `--before REV` also times `src/modules/llm/turns/preparation.py` as it was at git
revision REV (loaded into a module of its own, same backend, same process): a first turn
and `--before-repeats` repeat turns (default none: before this change a repeat turn cost
what a first one did, minutes at 2,000 messages), and says whether both built the same
prompt.

    .venv/bin/python bench/history.py [--sizes 50,500,1000,2000] [--context 2048]
        [--max-tokens 256] [--repeats 5] [--before REV] [--before-repeats 0]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from modules.config import Settings
from modules.llm.inference import Backend, ChatMessage, ModelRegistry
from modules.llm.module import local_backend_factory, model_specs
from modules.llm.turns import PromptPreparer
from modules.llm.turns.types import InputMessage

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the model reads every stored message of a conversation before it answers and a long "
    "history costs tokens time and memory so the service keeps only the newest turns that "
    "fit into its context window while the oldest ones stay stored in the database for "
    "later reading by the user who wrote them with care about ships harbours weather tides"
).split()
SYSTEM = "You are a helpful assistant. Answer briefly."
QUESTION = "And what did we decide about the harbour?"


def conversation(messages: int, seed: int = 7) -> list[ChatMessage]:
    """Distinct texts (each is cleaned and measured once): questions of about 40 words,
    answers of about 90."""
    rng = random.Random(seed)
    history = []
    for index in range(messages):
        role = "user" if index % 2 == 0 else "assistant"
        words = rng.choices(
            WORDS, k=rng.randint(30, 50) if role == "user" else rng.randint(70, 110)
        )
        history.append(ChatMessage(role, f"({index}) " + " ".join(words) + "."))
    return history


def preparation_at(revision: str) -> ModuleType:
    """preparation.py as it was at a git revision, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/modules/llm/turns/preparation.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "preparation_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:preparation.py", "exec"), module.__dict__)
    return module


async def turn_seconds(
    preparer: Any, backend: Backend, history: list[ChatMessage], max_tokens: int
) -> tuple[float, Any]:
    started = time.perf_counter()
    prepared = await preparer.chat(
        backend,
        [InputMessage("user", QUESTION, "prompt")],
        system=SYSTEM,
        history=history,
        max_tokens=max_tokens,
        owner="bench",
    )
    return time.perf_counter() - started, prepared


async def measure(
    preparer: Any, backend: Backend, history: list[ChatMessage], max_tokens: int, repeats: int
) -> tuple[float, float, Any]:
    first, prepared = await turn_seconds(preparer, backend, history, max_tokens)
    again = [
        (await turn_seconds(preparer, backend, history, max_tokens))[0] for _ in range(repeats)
    ]
    return first, statistics.median(again) if again else float("nan"), prepared


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:,.1f} ms"


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            llm_models="",
            llm_context_size=args.context,
            llm_parallel=1,
            llm_default_system_prompt="",
        )
        registry = ModelRegistry(model_specs(settings), local_backend_factory(settings))
        await registry.load_all()
        backend = registry.get()
        before = preparation_at(args.before) if args.before else None
        print(
            f"model: {registry.default_alias}, context {backend.context_size} tokens, "
            f"max_tokens {args.max_tokens}, {args.repeats} repeat turns (median)"
            + (f", before = {args.before}" if before else "")
        )
        rows = []
        try:
            for size in args.sizes:
                history = conversation(size)
                row: dict[str, Any] = {"size": size, "chars": sum(len(m.content) for m in history)}
                if before is not None:
                    old = before.PromptPreparer(settings)
                    row["before"] = await measure(
                        old, backend, history, args.max_tokens, args.before_repeats
                    )
                    print(f"  before, {size} messages: first {ms(row['before'][0])}", flush=True)
                row["after"] = await measure(
                    PromptPreparer(settings), backend, history, args.max_tokens, args.repeats
                )
                print(f"  after, {size} messages: first {ms(row['after'][0])}", flush=True)
                rows.append(row)
        finally:
            await registry.stop_all()
    print()
    head = "| stored messages | history chars |"
    rule = "|---:|---:|"
    if before is not None:
        head += " before: first turn | before: repeat turn |"
        rule += "---:|---:|"
    head += " after: first turn | after: repeat turn | prompt tokens | turns dropped |"
    rule += "---:|---:|---:|---:|"
    if before is not None:
        head += " same prompt |"
        rule += ":---:|"
    print(head)
    print(rule)
    for row in rows:
        first, again, prepared = row["after"]
        line = f"| {row['size']:,} | {row['chars']:,} |"
        if before is not None:
            old_first, old_again, old_prepared = row["before"]
            line += f" {ms(old_first)} | {ms(old_again)} |"
        line += (
            f" {ms(first)} | {ms(again)} | {prepared.prompt.token_count:,} |"
            f" {prepared.history_turns_dropped:,} |"
        )
        if before is not None:
            same = (
                old_prepared.prompt.tokens == prepared.prompt.tokens
                and old_prepared.history_turns_dropped == prepared.history_turns_dropped
            )
            line += f" {'yes' if same else 'NO'} |"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[50, 500, 1000, 2000]
    )
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", help="a git revision whose preparation.py to time too")
    parser.add_argument("--before-repeats", type=int, default=0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
