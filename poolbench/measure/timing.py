"""Timing: repeated calls of callables, round-robin so that they can be compared in one run."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

CLOCKS = {
    # wall-clock time: what a user waits for; inflated when other processes share the cores
    "wall": time.perf_counter,
    # CPU time of the calling thread: with torch.set_num_threads(1) every op runs on it, so
    # this is the work done, robust to preemption by other processes on a shared machine
    "thread": time.thread_time,
    # CPU time of the whole process (all intra-op threads summed)
    "process": time.process_time,
}


@dataclass
class TimingStats:
    """Statistics of repeated calls, in seconds of the clock they were timed with."""

    times: list[float] = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def iqr(self) -> float:
        if self.n < 4:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    def summary(self) -> dict:
        return {"n": self.n, "median_s": self.median, "min_s": self.min, "mean_s": self.mean,
                "iqr_s": self.iqr}


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3,
                     min_time: float = 0.0, clock: str = "wall") -> dict[str, TimingStats]:
    """Time several callables round-robin: each round calls every one once, in order, so a
    change of load on the machine affects all alike (the way to compare them in one run).
    ``warmup`` untimed calls of each first; then ``repeats`` rounds, or more until ``min_time``
    wall seconds have passed. ``clock`` is "wall", "thread" (CPU time of this thread) or
    "process" (see CLOCKS). CPU work is synchronous; on CUDA each callable must synchronise."""
    now = CLOCKS[clock]
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start) < min_time:
        for name, fn in fns.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
        rounds += 1
    return {k: TimingStats(v) for k, v in times.items()}


def time_callable(fn: Callable[[], object], repeats: int = 20, warmup: int = 3,
                  min_time: float = 0.0, clock: str = "wall") -> TimingStats:
    """``time_interleaved`` of one callable."""
    return time_interleaved({"fn": fn}, repeats=repeats, warmup=warmup, min_time=min_time,
                            clock=clock)["fn"]
