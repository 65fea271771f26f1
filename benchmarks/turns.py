"""Taking turns with another benchmark process, so that both are timed on the same machine at once.

This VM's speed drifts by ±25 % within minutes, which moves the ratio of two runs timed one after the
other by as much as the change being measured. ``compare_trl.py`` therefore runs our process and TRL's
side by side and alternates them one step at a time: after each timed step a process stops itself
(``SIGSTOP``) and the coordinator continues the other one, so neither competes for the cores and the
drift falls on both alike. Outside ``compare_trl.py`` (``BENCH_TAKE_TURNS`` unset) nothing stops.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "BENCH_TAKE_TURNS"


def take_turn() -> None:
    """Stop this process until the coordinator continues it (nothing when not under compare_trl.py)."""
    if os.environ.get(ENV) == "1":
        os.kill(os.getpid(), signal.SIGSTOP)


class StepClock:
    """Seconds of each step, not counting the time stopped between steps: ``start()``, then ``step_done()``."""

    def __init__(self):
        self.step_s: list[float] = []
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def step_done(self) -> None:
        self.step_s.append(time.perf_counter() - self.started)
        take_turn()
        self.started = time.perf_counter()
