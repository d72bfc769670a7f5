"""Pools side by side on one input: counts, FLOPs, round-robin latency, memory, compile time.

``SideBySide(pools, build, x, setting).run()`` builds every pool (``build(pool)``), gives the
variants of one operator the same weights, probes each once (a pool that fails becomes a
record, not a crash) and measures the rest together: latencies are timed round-robin
(``time_interleaved``) so that their ratios to the baseline are fair on a shared machine.
It returns ``Record``s (pool, metric, value, unit, n, extra columns); a suite makes rows of them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from ..errors import UsageError, one_line
from ..pools.base import count_parameters
from ..registry import parse_spec
from .flops import module_flops
from .memory import cuda_peak, tensor_memory
from .timing import time_interleaved

METRIC_DOC = {
    "forward_retained_bytes": "bytes of the tensor storages the training-mode forward allocated "
                              "that are still alive when it returns (its output and everything "
                              "kept for the backward, autograd-saved or held by a custom "
                              "Function); input and parameters excluded; counted by a dispatch "
                              "mode (TensorMemoryTracker), kernel scratch memory not seen",
    "fwdbwd_peak_tensor_bytes": "peak bytes of live tensor storages allocated during one "
                                "forward+backward (gradients included), same tracker",
    "cuda_peak_allocated_bytes": "torch.cuda.max_memory_allocated over one forward+backward",
    "cuda_peak_increase_bytes": "cuda_peak_allocated_bytes minus the bytes allocated before",
}


class Record(NamedTuple):
    pool: str
    metric: str
    value: float | None
    unit: str
    n: int | None
    extra: dict


@dataclass(frozen=True)
class Setting:
    """How a set of pools is measured; ``input_grad``: the backward also computes the input's
    gradient (layer level; a model's input needs none)."""

    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    input_grad: bool
    compiled: bool
    repeats: int
    warmup: int
    clock: str
    seed: int
    baseline: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")


def bench_input(shape, setting: Setting, uniform: bool) -> torch.Tensor:
    """The input every pool sees: N(0, 1) (``uniform``: U(0, 1), an image), seeded."""
    gen = torch.Generator().manual_seed(setting.seed)
    x = torch.rand(tuple(shape), generator=gen) if uniform else torch.randn(tuple(shape), generator=gen)
    x = x.to(device=setting.device, dtype=setting.dtype)
    return x.contiguous(memory_format=torch.channels_last) if setting.channels_last else x.contiguous()


@dataclass
class _Case:
    """One pool: its module, the callable timed, and what was learnt about it."""

    pool: str
    module: torch.nn.Module | None
    problem: tuple[str, str] | None = None    # (metric "error" | "unsupported", message)
    runner: Callable | None = None            # the module, or torch.compile(module)
    grad_out: torch.Tensor | None = None
    out_shape: tuple[int, ...] | None = None
    first_call: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.runner = self.module
        modules = list(self.module.modules()) if self.module is not None else []
        self.aux_modules = [m for m in modules if callable(getattr(m, "auxiliary_losses", None))]
        self.params = [p for p in self.module.parameters() if p.requires_grad] if self.module is not None else []


class SideBySide:
    def __init__(self, pools: list[str], build: Callable[[str], torch.nn.Module], x: torch.Tensor,
                 setting: Setting, log: Callable[[str], None] | None = None):
        self.pools, self.build, self.x, self.s = pools, build, x, setting
        self.log = log or (lambda msg: None)
        self.cuda = setting.device.type == "cuda"
        self.records: dict[str, list[Record]] = {p: [] for p in pools}

    def add(self, case: _Case, metric: str, value, unit: str, n: int | None = None, **extra) -> None:
        self.records[case.pool].append(Record(case.pool, metric, value, unit, n, extra))

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.s.device)

    # --- the callables -------------------------------------------------------------------------

    def fwd(self, case: _Case):
        runner, sync, x = case.runner, self.sync, self.x

        def fn():
            case.module.eval()
            with torch.no_grad():
                y = runner(x)
            sync()
            return y
        return fn

    def fwdbwd(self, case: _Case, forward: Callable | None = None):
        """Training mode, loss ``(y * g).sum()`` plus auxiliary losses, gradients of every
        parameter (and of the input with ``input_grad``); ``forward`` replaces the runner."""
        runner, sync, x = forward or case.runner, self.sync, self.x
        input_grad, params, aux_modules = self.s.input_grad, case.params, case.aux_modules

        def fn():
            case.module.train()
            xx = x.detach().requires_grad_() if input_grad else x
            y = runner(xx)
            loss = (y * case.grad_out).sum()
            for m in aux_modules:
                for weight, value in m.auxiliary_losses().values():
                    loss = loss + weight * value
            inputs = ([xx] if input_grad else []) + params
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
            sync()
            return grads
        return fn

    # --- measuring ------------------------------------------------------------------------------

    def run(self, what: str = "") -> list[Record]:
        s = self.s
        cases: list[_Case] = []
        for pool in self.pools:
            try:
                cases.append(_Case(pool, self.build(pool)))
            except Exception as exc:  # noqa: BLE001 - an operator that cannot be built here
                cases.append(_Case(pool, None, self._classify(exc, "build")))
        ok = [c for c in cases if c.problem is None]
        _share_weights(ok)
        for case in ok:
            self._probe(case)
        ok = [c for c in cases if c.problem is None]
        gen = torch.Generator().manual_seed(s.seed + 1)
        for case in ok:
            case.grad_out = torch.randn(case.out_shape, generator=gen).to(s.device, s.dtype)
        if not s.compiled:
            for case in ok:
                params, buffers = count_parameters(case.module)
                self.add(case, "params", params, "count")
                self.add(case, "buffers", buffers, "count")
                self._flops(case)
        self._latency(ok, cases, what)
        for case in ok:
            if case.problem is None:
                self._memory(case, eager=not s.compiled)
        for case in cases:
            if case.problem is not None:
                metric, message = case.problem
                if metric == "error":
                    self.add(case, "error", None, "", error=message)
                else:
                    self.add(case, "unsupported", None, "", note=message)
        return [r for case in cases for r in self.records[case.pool]]

    def _latency(self, ok: list[_Case], cases: list[_Case], what: str) -> None:
        """All pools round-robin, forward then forward+backward; ratios to the baseline."""
        s = self.s
        stats = {}
        for phase, make in (("fwd", self.fwd), ("fwdbwd", self.fwdbwd)):
            live = [c for c in ok if c.problem is None]
            if not live:
                break
            self.log(f"{what}: timing {phase} of {len(live)} pools ({s.repeats} rounds)")
            fns = {c.pool: make(c) for c in live}
            stats[phase] = time_interleaved(fns, repeats=s.repeats, warmup=s.warmup, clock=s.clock)
        base = s.baseline
        for phase, by_pool in stats.items():
            for pool, st in by_pool.items():
                case = next(c for c in cases if c.pool == pool)
                self.add(case, f"latency_{phase}", 1e3 * st.median, "ms", st.n,
                         iqr_ms=1e3 * st.iqr, min_ms=1e3 * st.min)
                if base in by_pool and by_pool[base].median > 0:
                    self.add(case, f"latency_{phase}_ratio", st.median / by_pool[base].median,
                             f"x {base}", st.n, ratio_of_min=st.min / by_pool[base].min
                             if by_pool[base].min > 0 else None)
                if s.compiled and phase in case.first_call:
                    self.add(case, f"compile_time_{phase}", case.first_call[phase] - st.median, "s",
                             first_call_s=case.first_call[phase], compile_cache="off")

    def _classify(self, exc: BaseException, stage: str) -> tuple[str, str]:
        if isinstance(exc, UsageError):
            raise exc
        msg = one_line(exc, with_type=True)
        if self.s.dtype != torch.float32 and stage != "build":
            return "unsupported", f"{self.s.dtype_name} not supported ({stage}): {msg}"
        return "error", f"{stage} failed: {msg}"

    def _probe(self, case: _Case) -> None:
        """One eager forward and forward+backward, so that a failing operator becomes a record
        (``unsupported`` for a dtype other than float32, else ``error``), not a crash; the
        output shape gives the backward's gradient. Compiled settings then compile and time the
        first calls (a failure: an ``error`` record with the one-line reason)."""
        try:
            y = self.fwd(case)()
            case.out_shape = tuple(y.shape)
            case.grad_out = torch.zeros(case.out_shape, device=self.s.device, dtype=self.s.dtype)
            stage = "forward+backward"
            self.fwdbwd(case)()
        except Exception as exc:  # noqa: BLE001
            case.problem = self._classify(exc, "forward" if case.grad_out is None else stage)
            return
        if not self.s.compiled:
            return
        stage = "fwd"
        try:
            case.runner = torch.compile(case.module, dynamic=False)
            for stage, make in (("fwd", self.fwd), ("fwdbwd", self.fwdbwd)):
                fn = make(case)
                self.sync()
                t0 = time.perf_counter()
                fn()
                case.first_call[stage] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            case.problem = ("error", f"torch.compile failed ({stage}): {one_line(exc, with_type=True)}")

    def _flops(self, case: _Case) -> None:
        try:
            count = module_flops(case.module, self.x)
        except Exception as exc:  # noqa: BLE001 - FLOPs are not worth losing the timings for
            self.add(case, "flops_total", None, "FLOP",
                     error=f"FLOP count failed: {one_line(exc, with_type=True)}")
            return
        missing = ", ".join(f"{k} x{v}" for k, v in sorted(count.unmodelled.items()))
        self.add(case, "flops_counted", count.counted, "FLOP", counter="torch FlopCounterMode")
        self.add(case, "flops_total", count.total, "FLOP", flops_unmodelled_ops=missing,
                 counter="FlopCounterMode + poolbench formulas")

    def _memory(self, case: _Case, eager: bool) -> None:
        try:
            if eager:
                mem = tensor_memory(case.runner, lambda forward: self.fwdbwd(case, forward))
                for metric in ("forward_retained_bytes", "fwdbwd_peak_tensor_bytes"):
                    self.add(case, metric, mem[metric], "bytes", memory_metric=METRIC_DOC[metric])
            if self.cuda:
                peak, before = cuda_peak(self.fwdbwd(case), self.s.device)
                self.add(case, "cuda_peak_allocated_bytes", peak, "bytes",
                         memory_metric=METRIC_DOC["cuda_peak_allocated_bytes"])
                self.add(case, "cuda_peak_increase_bytes", peak - before, "bytes",
                         memory_metric=METRIC_DOC["cuda_peak_increase_bytes"])
        except Exception as exc:  # noqa: BLE001
            self.add(case, "forward_retained_bytes", None, "bytes",
                     error=f"memory measure failed: {one_line(exc, with_type=True)}")


def _share_weights(cases: list[_Case]) -> None:
    """Variants of one operator (lift and lift:impl=reference) get the same weights."""
    first: dict[str, dict] = {}
    for case in cases:
        name = parse_spec(case.pool)[0]
        state = case.module.state_dict()
        if name not in first:
            first[name] = state
            continue
        ref = first[name]
        if ref.keys() == state.keys() and all(ref[k].shape == state[k].shape for k in ref):
            case.module.load_state_dict(ref)
