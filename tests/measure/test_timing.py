"""The timers behind the benchmarks (``poolbench.measure.timing``): repeats, warm-up calls,
interleaved timing of several callables, the summary."""
from poolbench.measure import time_callable, time_interleaved


def test_time_callable_and_interleaved():
    calls = []
    st = time_callable(lambda: calls.append(1), repeats=5, warmup=2)
    assert st.n == 5 and len(calls) == 7 and st.min <= st.median
    res = time_interleaved({"a": lambda: None, "b": lambda: sum(range(1000))}, repeats=3,
                           warmup=0, clock="thread")
    assert set(res) == {"a", "b"} and all(r.n == 3 for r in res.values())
    assert set(st.summary()) >= {"median_s", "min_s", "n"}
