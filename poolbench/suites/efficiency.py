"""Efficiency: parameters, buffers, FLOPs, latency and memory per pool, side by side in one run.

Cells: one per (target, dtype, memory format, compiled), where a target is a layer-level input
shape (the pool alone, e.g. 32x64x56x56) or the model level (the training config's backbone
with the pool swapped in, at its input size and batch). Every cell holds ALL the pools of the
run plus the baseline (``baseline``, default max): their latencies are measured round-robin
(``poolbench.bench_lift.time_interleaved``) on the same input, in one process, so that the
ratios against the baseline are fair on a shared, noisy machine. Rows stay one per pool and
metric.

Per pool and cell: ``params`` and ``buffers`` (counted, float buffers), ``flops_counted``
(torch's FlopCounterMode) and ``flops_total`` (plus poolbench's formulas, see
``poolbench.flops.CONVENTION``), ``latency_fwd`` (eval mode, no grad) and ``latency_fwdbwd``
(training mode, loss ``(y * g).sum()`` plus auxiliary losses, gradients of the input at layer
level and of every parameter) as median ms with ``iqr_ms`` and ``min_ms`` columns, their
ratios to the baseline, and memory: ``forward_retained_bytes`` and
``fwdbwd_peak_tensor_bytes`` on every device (tensor bytes tracked by a dispatch mode, see
``TensorMemoryTracker``: what the training-mode forward leaves alive for the backward, and the
peak over forward+backward) and, on CUDA, ``cuda_peak_allocated_bytes``
(torch.cuda.max_memory_allocated over one forward+backward) and ``cuda_peak_increase_bytes``.
Compiled cells (option ``compile``) time ``torch.compile(module)`` and record
``compile_time_fwd`` / ``compile_time_fwdbwd``: the first call's time minus the steady-state
median.
"""
from __future__ import annotations

import contextlib
import sys
import time
import weakref

import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..bench_lift import time_interleaved
from ..errors import PoolbenchError, UsageError
from ..registry import format_spec, get_spec, parse_spec
from ..store import make_row
from .base import pool_columns

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
CLOCKS = ("wall", "thread", "process")
DATASET_CLASSES = {"shapes": 10, "cifar10": 10, "cifar100": 100}

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


# --- options -----------------------------------------------------------------------------------

def _items(value, default) -> list:
    """A list from a TOML list, a tuple, or a comma-separated string; the default when None."""
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def parse_shape(value) -> list[int]:
    """"32x64x56x56" or [32, 64, 56, 56] -> [32, 64, 56, 56] (N, C, H, W, all positive)."""
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
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


def _positive_int(options: dict, key: str, default: int, minimum: int = 1) -> int:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        try:
            ok = not isinstance(value, bool) and int(value) == float(value) and int(value) >= minimum
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"efficiency option {key}={value!r} must be an integer >= {minimum}")
    return int(value)


def _bool(options: dict, key: str, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"efficiency option {key}={value!r} must be true or false")


def _canonical_pool(spec: str) -> str:
    name, opts = parse_spec(spec)
    get_spec(name)  # unknown names fail here, with close matches
    return format_spec(name, opts)


def _num_classes(dataset: str | None, model: str, options: dict) -> int:
    if options.get("num_classes") is not None:
        return _positive_int(options, "num_classes", 10)
    if dataset in DATASET_CLASSES:
        return DATASET_CLASSES[dataset]
    from ..models import model_info

    return 1000 if model_info(model).input_size >= 128 else 10


# --- the suite ---------------------------------------------------------------------------------

class EfficiencySuite:
    name = "efficiency"

    def cells(self, train_configs: list, options: dict) -> list[dict]:
        """One cell per (layer shape | model) x dtype x memory format (x compiled), each with
        every pool of the run plus the baseline.

        Options (the ``[efficiency]`` preset table merged with CLI flags): ``baseline`` (pool
        spec, default "max"), ``pools`` (extra pool specs), ``levels`` ("layer", "model" or both),
        ``layer_shapes`` (NxCxHxW list), ``model_batch`` (default: the training batch size),
        ``model_size`` (default: the backbone's input size), ``num_classes``, ``dtypes``
        (default float32,bfloat16), ``formats`` (nchw, channels_last), ``compile`` (bool: also
        the compiled cells), ``repeats`` (timed rounds, default 20), ``warmup`` (default 3),
        ``threads`` (torch.set_num_threads, default 1, recorded), ``clock`` (wall | thread |
        process), ``device`` (the device the run is for, recorded in the cell), ``seed``."""
        options = dict(options or {})
        baseline = _canonical_pool(str(options.get("baseline") or "max"))
        pools: list[str] = []
        for cfg in train_configs:
            pools.append(_canonical_pool(cfg.pool))
        for extra in _items(options.get("pools"), ()):
            pools.append(_canonical_pool(str(extra)))
        pools.append(baseline)
        pools = list(dict.fromkeys(pools))
        cfg = train_configs[0] if train_configs else None
        levels = [str(v).strip().lower() for v in _items(options.get("levels"), LEVELS)]
        bad = [v for v in levels if v not in LEVELS]
        if bad or not levels:
            raise UsageError(f"efficiency levels {bad or levels!r} not understood; choose layer, "
                             "model or both (e.g. --levels layer,model)")
        shapes = [parse_shape(s) for s in _items(options.get("layer_shapes"), DEFAULT_LAYER_SHAPES)]
        dtypes = list(dict.fromkeys(_dtype_name(d) for d in _items(options.get("dtypes"), DEFAULT_DTYPES)))
        formats = list(dict.fromkeys(_format_name(f)
                                     for f in _items(options.get("formats"), DEFAULT_FORMATS)))
        if not dtypes or not formats:
            raise UsageError("efficiency needs at least one dtype and one memory format")
        threads = _positive_int(options, "threads", 1)
        clock = str(options.get("clock") or "wall").strip().lower()
        if clock not in CLOCKS:
            raise UsageError(f"efficiency clock {clock!r} unknown; choose {', '.join(CLOCKS)}")
        if clock == "thread" and threads != 1:
            raise UsageError("clock=thread measures the calling thread only: use it with "
                             "threads=1, or clock=wall / process")
        common = {
            "pools": pools, "baseline": baseline,
            "num_threads": threads,
            "repeats": _positive_int(options, "repeats", 20),
            "warmup": _positive_int(options, "warmup", 3, minimum=0),
            "clock": clock,
            "target_device": str(options.get("device") or "cpu"),
            "seed": _positive_int(options, "seed", cfg.seed if cfg else 0, minimum=0),
        }
        targets: list[dict] = []
        if "layer" in levels:
            targets += [{"level": "layer", "shape": s} for s in shapes]
        if "model" in levels:
            from ..models import model_info

            model = str(options.get("model") or (cfg.model if cfg else "convnet"))
            info = model_info(model)
            dataset = cfg.dataset if cfg else options.get("dataset")
            batch = _positive_int(options, "model_batch", cfg.batch_size if cfg else 32)
            size = _positive_int(options, "model_size", info.input_size)
            targets.append({"level": "model", "model": info.name,
                            "policy": cfg.policy if cfg else options.get("policy"),
                            "dataset": dataset, "num_classes": _num_classes(dataset, info.name, options),
                            "shape": [batch, 3, size, size]})
        compiled = [False, True] if _bool(options, "compile", False) else [False]
        return [{**t, "dtype": d, "memory_format": f, "compiled": c, **common}
                for c in compiled for t in targets for d in dtypes for f in formats]

    # --- one cell ------------------------------------------------------------------------------

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        device = torch.device(ctx.device)
        target = cell.get("target_device")
        if target and torch.device(target).type != device.type:
            raise UsageError(f"this efficiency cell was made for device {target!r} but runs on "
                             f"{ctx.device!r}; pass the run's device in the options")
        if device.type != "cpu" and cell["clock"] != "wall":
            raise UsageError(f"clock={cell['clock']} times CPU work only; on {device.type} use "
                             "clock=wall (the timed calls synchronise the device)")
        old_threads = torch.get_num_threads()
        torch.set_num_threads(int(cell["num_threads"]))
        try:
            with _cold_compile() if cell["compiled"] else contextlib.nullcontext():
                return _CellRun(cell, device, ctx).run()
        except PoolbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - an error row for the cell, never a crash
            raise PoolbenchError(one_line(exc)) from exc
        finally:
            torch.set_num_threads(old_threads)

    def error_row(self, cell: dict, ctx, message: str) -> dict:
        return make_row({**pool_columns(cell["baseline"]), **_cell_columns(cell, str(ctx.device))},
                        "error", None, error=f"cell failed: {message}")

    # --- views ---------------------------------------------------------------------------------

    def table(self, frame: pd.DataFrame, options: dict | None = None) -> pd.DataFrame:
        """One line per pool at ONE setting (see ``table_setting``): eager, first dtype and
        memory format of the run; params, buffers, MFLOPs, fwd and fwd+bwd ms, their ratios to
        the baseline measured in the same cell, forward_retained_bytes in MB ("fwd kept MB");
        with compiled cells also compiled fwd ms, its ratio and the compile time; a note for a
        pool that failed or was skipped there."""
        options = options or {}
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
        baseline = str(options.get("baseline") or "max")
        if "baseline" in f.columns and f["baseline"].notna().any():
            baseline = str(f["baseline"].dropna().iloc[0])
        short = parse_spec(baseline)[0]
        wanted = {"params": "params", "buffers": "buffers", "flops_total": "MFLOPs",
                  "latency_fwd": "fwd ms", "latency_fwdbwd": "fwd+bwd ms",
                  "latency_fwd_ratio": f"fwd x {short}", "latency_fwdbwd_ratio": f"fwd+bwd x {short}",
                  "forward_retained_bytes": "fwd kept MB", "cuda_peak_allocated_bytes": "cuda peak MB"}
        pools = list(dict.fromkeys(f["pool"]))
        wide = pd.DataFrame(index=pd.Index(pools, name="pool"))
        sub = eager[eager["metric"].isin(wanted) & eager["value"].notna()]
        if not sub.empty:
            piv = sub.pivot_table(index="pool", columns="metric", values="value", aggfunc="median")
            for metric in wanted:
                if metric in piv.columns:
                    wide[metric] = piv[metric]
        for col, scale in (("flops_total", 1e6), ("forward_retained_bytes", 2**20),
                           ("cuda_peak_allocated_bytes", 2**20)):
            if col in wide.columns:
                wide[col] = wide[col] / scale
        wide = wide.rename(columns=wanted)
        names = {"latency_fwd": "compiled fwd ms", "latency_fwd_ratio": f"compiled fwd x {short}",
                 "compile_time_fwd": "compile s"}
        csub = comp[comp["metric"].isin(names) & comp["value"].notna()]
        if not csub.empty:
            piv = csub.pivot_table(index="pool", columns="metric", values="value", aggfunc="median")
            for metric, label in names.items():
                if metric in piv.columns:
                    wide[label] = piv[metric]
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

    def notes(self, options: dict | None = None) -> list[str]:
        from ..flops import CONVENTION

        level, shape, dtype, fmt = table_setting(options or {})
        where = f"layer {shape}" if level == "layer" else "model level"
        return [
            f"table: {where}, {dtype}, {fmt}, eager (option table_setting: layer|model|NxCxHxW); "
            "every shape, dtype, format and compiled cell is in the store (--json for all rows)",
            "ratios are against the baseline timed round-robin in the same cell (same input, "
            "same run); latency = median of the repeats (iqr_ms, min_ms in the rows)",
            CONVENTION,
            "fwd kept MB = forward_retained_bytes: " + METRIC_DOC["forward_retained_bytes"],
        ]


def table_setting(options: dict, frame: pd.DataFrame | None = None) -> tuple[str, str, str, str]:
    """(level, shape text, dtype, memory format) the table shows: ``table_setting`` ("layer",
    "model" or a layer shape NxCxHxW; default the first layer shape, else the model level),
    the run's first dtype and first memory format."""
    dtype = _dtype_name(_items(options.get("dtypes"), DEFAULT_DTYPES)[0])
    fmt = _format_name(_items(options.get("formats"), DEFAULT_FORMATS)[0])
    if frame is not None:  # what the rows hold when the options name something absent
        for col in ("dtype", "memory_format"):
            present = list(dict.fromkeys(frame[col].dropna())) if col in frame.columns else []
            if present and (dtype if col == "dtype" else fmt) not in present:
                dtype, fmt = (present[0], fmt) if col == "dtype" else (dtype, present[0])
    levels = [str(v).strip().lower() for v in _items(options.get("levels"), LEVELS)]
    choice = str(options.get("table_setting") or ("layer" if "layer" in levels else "model")).strip().lower()
    if choice == "model":
        shape = None
        if frame is not None and "level" in frame.columns:
            shapes = frame.loc[frame["level"] == "model", "shape"].dropna()
            shape = shapes.iloc[0] if len(shapes) else None
        return "model", shape or "?", dtype, fmt
    if choice == "layer":
        shape = shape_text(parse_shape(_items(options.get("layer_shapes"), DEFAULT_LAYER_SHAPES)[0]))
    else:
        shape = shape_text(parse_shape(choice))
    if frame is not None and "level" in frame.columns:
        present = list(dict.fromkeys(frame.loc[frame["level"] == "layer", "shape"].dropna()))
        if present and shape not in present:
            shape = present[0]
    return "layer", shape, dtype, fmt


_COMPILE_READY: set[str] = set()


@contextlib.contextmanager
def _cold_compile():
    """Cold compile times: inductor's caches off (FX graph and AOT autograd caches, and a fresh
    temporary inductor cache directory, so generated C++/Triton code is compiled again) and
    dynamo reset, after a one-time warm-up of the compile machinery in this process (imports,
    worker pool), so that each pool's compile time is its own."""
    import tempfile

    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:  # older torch: the on-disk code cache stays (compile times too low)
        temporary_cache_dir = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(inductor_config.patch(fx_graph_cache=False))
        if hasattr(functorch_config, "enable_autograd_cache"):
            stack.enter_context(functorch_config.patch(enable_autograd_cache=False))
        if temporary_cache_dir is not None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="poolbench-inductor-"))
            stack.enter_context(temporary_cache_dir(tmp))
        torch._dynamo.reset()
        if "warm" not in _COMPILE_READY:
            try:
                torch.compile(lambda t: (t.relu() * 2).sum(), dynamic=False)(torch.randn(4, 4))
                _COMPILE_READY.add("warm")
            except Exception:  # noqa: BLE001 - the pools' own compile will report it
                pass
            torch._dynamo.reset()
        try:
            yield
        finally:
            torch._dynamo.reset()


def _cell_columns(cell: dict, device: str) -> dict:
    return {
        "level": cell["level"], "model": cell.get("model"), "dataset": cell.get("dataset"),
        "seed": cell.get("seed"), "shape": shape_text(cell["shape"]), "dtype": cell["dtype"],
        "memory_format": cell["memory_format"], "compiled": bool(cell["compiled"]),
        "threads": int(cell["num_threads"]), "repeats": int(cell["repeats"]),
        "warmup": int(cell["warmup"]), "clock": cell["clock"], "baseline": cell["baseline"],
        "device": device,
    }


def _setting(row: dict) -> str:
    if row.get("level") == "model":
        return f"{row.get('model')} {row.get('shape')}"
    return f"layer {row.get('shape')}"


def one_line(exc: BaseException) -> str:
    """``Type: first non-empty line`` of an exception (compile errors are pages long)."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text}"[:300]


class _Case:
    """One pool of a cell: its module, the callables timed, and what was learnt about it."""

    def __init__(self, pool: str, module: torch.nn.Module | None,
                 problem: tuple[str, str] | None = None):
        self.pool = pool
        self.module = module
        self.runner = module        # torch.compile(module) in compiled cells
        modules = list(module.modules()) if module is not None else []
        self.aux_modules = [m for m in modules if callable(getattr(m, "auxiliary_losses", None))]
        self.params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
        self.grad_out = None
        self.out_shape: tuple[int, ...] | None = None
        self.problem = problem      # (metric "error" | "unsupported", message), or None
        self.first_call: dict[str, float] = {}


class _CellRun:
    def __init__(self, cell: dict, device: torch.device, ctx):
        self.cell = cell
        self.device = device
        self.ctx = ctx
        self.dtype = DTYPES[cell["dtype"]]
        self.cl = cell["memory_format"] == "channels_last"
        self.layer = cell["level"] == "layer"
        self.cuda = device.type == "cuda"

    def log(self, msg: str) -> None:
        if getattr(self.ctx, "progress", False):
            print(f"efficiency: {msg}", file=sys.stderr, flush=True)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # --- building -------------------------------------------------------------------------------

    def _input(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(self.cell["seed"]))
        shape = tuple(self.cell["shape"])
        x = torch.randn(shape, generator=gen) if self.layer else torch.rand(shape, generator=gen)
        x = x.to(device=self.device, dtype=self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.cl else x.contiguous()

    def _module(self, pool: str) -> torch.nn.Module:
        torch.manual_seed(int(self.cell["seed"]))
        if self.layer:
            from ..registry import get_pool

            m = get_pool(pool, int(self.cell["shape"][1]))
        else:
            from ..models import create_model

            m = create_model(self.cell["model"], int(self.cell["num_classes"]), pool=pool,
                             policy=self.cell.get("policy"))
        m = m.to(device=self.device, dtype=self.dtype)
        if self.cl:
            m = m.to(memory_format=torch.channels_last)
        return m

    def _share_weights(self, cases: list[_Case]) -> None:
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

    # --- the callables -------------------------------------------------------------------------

    def fwd(self, case: _Case, x: torch.Tensor):
        runner, sync = case.runner, self.sync

        def fn():
            case.module.eval()
            with torch.no_grad():
                y = runner(x)
            sync()
            return y
        return fn

    def fwdbwd(self, case: _Case, x: torch.Tensor):
        runner, sync, layer, params = case.runner, self.sync, self.layer, case.params
        aux_modules = case.aux_modules

        def fn():
            case.module.train()
            xx = x.detach().requires_grad_() if layer else x
            y = runner(xx)
            loss = (y * case.grad_out).sum()
            for m in aux_modules:
                for weight, value in m.auxiliary_losses().values():
                    loss = loss + weight * value
            inputs = ([xx] if layer else []) + params
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
            sync()
            return grads
        return fn

    # --- measuring ------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        cell = self.cell
        where = _setting({"level": cell["level"], "model": cell.get("model"),
                          "shape": shape_text(cell["shape"])})
        what = (f"{where} {cell['dtype']} {cell['memory_format']}"
                f"{' compiled' if cell['compiled'] else ''}")
        columns = _cell_columns(cell, str(self.device))
        x = self._input()
        cases: list[_Case] = []
        rows: list[dict] = []
        for pool in cell["pools"]:
            try:
                cases.append(_Case(pool, self._module(pool)))
            except Exception as exc:  # noqa: BLE001 - an operator that cannot be built here
                cases.append(_Case(pool, None, self._classify(exc, "build")))
        ok = [c for c in cases if c.problem is None]
        self._share_weights(ok)
        for case in ok:
            self._probe(case, x)
        ok = [c for c in cases if c.problem is None]
        gen = torch.Generator().manual_seed(int(cell["seed"]) + 1)
        for case in ok:
            case.grad_out = torch.randn(case.out_shape, generator=gen).to(self.device, self.dtype)
        per_pool: dict[str, list[dict]] = {c.pool: [] for c in cases}

        def add(case, metric, value, unit, n=None, **extra):
            per_pool[case.pool].append(
                make_row({**pool_columns(case.pool), **columns}, metric, value, unit, n, **extra))

        if not cell["compiled"]:
            for case in ok:
                params = sum(p.numel() for p in case.module.parameters() if p.requires_grad)
                buffers = sum(b.numel() for b in case.module.buffers() if b.is_floating_point())
                add(case, "params", params, "count")
                add(case, "buffers", buffers, "count")
                self._flops(case, x, add)
        # latency: all pools round-robin, forward then forward+backward
        stats = {}
        for phase, make in (("fwd", self.fwd), ("fwdbwd", self.fwdbwd)):
            live = [c for c in ok if c.problem is None]
            if not live:
                break
            self.log(f"{what}: timing {phase} of {len(live)} pools ({cell['repeats']} rounds)")
            fns = {c.pool: make(c, x) for c in live}
            stats[phase] = time_interleaved(fns, repeats=int(cell["repeats"]),
                                            warmup=int(cell["warmup"]), clock=cell["clock"])
        base = cell["baseline"]
        for phase, by_pool in stats.items():
            for pool, st in by_pool.items():
                case = next(c for c in cases if c.pool == pool)
                add(case, f"latency_{phase}", 1e3 * st.median, "ms", st.n,
                    iqr_ms=1e3 * st.iqr, min_ms=1e3 * st.min)
                if base in by_pool and by_pool[base].median > 0:
                    add(case, f"latency_{phase}_ratio", st.median / by_pool[base].median,
                        f"x {base}", st.n, ratio_of_min=st.min / by_pool[base].min
                        if by_pool[base].min > 0 else None)
                if cell["compiled"] and phase in case.first_call:
                    add(case, f"compile_time_{phase}", case.first_call[phase] - st.median, "s",
                        first_call_s=case.first_call[phase], compile_cache="off")
        for case in ok:
            if case.problem is None:
                self._memory(case, x, add, eager=not cell["compiled"])
        for case in cases:
            if case.problem is not None:
                metric, message = case.problem
                if metric == "error":
                    add(case, "error", None, "", error=message)
                else:
                    add(case, "unsupported", None, "", note=message)
        for case in cases:
            rows.extend(per_pool[case.pool])
        return rows

    def _classify(self, exc: BaseException, stage: str) -> tuple[str, str]:
        if isinstance(exc, UsageError):
            raise exc
        msg = one_line(exc)
        if self.cell["dtype"] != "float32" and stage != "build":
            return "unsupported", f"{self.cell['dtype']} not supported ({stage}): {msg}"
        return "error", f"{stage} failed: {msg}"

    def _probe(self, case: _Case, x: torch.Tensor) -> None:
        """One eager forward and forward+backward, so that a failing operator becomes a row
        (``unsupported`` for a dtype other than float32, else ``error``), not a crash; the
        output shape gives the backward's gradient. Compiled cells then compile and time the
        first calls (a failure: an ``error`` row with the one-line reason)."""
        try:
            y = self.fwd(case, x)()
            case.out_shape = tuple(y.shape)
            case.grad_out = torch.zeros(case.out_shape, device=self.device, dtype=self.dtype)
            stage = "forward+backward"
            self.fwdbwd(case, x)()
        except Exception as exc:  # noqa: BLE001
            case.problem = self._classify(exc, "forward" if case.grad_out is None else stage)
            return
        if not self.cell["compiled"]:
            return
        stage = "fwd"
        try:
            case.runner = torch.compile(case.module, dynamic=False)
            for stage, make in (("fwd", self.fwd), ("fwdbwd", self.fwdbwd)):
                fn = make(case, x)
                self.sync()
                t0 = time.perf_counter()
                fn()
                case.first_call[stage] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            case.problem = ("error", f"torch.compile failed ({stage}): {one_line(exc)}")

    def _flops(self, case: _Case, x: torch.Tensor, add) -> None:
        from ..flops import module_flops

        try:
            count = module_flops(case.module, x)
        except Exception as exc:  # noqa: BLE001 - FLOPs are not worth losing the timings for
            add(case, "flops_total", None, "FLOP", error=f"FLOP count failed: {one_line(exc)}")
            return
        missing = ", ".join(f"{k} x{v}" for k, v in sorted(count.unmodelled.items()))
        add(case, "flops_counted", count.counted, "FLOP", counter="torch FlopCounterMode")
        add(case, "flops_total", count.total, "FLOP", flops_unmodelled_ops=missing,
            counter="FlopCounterMode + poolbench formulas")

    def _memory(self, case: _Case, x: torch.Tensor, add, eager: bool) -> None:
        try:
            if eager:
                mem = tensor_memory(lambda: self.fwdbwd(case, x), case)
                add(case, "forward_retained_bytes", mem["forward_retained_bytes"], "bytes",
                    memory_metric=METRIC_DOC["forward_retained_bytes"])
                add(case, "fwdbwd_peak_tensor_bytes", mem["fwdbwd_peak_tensor_bytes"], "bytes",
                    memory_metric=METRIC_DOC["fwdbwd_peak_tensor_bytes"])
            if self.cuda:
                fn = self.fwdbwd(case, x)
                torch.cuda.synchronize(self.device)
                before = torch.cuda.memory_allocated(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
                fn()
                peak = torch.cuda.max_memory_allocated(self.device)
                add(case, "cuda_peak_allocated_bytes", peak, "bytes",
                    memory_metric=METRIC_DOC["cuda_peak_allocated_bytes"])
                add(case, "cuda_peak_increase_bytes", peak - before, "bytes",
                    memory_metric=METRIC_DOC["cuda_peak_increase_bytes"])
        except Exception as exc:  # noqa: BLE001
            add(case, "forward_retained_bytes", None, "bytes",
                error=f"memory measure failed: {one_line(exc)}")


class TensorMemoryTracker(TorchDispatchMode):
    """Bytes of the tensor storages allocated by the aten ops run under it, while alive.

    Every op output whose storage is not one of the op's inputs' (views and in-place results
    of tensors made before are not allocations) is counted from its creation until its last
    Python tensor object dies (weakref finalizers; torch keeps the Python object of a tensor
    alive as long as C++ holds it, e.g. as a tensor saved for backward or a custom Function's
    ``ctx`` attribute). ``live`` is the current total, ``peak`` its maximum. Not seen: tensors
    made before (input, parameters) and the scratch memory inside a kernel."""

    def __init__(self):
        super().__init__()
        self.counts: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        count = self.counts.get(ptr)
        if count is None:
            return
        if count <= 1:
            del self.counts[ptr]
            self.live -= self.sizes.pop(ptr, 0)
        else:
            self.counts[ptr] = count - 1

    def _track(self, t: torch.Tensor, ptr: int, nbytes: int) -> None:
        if ptr in self.counts:
            self.counts[ptr] += 1
        else:
            self.counts[ptr] = 1
            self.sizes[ptr] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        fin = weakref.finalize(t, self._release, ptr)
        fin.atexit = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {p for p, _ in map(_storage_of, _tensors((args, kwargs))) if p}
        for t in _tensors(out):
            ptr, nbytes = _storage_of(t)
            if not ptr or (ptr in inputs and ptr not in self.counts):
                continue
            self._track(t, ptr, nbytes)
        return out


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _storage_of(t: torch.Tensor) -> tuple[int, int]:
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return 0, 0


def tensor_memory(make_fwdbwd, case: "_Case") -> dict:
    """``forward_retained_bytes`` (tensor bytes the training-mode forward allocated that are
    still alive when it returns: the output and everything kept for the backward) and
    ``fwdbwd_peak_tensor_bytes`` (the peak over the whole forward+backward, gradients
    included), measured with TensorMemoryTracker around one call of ``make_fwdbwd()``, a
    forward+backward callable built after ``case.runner`` is wrapped to mark the forward's end."""
    tracker = TensorMemoryTracker()
    runner = case.runner
    marks = {}

    def probe(x):
        y = runner(x)
        marks["after_forward"] = tracker.live
        return y

    case.runner = probe
    try:
        fwdbwd = make_fwdbwd()
        with tracker:
            grads = fwdbwd()
            del grads
    finally:
        case.runner = runner
    return {"forward_retained_bytes": marks.get("after_forward", 0),
            "fwdbwd_peak_tensor_bytes": tracker.peak}


SUITE = EfficiencySuite()
