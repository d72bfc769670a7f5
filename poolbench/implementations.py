"""Which implementation computed a result: a hook any operator reports through.

An operator with several implementations of one function (LiftPool: its native CPU kernel, the
fused torch path, the reference) calls :func:`record` each time one of them runs; the runner and
the training loop take a :func:`mark` before measuring and name, in the rows, the
implementations that ran since (``lift_impl = "native"``), because they agree only to float
rounding and their speed differs. Counts are per process and per call; code inside a compiled
graph is counted when the graph is traced, not when it runs.

    >>> m = mark()
    >>> record("mypool", "fast")
    >>> ran_since(m)
    {'mypool': 'fast'}
"""
from __future__ import annotations

from collections import Counter

# (operator, implementation) -> calls in this process; a process-wide tally is the point of
# the hook: the layer that runs a cell never sees the operators' calls
_CALLS: Counter = Counter()


def record(operator: str, implementation: str) -> None:
    """One call of ``operator`` computed by ``implementation``."""
    _CALLS[(operator, implementation)] += 1


def mark() -> Counter:
    """The tally now, to pass to :func:`ran_since` after the measurement."""
    return _CALLS.copy()


def ran_since(mark_: Counter) -> dict[str, str]:
    """Per operator, the implementations that ran since ``mark_``, sorted and joined by "+"."""
    out: dict[str, list[str]] = {}
    for (operator, implementation), n in sorted(_CALLS.items()):
        if n > mark_.get((operator, implementation), 0):
            out.setdefault(operator, []).append(implementation)
    return {op: "+".join(impls) for op, impls in out.items()}


def columns(ran: dict[str, str], prefix: str = "") -> dict[str, str]:
    """The row columns naming what ran: ``{prefix}{operator}_impl``."""
    return {f"{prefix}{op}_impl": impls for op, impls in ran.items()}


def column_names(frame_columns) -> set[str]:
    """The implementation columns among ``frame_columns`` (they say how, not what, was measured)."""
    return {c for c in frame_columns if str(c).endswith("_impl")}
