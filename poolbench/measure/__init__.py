"""Measurement: timing, FLOPs, tensor memory, cold compiles, and pools measured side by side.

Library code with no notion of suites, cells or rows: the efficiency suite and the
``poolbench.tools.bench_lift`` script both stand on it.
"""
from __future__ import annotations

from .bench import METRIC_DOC, Record, Setting, SideBySide, bench_input
from .compile import cold_compile
from .flops import CONVENTION, FlopCount, count_flops, module_flops, op_flops
from .memory import TensorMemoryTracker, cuda_peak, tensor_memory
from .timing import CLOCKS, TimingStats, time_callable, time_interleaved

__all__ = [
    "CLOCKS", "CONVENTION", "METRIC_DOC", "FlopCount", "Record", "Setting", "SideBySide",
    "TensorMemoryTracker", "TimingStats", "bench_input", "cold_compile", "count_flops",
    "cuda_peak", "module_flops", "op_flops", "tensor_memory", "time_callable", "time_interleaved",
]
