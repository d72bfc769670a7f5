"""Efficiency: parameters, buffers, FLOPs, latency and memory per pool, side by side in one run.

Cells: one per (target, dtype, memory format, compiled), where a target is a layer-level input
shape (the pool alone, e.g. 32x64x56x56) or the model level (the training config's backbone
with the pool swapped in, at its input size and batch). Every cell holds ALL the pools of the
run plus the baseline (``baseline``, default max), measured together by
``poolbench.measure.SideBySide``: latencies round-robin on the same input, in one process, so
that the ratios against the baseline are fair on a shared, noisy machine (``parallel = False``:
cells run one after another). Rows stay one per pool and metric.

Per pool and cell: ``params`` and ``buffers`` (counted, float buffers), ``flops_counted``
(torch's FlopCounterMode) and ``flops_total`` (plus poolbench's formulas, see
``poolbench.measure.flops.CONVENTION``), ``latency_fwd`` (eval mode, no grad) and
``latency_fwdbwd`` (training mode, loss ``(y * g).sum()`` plus auxiliary losses, gradients of
the input at layer level and of every parameter) as median ms with ``iqr_ms`` and ``min_ms``
columns, their ratios to the baseline, and memory: ``forward_retained_bytes`` and
``fwdbwd_peak_tensor_bytes`` on every device (``poolbench.measure.TensorMemoryTracker``) and,
on CUDA, ``cuda_peak_allocated_bytes`` and ``cuda_peak_increase_bytes``. Compiled cells (option
``compile``) time ``torch.compile(module)`` and record ``compile_time_fwd`` /
``compile_time_fwdbwd``: the first call's time minus the steady-state median.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import pandas as pd
import torch

from ..errors import PoolbenchError, UsageError, one_line
from ..measure import CLOCKS, CONVENTION, METRIC_DOC, Setting, SideBySide, bench_input, cold_compile
from ..models import create_model, model_info
from ..options import check_fields, option
from ..registry import canonical_spec, get_pool, parse_spec
from ..store import make_row
from . import register_suite
from .base import Suite, pool_columns

DEFAULT_LAYER_SHAPES = ("32x64x56x56", "32x256x14x14")
DEFAULT_DTYPES = ("float32", "bfloat16")
DEFAULT_FORMATS = ("nchw", "channels_last")
LEVELS = ("layer", "model")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16",
                  "half": "float16", "fp64": "float64", "double": "float64"}
_FORMAT_ALIASES = {"nchw": "nchw", "contiguous": "nchw", "contiguous_format": "nchw",
                   "channels_last": "channels_last", "cl": "channels_last", "nhwc": "channels_last"}
DATASET_CLASSES = {"shapes": 10, "cifar10": 10, "cifar100": 100}


# --- options -----------------------------------------------------------------------------------

def parse_shape(value) -> list[int]:
    """"32x64x56x56" or [32, 64, 56, 56] -> [32, 64, 56, 56] (N, C, H, W, all positive); a
    TOML list of sizes arrives comma-joined ("32,64,56,56") and is read alike."""
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").replace(",", "x").split("x")
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        shape = [int(p) for p in parts]
    except (TypeError, ValueError):
        shape = []
    if len(shape) != 4 or any(s < 1 for s in shape) or any(isinstance(p, bool) for p in parts):
        raise UsageError(f"layer shape {value!r} must look like NxCxHxW with positive sizes, "
                         "e.g. 32x64x56x56")
    return shape


def shape_text(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _dtype_name(value) -> str:
    key = str(value).strip().lower().replace("torch.", "")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {value!r}; choose from {', '.join(DTYPES)} (e.g. "
                         "--dtypes float32,bfloat16)")
    return key


def _format_name(value) -> str:
    key = str(value).strip().lower()
    if key not in _FORMAT_ALIASES:
        raise UsageError(f"unknown memory format {value!r}; choose nchw or channels_last "
                         "(e.g. --formats nchw,channels_last)")
    return _FORMAT_ALIASES[key]


@dataclass(frozen=True)
class EfficiencyOptions:
    """The ``[efficiency]`` preset table merged with the flags; normalised here (canonical pool
    specs, dtype and format names, NxCxHxW shape texts), so that cells and tables read them as
    they are. ``None``: taken from the run's first training config (or the backbone) instead."""

    baseline: str = option("max", "Pool the ratios divide by, timed in the same run.")
    pools: tuple[str, ...] = option((), "Extra pools measured beside the run's.")
    levels: tuple[str, ...] = option(LEVELS, "layer, model or both.")
    layer_shapes: tuple[str, ...] = option(DEFAULT_LAYER_SHAPES, "Layer-level input shapes NxCxHxW,...")
    model: str | None = option(None, "Backbone timed at the model level (default: the training "
                               "config's).")
    model_batch: int | None = option(None, "Model-level batch (default: the training batch size).", low=1)
    model_size: int | None = option(None, "Model-level input size (default: the backbone's).", low=1)
    num_classes: int | None = option(None, "Classes of the timed model (default: the dataset's).", low=1)
    dataset: str | None = option(None, "Dataset whose classes and size are used without training "
                                 "configs.")
    policy: str | None = option(None, "Pooling policy of the backbone without training configs.")
    dtypes: tuple[str, ...] = option(DEFAULT_DTYPES, "float32,bfloat16.")
    formats: tuple[str, ...] = option(DEFAULT_FORMATS, "nchw,channels_last.")
    compile: bool = option(False, "Also time torch.compile, with compile time.")
    repeats: int = option(20, "Timed repetitions per pool.", low=1)
    warmup: int = option(3, "Untimed repetitions before the timed ones.", low=0)
    threads: int = option(1, "torch threads while timing, recorded.", low=1)
    clock: str = option("wall", "wall, or CPU time of the thread/process (robust on a shared machine).",
                        choices=CLOCKS)
    device: str = option("cpu", "The device timed, in the cell.")
    seed: int | None = option(None, "Initialisation seed of the timed models (default: the training "
                              "seed).", low=0)
    table_setting: str | None = option(None, "The table shown: layer | model | NxCxHxW.")

    def __post_init__(self):
        check_fields(self, "efficiency")
        def put(name, value):
            object.__setattr__(self, name, value)

        put("baseline", canonical_spec(self.baseline or "max"))
        put("pools", tuple(canonical_spec(p) for p in self.pools))
        levels = tuple(str(v).strip().lower() for v in self.levels)
        bad = [v for v in levels if v not in LEVELS]
        if bad or not levels:
            raise UsageError(f"efficiency levels {bad or list(levels)!r} not understood; choose "
                             "layer, model or both (e.g. --levels layer,model)")
        put("levels", levels)
        put("layer_shapes", tuple(shape_text(parse_shape(s)) for s in self.layer_shapes))
        if "layer" in levels and not self.layer_shapes:
            raise UsageError("efficiency level layer needs a layer shape (e.g. --layer-shapes 32x64x56x56)")
        put("dtypes", tuple(dict.fromkeys(_dtype_name(d) for d in self.dtypes)))
        put("formats", tuple(dict.fromkeys(_format_name(f) for f in self.formats)))
        if not self.dtypes or not self.formats:
            raise UsageError("efficiency needs at least one dtype and one memory format")
        if self.clock == "thread" and self.threads != 1:
            raise UsageError("clock=thread measures the calling thread only: use it with "
                             "threads=1, or clock=wall / process")
        put("device", str(self.device or "cpu"))
        if self.table_setting:
            choice = str(self.table_setting).strip().lower()
            put("table_setting", choice if choice in LEVELS else shape_text(parse_shape(choice)))


# --- the suite ---------------------------------------------------------------------------------

class EfficiencySuite(Suite):
    """Parameters, buffers, FLOPs, latency and memory per pool, with ratios to a baseline."""

    name = "efficiency"
    title = "Efficiency"
    order = 60
    Options = EfficiencyOptions
    parallel = False      # a cell times its pools side by side: one process, one cell at a time

    def cells(self, train_configs: list, options: EfficiencyOptions) -> list[dict]:
        """One cell per (layer shape | model) x dtype x memory format (x compiled), each with
        every pool of the run plus the baseline."""
        o = options
        cfg = train_configs[0] if train_configs else None
        pools = [canonical_spec(c.pool) for c in train_configs] + list(o.pools) + [o.baseline]
        common = {
            "pools": list(dict.fromkeys(pools)), "baseline": o.baseline,
            "num_threads": o.threads, "repeats": o.repeats, "warmup": o.warmup, "clock": o.clock,
            "target_device": o.device,
            "seed": o.seed if o.seed is not None else (cfg.seed if cfg else 0),
        }
        targets: list[dict] = []
        if "layer" in o.levels:
            targets += [{"level": "layer", "shape": parse_shape(s)} for s in o.layer_shapes]
        if "model" in o.levels:
            targets.append(_model_target(o, cfg))
        compiled = [False, True] if o.compile else [False]
        return [{**t, "dtype": d, "memory_format": f, "compiled": c, **common}
                for c in compiled for t in targets for d in o.dtypes for f in o.formats]

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        device = torch.device(ctx.device)
        target = cell.get("target_device")
        if target and torch.device(target).type != device.type:
            raise UsageError(f"this efficiency cell was made for device {target!r} but runs on "
                             f"{ctx.device!r}; pass the run's device in the options")
        if device.type != "cpu" and cell["clock"] != "wall":
            raise UsageError(f"clock={cell['clock']} times CPU work only; on {device.type} use "
                             "clock=wall (the timed calls synchronise the device)")
        layer = cell["level"] == "layer"
        setting = Setting(device=device, dtype=DTYPES[cell["dtype"]],
                          channels_last=cell["memory_format"] == "channels_last", input_grad=layer,
                          compiled=bool(cell["compiled"]), repeats=int(cell["repeats"]),
                          warmup=int(cell["warmup"]), clock=cell["clock"], seed=int(cell["seed"]),
                          baseline=cell["baseline"])
        where = f"layer {shape_text(cell['shape'])}" if layer else \
            f"{cell.get('model')} {shape_text(cell['shape'])}"
        what = f"{where} {cell['dtype']} {cell['memory_format']}{' compiled' if cell['compiled'] else ''}"

        def log(msg: str) -> None:
            if ctx.progress:
                print(f"efficiency: {msg}", file=sys.stderr, flush=True)

        old_threads = torch.get_num_threads()
        torch.set_num_threads(int(cell["num_threads"]))
        try:
            with cold_compile() if setting.compiled else contextlib.nullcontext():
                x = bench_input(cell["shape"], setting, uniform=not layer)
                bench = SideBySide(cell["pools"], lambda pool: _module(cell, pool, setting), x, setting, log)
                records = bench.run(what)
            columns = _cell_columns(cell, str(device))
            return [make_row({**pool_columns(r.pool), **columns}, r.metric, r.value, r.unit, r.n, **r.extra)
                    for r in records]
        except PoolbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - an error row for the cell, never a crash
            raise PoolbenchError(one_line(exc, with_type=True)) from exc
        finally:
            torch.set_num_threads(old_threads)

    def error_row(self, cell: dict, ctx, message: str) -> dict:
        return make_row({**pool_columns(cell["baseline"]), **_cell_columns(cell, str(ctx.device))},
                        "error", None, error=f"cell failed: {message}")

    # --- views ---------------------------------------------------------------------------------

    def table(self, frame: pd.DataFrame, options: EfficiencyOptions | None = None, store=None) -> pd.DataFrame:
        """One line per pool at ONE setting (see ``table_setting``): eager, first dtype and
        memory format of the run; params, buffers, MFLOPs, fwd and fwd+bwd ms, their ratios to
        the baseline measured in the same cell, forward_retained_bytes in MB ("fwd kept MB");
        with compiled cells also compiled fwd ms, its ratio and the compile time; a note for a
        pool that failed or was skipped there."""
        options = options or EfficiencyOptions()
        if frame is None or frame.empty or not {"metric", "level", "shape", "pool"} <= set(frame.columns):
            raise ValueError("these rows lack the efficiency suite's level/shape columns")
        level, shape, dtype, fmt = table_setting(options, frame)
        f = frame[(frame["level"] == level) & (frame["shape"] == shape)]
        for col, wanted in (("dtype", dtype), ("memory_format", fmt)):
            if col in f.columns:
                f = f[f[col] == wanted]
        compiled = f["compiled"].fillna(False).astype(bool) if "compiled" in f.columns else \
            pd.Series(False, index=f.index)
        eager, comp = f[~compiled], f[compiled]
        baseline = options.baseline
        if "baseline" in f.columns and f["baseline"].notna().any():
            baseline = str(f["baseline"].dropna().iloc[0])
        short = parse_spec(baseline)[0]
        wanted = {"params": "params", "buffers": "buffers", "flops_total": "MFLOPs",
                  "latency_fwd": "fwd ms", "latency_fwdbwd": "fwd+bwd ms",
                  "latency_fwd_ratio": f"fwd x {short}", "latency_fwdbwd_ratio": f"fwd+bwd x {short}",
                  "forward_retained_bytes": "fwd kept MB", "cuda_peak_allocated_bytes": "cuda peak MB"}
        wide = pd.DataFrame(index=pd.Index(list(dict.fromkeys(f["pool"])), name="pool"))
        _put_medians(wide, eager, {m: m for m in wanted})
        for col, scale in (("flops_total", 1e6), ("forward_retained_bytes", 2**20),
                           ("cuda_peak_allocated_bytes", 2**20)):
            if col in wide.columns:
                wide[col] = wide[col] / scale
        wide = wide.rename(columns=wanted)
        _put_medians(wide, comp, {"latency_fwd": "compiled fwd ms",
                                  "latency_fwd_ratio": f"compiled fwd x {short}",
                                  "compile_time_fwd": "compile s"})
        problems = f[f["metric"].isin(["error", "unsupported"])]
        if not problems.empty:
            notes = {}
            for r in problems.to_dict("records"):
                text = r.get("error") or r.get("note") or r["metric"]
                notes.setdefault(r["pool"], ("compiled: " if r.get("compiled") else "") + str(text)[:90])
            wide["note"] = pd.Series(notes)
        for col in ("params", "buffers"):
            if col in wide.columns:
                wide[col] = wide[col].round().astype("Int64")
        if wide.shape[1] == 0:
            raise ValueError(f"no efficiency rows at {level} {shape} {dtype} {fmt}")
        return wide

    def notes(self, options: EfficiencyOptions | None = None) -> list[str]:
        level, shape, dtype, fmt = table_setting(options)
        where = f"layer {shape}" if level == "layer" else "model level"
        return [
            f"table: {where}, {dtype}, {fmt}, eager (option table_setting: layer|model|NxCxHxW); "
            "every shape, dtype, format and compiled cell is in the store (--json for all rows)",
            "ratios are against the baseline timed round-robin in the same cell (same input, "
            "same run); latency = median of the repeats (iqr_ms, min_ms in the rows)",
            CONVENTION,
            "fwd kept MB = forward_retained_bytes: " + METRIC_DOC["forward_retained_bytes"],
        ]


def table_setting(options: EfficiencyOptions | None,
                  frame: pd.DataFrame | None = None) -> tuple[str, str, str, str]:
    """(level, shape text, dtype, memory format) the table shows: ``table_setting`` ("layer",
    "model" or a layer shape NxCxHxW; default the first layer shape, else the model level),
    the run's first dtype and first memory format; where ``frame`` lacks what the options
    name, the first of what it holds."""
    options = options or EfficiencyOptions()
    dtype, fmt = options.dtypes[0], options.formats[0]
    if frame is not None:
        for col in ("dtype", "memory_format"):
            present = list(dict.fromkeys(frame[col].dropna())) if col in frame.columns else []
            if present and (dtype if col == "dtype" else fmt) not in present:
                dtype, fmt = (present[0], fmt) if col == "dtype" else (dtype, present[0])
    choice = options.table_setting or ("layer" if "layer" in options.levels else "model")
    if choice == "model":
        shape = None
        if frame is not None and "level" in frame.columns:
            shapes = frame.loc[frame["level"] == "model", "shape"].dropna()
            shape = shapes.iloc[0] if len(shapes) else None
        return "model", shape or "?", dtype, fmt
    shape = options.layer_shapes[0] if choice == "layer" else choice
    if frame is not None and "level" in frame.columns:
        present = list(dict.fromkeys(frame.loc[frame["level"] == "layer", "shape"].dropna()))
        if present and shape not in present:
            shape = present[0]
    return "layer", shape, dtype, fmt


# --- helpers -----------------------------------------------------------------------------------

def _model_target(o: EfficiencyOptions, cfg) -> dict:
    """The model-level target: the backbone with the pool swapped in, at its batch and size."""
    info = model_info(o.model or (cfg.model if cfg else "convnet"))
    dataset = cfg.dataset if cfg else o.dataset
    if o.num_classes is not None:
        classes = o.num_classes
    elif dataset in DATASET_CLASSES:
        classes = DATASET_CLASSES[dataset]
    else:
        classes = 1000 if info.input_size >= 128 else 10
    batch = o.model_batch if o.model_batch is not None else (cfg.batch_size if cfg else 32)
    size = o.model_size if o.model_size is not None else info.input_size
    return {"level": "model", "model": info.name, "policy": cfg.policy if cfg else o.policy,
            "dataset": dataset, "num_classes": classes, "shape": [batch, 3, size, size]}


def _module(cell: dict, pool: str, setting: Setting) -> torch.nn.Module:
    """The pool alone (layer level) or the backbone with it swapped in, seeded, as measured."""
    torch.manual_seed(int(cell["seed"]))
    if cell["level"] == "layer":
        m = get_pool(pool, int(cell["shape"][1]))
    else:
        m = create_model(cell["model"], int(cell["num_classes"]), pool=pool, policy=cell.get("policy"))
    m = m.to(device=setting.device, dtype=setting.dtype)
    return m.to(memory_format=torch.channels_last) if setting.channels_last else m


def _put_medians(wide: pd.DataFrame, rows: pd.DataFrame, columns: dict[str, str]) -> None:
    """``wide[label]`` = the median value per pool of each ``metric`` in ``columns``."""
    sub = rows[rows["metric"].isin(columns) & rows["value"].notna()]
    if sub.empty:
        return
    piv = sub.pivot_table(index="pool", columns="metric", values="value", aggfunc="median")
    for metric, label in columns.items():
        if metric in piv.columns:
            wide[label] = piv[metric]


def _cell_columns(cell: dict, device: str) -> dict:
    return {
        "level": cell["level"], "model": cell.get("model"), "dataset": cell.get("dataset"),
        "seed": cell.get("seed"), "shape": shape_text(cell["shape"]), "dtype": cell["dtype"],
        "memory_format": cell["memory_format"], "compiled": bool(cell["compiled"]),
        "threads": int(cell["num_threads"]), "repeats": int(cell["repeats"]),
        "warmup": int(cell["warmup"]), "clock": cell["clock"], "baseline": cell["baseline"],
        "device": device,
    }


SUITE = register_suite(EfficiencySuite())
