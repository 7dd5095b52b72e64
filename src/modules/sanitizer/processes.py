"""The sanitizer in worker processes: its rules are pure Python, so cleaning a long text in
a thread holds the GIL in turns with the event loop, and every other request's awaits wait
for it. In another process the cleaning runs beside the loop instead.

`ProcessSanitizer` has the Sanitizer's `clean` and runs texts of at least `threshold`
characters in a process pool (short ones cost less than the hop and stay here). The pool's
processes are spawned, not forked (the server holds threads and a model), and each keeps
one Sanitizer per configuration."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from modules.sanitizer.sanitizer import SanitizedText, Sanitizer

_workers_sanitizers: dict[tuple[int, tuple[str, ...]], Sanitizer] = {}


def _clean_in_worker(
    max_chars: int, control_tokens: tuple[str, ...], text: str, field_name: str, allow_empty: bool
) -> SanitizedText:
    key = (max_chars, control_tokens)
    sanitizer = _workers_sanitizers.get(key)
    if sanitizer is None:
        sanitizer = _workers_sanitizers[key] = Sanitizer(
            max_chars=max_chars, control_tokens=control_tokens
        )
    return sanitizer.clean(text, field_name=field_name, allow_empty=allow_empty)


# Long texts are cleaned at a lower CPU priority than the server's own process: on a busy
# machine the event loop and the engine go first, and the cleaning takes what is left.
WORKER_NICENESS = 10


def sanitizer_pool(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=os.nice,
        initargs=(WORKER_NICENESS,),
    )


class ProcessSanitizer(Sanitizer):
    """A Sanitizer whose long texts are cleaned in `pool` (blocking: call it from a worker
    thread, as the preparation does)."""

    def __init__(
        self,
        pool: ProcessPoolExecutor,
        *,
        threshold: int,
        max_chars: int = 32000,
        control_tokens: tuple[str, ...] = (),
    ) -> None:
        super().__init__(max_chars=max_chars, control_tokens=control_tokens)
        self._pool = pool
        self._threshold = threshold

    def clean(
        self, text: str, *, field_name: str = "message", allow_empty: bool = False
    ) -> SanitizedText:
        if len(text) < self._threshold or len(text) > self.max_chars:
            return super().clean(text, field_name=field_name, allow_empty=allow_empty)
        future = self._pool.submit(
            _clean_in_worker, self.max_chars, self.control_tokens, text, field_name, allow_empty
        )
        return future.result()
