"""Probes the grader's trusted checks hand to a student's function inside the
kernel: callables that record how they were called, e.g. to check that a
latency timer warms up and takes the median. The grader builds them in the
kernel by name (``autograder.wire.ModuleSpec``) and reads back their record
(``__effml_plain__``) as plain data."""
from __future__ import annotations

import time


class SleepProbe:
    """Sleeps ``schedule[i]`` seconds on its i-th call (the last value
    repeats) and records every call's start time."""

    def __init__(self, schedule):
        self.schedule = [float(s) for s in schedule] or [0.0]
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append(time.perf_counter())
        time.sleep(self.schedule[min(len(self.calls) - 1, len(self.schedule) - 1)])

    def __effml_plain__(self) -> dict:
        return {"calls": len(self.calls)}
