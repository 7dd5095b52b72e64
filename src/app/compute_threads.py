"""How llama.cpp's compute threads wait for each other: set for the process before llama.cpp
is loaded (OpenMP reads it once, when its library loads).

This build of llama.cpp runs a decode on an OpenMP team of LLM_THREADS threads that meet at
a barrier after every operation of the graph: a few hundred per decode. By default OpenMP
spins at a barrier (300,000 rounds, milliseconds) before it sleeps, and a finished team spins
the same way after the decode. On a machine whose cores are all busy (the event loop, the
preparation workers, other processes), the thread that spins holds a core that its partner
needs to reach the barrier, and every barrier costs up to a scheduler time slice: on the
2-core VM, a one-token decode that takes 10 ms took 0.4 to 3 s beside two busy processes,
and the other user's one-token generate took seconds at p99 under load (bench/README.md,
"Under load"). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) keeps that under 0.1 s, at the cost
of a wake-up per barrier: on a quiet 2-core machine one stream decoded 128 tokens in 3.2 s
instead of 1.3 s. So spinning stays the default (llama-server spins too), and `sleep` is the
choice for a machine the service shares with other busy work."""

from __future__ import annotations

import os
import sys
from typing import Literal

ThreadsWait = Literal["sleep", "spin"]
# OpenMP's own variables: an operator who set one has chosen, and keeps the choice.
OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def configure_thread_waiting(wait: ThreadsWait) -> bool:
    """Make llama.cpp's compute threads sleep (`sleep`) or spin (`spin`, OpenMP's default)
    while they wait. Takes effect only before llama.cpp is loaded (returns False after:
    call it first thing), and never over an OpenMP variable already set."""
    if "llama_cpp" in sys.modules:
        return False
    if wait == "sleep" and not any(name in os.environ for name in OPENMP_WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
