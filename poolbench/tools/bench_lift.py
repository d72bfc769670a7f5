"""Timing harness for LiftPool: ``poolbench bench lift [--threads N] [--repeats R]
[--shapes NxCxHxW,...] [--layouts nchw,cl] [--json PATH]``; with ``--train``, the training step
of the default backbone instead (``poolbench bench lift --train``).

Times the forward pass (eval mode, no grad) and forward+backward (training mode, the task-like
loss ``(y * g).sum()`` plus LiftPool's auxiliary losses, gradients of the input and of every
parameter) of ``lift`` (fast path), ``lift:impl=reference`` and ``max`` on the SAME tensors in
one run, with the thread count set explicitly. The callables are timed round-robin (one call of
each in turn, repeated), so that a load change on a shared machine hits all of them alike;
medians and minima are reported, and the ratios fast/reference and lift/max of both.
The timing is ``poolbench.measure``'s (``time_interleaved``), as in the efficiency suite.

``--train`` times one SGD step (forward, cross-entropy plus the auxiliary losses, backward,
optimizer step) of the default recipe's backbone (``TrainConfig()``: convnet, batch 32, 32x32
generated images, channels_last) with each pool, round-robin in one run, and prints the
lift/max ratio of the step: the cost of training with LiftPool over max pooling.
"""
from __future__ import annotations

import functools
import json
import math
import platform
from pathlib import Path
from typing import Callable

import click
import torch

from ..auxiliary import auxiliary_loss
from ..config import TrainConfig
from ..errors import UsageError
from ..measure import CLOCKS, time_interleaved
from ..pools import lift_native
from ..registry import get_pool, parse_spec
from ..training.loop import CLASSIFICATION, build_model, build_optimizer
from ._command import CONTEXT, check_output_path, check_positive, run_command

DEFAULT_SHAPES = ("32x64x56x56", "32x256x14x14")
DEFAULT_POOLS = ("lift", "lift:impl=reference", "max")
DEFAULT_TRAIN_POOLS = ("lift", "max")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"shape {text!r} must look like NxCxHxW, e.g. 32x64x56x56")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def make_cases(shape, layout: str, pools=DEFAULT_POOLS, dtype=torch.float32, seed: int = 0):
    """Callables (forward and forward+backward) of each pool on one shared input.

    Returns {(pool, pass): fn}. All LiftPool variants get the same weights."""
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    modules = {}
    state = None
    for spec in pools:
        torch.manual_seed(seed)
        m = get_pool(spec, c).to(dtype)
        if spec.startswith("lift"):
            if state is None:
                state = m.state_dict()
            else:
                m.load_state_dict(state)
        modules[spec] = m
    with torch.no_grad():
        out_shape = modules[pools[0]].eval()(x).shape
    g = torch.randn(out_shape, generator=gen, dtype=dtype)

    def forward(m):
        def fn():
            m.eval()
            with torch.no_grad():
                return m(x)
        return fn

    def forward_backward(m):
        params = [p for p in m.parameters() if p.requires_grad]

        def fn():
            m.train()
            xx = x.detach().requires_grad_()
            y = m(xx)
            loss = (y * g).sum() + auxiliary_loss(m)[0]
            return torch.autograd.grad(loss, [xx, *params])
        return fn

    cases = {}
    for spec, m in modules.items():
        cases[(spec, "fwd")] = forward(m)
        cases[(spec, "fwd+bwd")] = forward_backward(m)
    return cases


def run_benchmark(shapes=DEFAULT_SHAPES, layouts=("nchw", "cl"), threads: int = 1,
                  repeats: int = 15, warmup: int = 2, pools=DEFAULT_POOLS,
                  dtype=torch.float32, progress: Callable[[str], None] | None = None,
                  clock: str | None = None) -> list[dict]:
    """Rows {shape, layout, pass, pool, median_s, min_s, ...}, timed round-robin per shape,
    layout and pass, with ``threads`` intra-op threads (the previous setting is restored).
    ``clock`` defaults to "thread" for one thread (robust on a shared machine), else "wall"."""
    clock = clock or ("thread" if threads == 1 else "wall")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(shapes, layouts, threads, repeats, warmup, pools, dtype, progress, clock)
    finally:
        torch.set_num_threads(previous)


def _run(shapes, layouts, threads, repeats, warmup, pools, dtype, progress, clock):
    rows = []
    for shape in shapes:
        shape = parse_shape(shape) if isinstance(shape, str) else tuple(shape)
        for layout in layouts:
            cases = make_cases(shape, layout, pools, dtype)
            for pass_ in ("fwd", "fwd+bwd"):
                fns = {spec: cases[(spec, pass_)] for spec in pools}
                if progress:
                    progress(f"timing {'x'.join(map(str, shape))} {layout} {pass_} ...")
                stats = time_interleaved(fns, repeats=repeats, warmup=warmup, clock=clock)
                for spec, st in stats.items():
                    rows.append({"shape": "x".join(map(str, shape)), "layout": layout,
                                 "pass": pass_, "pool": spec, "threads": threads, "clock": clock,
                                 "dtype": str(dtype).replace("torch.", ""), **st.summary()})
    return rows


def train_step_cases(pools=DEFAULT_TRAIN_POOLS, batch_size: int | None = None, model: str | None = None,
                     seed: int = 0) -> dict:
    """{pool: one training step of the default recipe's backbone with that pool}, on one shared
    batch of 32x32 images (uniform, like the [0, 1] images the trainers see) and labels."""
    base = TrainConfig()
    batch = batch_size or base.batch_size
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    bundle = _Classes(10)
    y = torch.randint(0, bundle.num_classes, (batch,), generator=gen)
    steps = {}
    for spec in pools:
        cfg = TrainConfig(pool=spec, model=model or base.model, batch_size=batch)
        torch.manual_seed(seed)
        net = build_model(cfg, bundle).to(memory_format=torch.channels_last).train()
        opt = build_optimizer(net, cfg)

        def step(net=net, opt=opt, cfg=cfg):
            loss = CLASSIFICATION.loss(net(x), y, cfg) + auxiliary_loss(net)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps[spec] = step
    return steps


class _Classes:
    """What ``build_model`` needs of a data bundle."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def run_train_benchmark(pools=DEFAULT_TRAIN_POOLS, threads: int = 1, repeats: int = 10, warmup: int = 2,
                        clock: str | None = None, batch_size: int | None = None,
                        model: str | None = None, kernels: tuple[str, ...] = ()) -> dict:
    """{pool: TimingStats} of the training step, timed round-robin with ``threads`` threads.
    ``kernels``: other versions of ``lift_kernel.c``; each adds the step of every lift pool on
    that build, as ``"<pool> [<file name>]"``, beside the step on this checkout's."""
    clock = clock or ("thread" if threads == 1 else "wall")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        libs = {Path(source).name: _load(source) for source in kernels}
        steps = {}
        for spec, step in train_step_cases(pools, batch_size, model).items():
            steps[spec] = step
            if parse_spec(spec)[0] == "lift":   # each other build right after this one
                steps.update({f"{spec} [{name}]": functools.partial(_step_on, lib, step)
                              for name, lib in libs.items()})
        return time_interleaved(steps, repeats=repeats, warmup=warmup, clock=clock)
    finally:
        torch.set_num_threads(previous)


def _load(source: str):
    try:
        return lift_native.load(source)
    except RuntimeError as exc:   # the compiler's first error line
        raise UsageError(f"--kernel: {exc}; pass a lift_kernel.c that compiles") from exc


def _step_on(lib, step) -> None:
    with lift_native.using(lib):
        step()


def ratio_table(rows: list[dict], fast: str = "lift", ref: str = "lift:impl=reference",
                base: str = "max") -> list[dict]:
    """One line per (shape, layout, pass): medians (and minima) in ms and the ratios
    reference/fast (the fast path's speed-up) and lift/max (its cost over max pooling)."""
    keyed = {}
    for r in rows:
        keyed.setdefault((r["shape"], r["layout"], r["pass"]), {})[r["pool"]] = r
    out = []
    for (shape, layout, pass_), by in keyed.items():
        line = {"shape": shape, "layout": layout, "pass": pass_}
        for name, label in ((fast, "fast"), (ref, "reference"), (base, "max")):
            if name in by:
                line[f"{label}_ms"] = 1e3 * by[name]["median_s"]
                line[f"{label}_min_ms"] = 1e3 * by[name]["min_s"]
        if fast in by and ref in by:
            line["ref/fast"] = by[ref]["median_s"] / by[fast]["median_s"]
            line["ref/fast(min)"] = by[ref]["min_s"] / by[fast]["min_s"]
        if fast in by and base in by:
            line["lift/max"] = by[fast]["median_s"] / by[base]["median_s"]
            line["lift/max(min)"] = by[fast]["min_s"] / by[base]["min_s"]
        out.append(line)
    return out


def format_table(lines: list[dict]) -> str:
    cols = [("shape", "shape", "{}"), ("layout", "layout", "{}"), ("pass", "pass", "{}"),
            ("fast_ms", "fast ms", "{:.2f}"), ("reference_ms", "ref ms", "{:.2f}"),
            ("max_ms", "max ms", "{:.2f}"), ("ref/fast", "ref/fast", "{:.2f}x"),
            ("ref/fast(min)", "(min)", "{:.2f}x"), ("lift/max", "lift/max", "{:.2f}x"),
            ("lift/max(min)", "(min)", "{:.2f}x")]
    cols = [c for c in cols if any(c[0] in line for line in lines)]
    cells = [[c[1] for c in cols]]
    for line in lines:
        cells.append([c[2].format(line[c[0]]) if c[0] in line and not (
            isinstance(line[c[0]], float) and math.isnan(line[c[0]])) else "-" for c in cols])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    fmt = lambda row: "  ".join(v.rjust(w) for v, w in zip(row, widths))  # noqa: E731
    out = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(row) for row in cells[1:]]
    return "\n".join(out)


def parse_shapes(values) -> list[tuple[int, int, int, int]]:
    """``--shapes``, given once with a comma list or repeated."""
    texts = [t.strip() for v in values for t in v.split(",") if t.strip()]
    return [parse_shape(t) for t in texts or DEFAULT_SHAPES]


def parse_layouts(text: str) -> tuple[str, ...]:
    layouts = tuple(s.strip() for s in text.split(",") if s.strip())
    if not layouts or any(lay not in ("nchw", "cl") for lay in layouts):
        raise UsageError(f"--layouts takes nchw, cl or both as a comma list; got {text!r} (e.g. --layouts nchw,cl)")
    return layouts


def parse_pools(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return default
    pools = tuple(s.strip() for s in text.split(";") if s.strip())
    if not pools:
        raise UsageError(f"--pools names no pool; got {text!r} (e.g. --pools '{';'.join(default)}')")
    return pools


@click.command("lift", context_settings=CONTEXT, help=__doc__.split("\n\n")[0],
               short_help="Time LiftPool's fast path against its reference and max pooling.")
@click.option("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
@click.option("--repeats", type=int, default=15, help="timed rounds per case (default 15)")
@click.option("--warmup", type=int, default=2, help="untimed calls per callable first (default 2)")
@click.option("--shapes", multiple=True, metavar="NxCxHxW[,...]",
              help=f"input shapes NxCxHxW, a comma list or the option repeated "
                   f"(default {','.join(DEFAULT_SHAPES)})")
@click.option("--layouts", default="nchw,cl", help="comma list of nchw, cl (default both)")
@click.option("--pools", default=None, metavar="SPECS",
              help="';'-separated pool specs; the first is 'fast', the second 'reference', the third "
                   f"the baseline (default: {';'.join(DEFAULT_POOLS)}); with --train the last is the "
                   f"baseline (default: {';'.join(DEFAULT_TRAIN_POOLS)})")
@click.option("--clock", type=click.Choice(tuple(CLOCKS)), default=None,
              help="wall (perf_counter), thread (CPU time of this thread; the default with --threads 1, "
                   "robust on a shared machine) or process (CPU time, all threads); default: thread for "
                   "1 thread, else wall")
@click.option("--json", "json_path", metavar="PATH", default=None, help="also write the raw rows as JSON")
@click.option("--train", is_flag=True,
              help=f"time the training step of the default backbone with each pool instead "
                   f"(default pools: {';'.join(DEFAULT_TRAIN_POOLS)})")
@click.option("--kernel", "kernels", multiple=True, metavar="PATH",
              help="with --train: also time lift on this version of lift_kernel.c (e.g. from "
                   "git show REV:poolbench/pools/lift_kernel.c), side by side; repeatable")
def command(threads, repeats, warmup, shapes, layouts, pools, clock, json_path, train, kernels):
    check_positive("--threads", threads)
    check_positive("--repeats", repeats)
    check_positive("--warmup", warmup, minimum=0)
    check_output_path("--json", json_path)
    clock = clock or ("thread" if threads == 1 else "wall")
    if kernels and not train:
        raise UsageError("--kernel times the training step: add --train")
    for source in kernels:
        if not Path(source).is_file():
            raise UsageError(f"--kernel {source}: no such file; pass a lift_kernel.c (e.g. git show "
                             "REV:poolbench/pools/lift_kernel.c > old.c)")
    if train:
        _train(parse_pools(pools, DEFAULT_TRAIN_POOLS), threads, repeats, warmup, clock, json_path,
               kernels)
        return
    layouts = parse_layouts(layouts)
    pools = parse_pools(pools, DEFAULT_POOLS)
    shapes = parse_shapes(shapes)
    click.echo(f"poolbench bench lift: torch {torch.__version__}, threads={threads}, repeats={repeats}, "
               f"clock={clock}, float32, {platform.processor() or platform.machine()}")
    rows = run_benchmark(shapes, layouts, threads, repeats, warmup, pools,
                         progress=lambda m: click.echo(m, err=True), clock=clock)
    fast, ref, base = (pools + (None, None, None))[:3]
    click.echo(format_table(ratio_table(rows, fast, ref, base)))
    click.echo("medians (min in the '(min)' columns); ref/fast = speed-up of the fast path; "
               "lift/max = fast LiftPool time over MaxPool2d time. On a shared machine compare the "
               "ratios, which are measured round-robin in one run.")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"threads": threads, "repeats": repeats, "clock": clock,
                       "torch": torch.__version__, "rows": rows}, fh, indent=2)


def _train(pools, threads, repeats, warmup, clock, json_path, kernels=()) -> None:
    click.echo(f"poolbench bench lift --train: torch {torch.__version__}, threads={threads}, "
               f"repeats={repeats}, clock={clock}, backbone {TrainConfig().model}, batch "
               f"{TrainConfig().batch_size}, 32x32, {platform.processor() or platform.machine()}")
    stats = run_train_benchmark(pools, threads, repeats, warmup, clock, kernels=kernels)
    base = pools[-1]
    for spec, st in stats.items():
        click.echo(f"{spec:>24s}  step {1e3 * st.median:8.1f} ms (min {1e3 * st.min:7.1f})  "
                   f"{spec}/{base} {st.median / stats[base].median:5.2f}x "
                   f"(min {st.min / stats[base].min:5.2f}x)")
    click.echo("medians of round-robin rounds (min in brackets); the ratios are the comparison on a "
               "shared machine.")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"threads": threads, "clock": clock, "torch": torch.__version__,
                       "train_step": {k: v.summary() for k, v in stats.items()}}, fh, indent=2)


def main(argv=None) -> int:
    """``poolbench bench lift`` on ``argv``: the exit code (2 for bad input, as one line)."""
    return run_command(command, argv, "poolbench bench lift", "bench_lift")
