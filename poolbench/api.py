"""The library entry point: ``poolbench.run(suite, pools=..., **options)``.

Everything a run does lives here, so that the command line and a Python session get the same
rows and the same table: options typed and validated at this boundary (preset table < flags),
pool specs made canonical, the reference pools a suite needs added, training configs crossed
with seeds, the cells run through an executor and the stored rows turned into the suite's view.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .atomic import append_line
from .config import env_default, load_preset, seeds_of, train_config
from .data import dataset_fingerprint
from .data.fingerprint import folder_fingerprint
from .training.runtime import check_amp, default_amp
from .errors import UsageError
from .ranges import check_value
from .process import init_distributed, is_main_process, resolve_device
from .registry import canonical_spec
from .runner import Executor, RunContext, run_cells
from .store import ResultStore
from .suites import SuiteName, get_suite
from .suites.intervals import ONE_SEED_NOTE

# flags of every run that set the [train] recipe; a suite whose Options has a field of the
# same name (SegNet's own recipe, the efficiency cell's device) takes the flag too
TRAIN_FLAGS = ("model", "dataset", "epochs", "batch_size", "lr", "train_size", "test_size", "data_seed")


def _enum(kind: type[enum.Enum], value, what: str):
    try:
        return kind(value.value if isinstance(value, enum.Enum) else str(value))
    except ValueError:
        raise UsageError(f"unknown {what} {value!r}; choose one of {', '.join(m.value for m in kind)}") from None


@dataclass
class RunResult:
    """What a run produced: its rows (stored and new), the suite's table of them and its notes."""

    suite: str
    options: Any                     # the suite's resolved Options
    pools: list[str]                 # canonical specs, the user's first, then reference pools
    rows: list[dict]
    table: pd.DataFrame
    notes: list[str]
    cells: int
    computed: int
    skipped: int
    failed: int
    results: str
    errors: list[dict] = field(default_factory=list)

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a tidy DataFrame (one measured value per row)."""
        return pd.DataFrame(self.rows)


def run(suite: str | SuiteName, pools: list[str] | tuple[str, ...] | str | None = None, *,
        preset: str | None = None, seed: int | None = None, seeds=None, data_seed: int | None = None,
        model: str | None = None,
        dataset: str | None = None, data_root: str | None = None, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, train_size: int | None = None,
        test_size: int | None = None, device: str | None = None, results: str | None = None,
        executor: str | Executor = Executor.SEQUENTIAL, workers: int = 2, threads: int | None = None,
        checkpoint: str | None = None, progress: bool = True, command: str | None = None,
        log: Callable[[str], None] | None = None, amp: str | None = None,
        checkpoint_minutes: float = 10.0, loader_workers: int | None = None,
        eval_every: int | None = None, compile_training: bool = False, **options) -> RunResult:
    """Run one suite for ``pools`` (specs such as ``"lift:kernel_size=7"``; default ``max``).

    ``preset`` names a preset in ``suites/`` or a TOML file; the keyword arguments above set
    the [train] recipe and where and how cells run; ``**options`` are the suite's own (e.g.
    ``reference="avg"``, ``corruptions="gaussian_noise,fog"``) and win over the preset's table.
    Finished cells come from the store under ``results``; the rest are computed and stored.
    ``command`` is the line recorded in ``<results>/commands.log`` (default: this call).
    ``amp`` (off | bf16 | fp16; default bf16 on CUDA, off elsewhere) is part of the recipe; the
    other training keywords say how it runs here (``engine.TrainSettings``).

    >>> result = poolbench.run("robustness", pools=["lift"])   # doctest: +SKIP
    >>> result.table                                           # the table the CLI prints
    """
    suite_obj = get_suite(suite)
    name = suite_obj.name
    executor = _enum(Executor, executor, "executor").value
    check_value("workers", workers, low=1)
    check_value("threads", threads, low=1)
    if not suite_obj.parallel and executor != Executor.SEQUENTIAL.value:
        raise UsageError(f"{name} times pools side by side: use --executor sequential")
    preset_data = load_preset(preset)
    named = (pools,) if isinstance(pools, str) else tuple(pools or ())
    user_pools = [canonical_spec(p) for p in named] or ["max"]  # unknown names fail here, before work
    if checkpoint and len(set(user_pools)) > 1:
        raise UsageError("--checkpoint evaluates one model: pass exactly one --pool")
    device = resolve_device(device)

    flags = {"model": model, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "data_seed": data_seed,
             "train_size": train_size, "test_size": test_size, "device": device, "threads": threads}
    fields = {f.name for f in dataclasses.fields(suite_obj.Options)}
    values = {**suite_obj.pool_defaults(named), **preset_data.get(name, {})}
    values.update({k: v for k, v in flags.items() if k in fields and v is not None})
    if seed is not None and seeds is not None:
        raise UsageError("pass --seed N (one seed) or --seeds LIST|COUNT, not both")
    run_seeds = [seed] if seed is not None else parse_seeds(seeds)
    if run_seeds is not None and "seeds" in fields:
        values["seeds"] = run_seeds
    values.update({k: v for k, v in options.items() if v is not None})
    opts = suite_obj.options(values)

    all_pools = list(dict.fromkeys(user_pools + [canonical_spec(p) for p in suite_obj.extra_pools(opts)]))
    overrides = {k: flags[k] for k in TRAIN_FLAGS}
    # mixed precision changes the weights, so it is in the recipe: the flag, else the preset's,
    # else the device's default
    overrides["amp"] = check_amp(amp or preset_data.get("train", {}).get("amp") or default_amp(device))
    configs = [train_config(preset_data, p, s, overrides) for p in all_pools
               for s in (run_seeds or seeds_of(preset_data, None))]
    init_distributed(device)
    ctx = RunContext(
        results=str(results or env_default("results", "results")), device=device, data_root=data_root,
        progress=progress, checkpoint=checkpoint, threads=threads, workers=workers,
        extra={"slurm": preset_data.get("slurm", {})},
        checkpoint_pool=suite_obj.checkpoint_pool(user_pools[0]) if checkpoint else None,
        checkpoint_minutes=checkpoint_minutes, loader_workers=loader_workers, eval_every=eval_every,
        compile_training=compile_training, **suite_obj.run_settings(opts),
    )
    ctx.train_settings()  # a bad training setting fails here, before any cell
    cells = with_data(suite_obj.cells(configs, opts), data_root, suite_obj.run_settings(opts))
    notes = suite_obj.notes(opts)
    if is_main_process():
        record = command or _call_text(name, named, preset, seed, {**options, "seeds": seeds})
        try:
            append_line(Path(ctx.results) / "commands.log", record)
        except OSError as exc:  # a read-only store still shows what it holds
            notes.append(f"{ctx.results} is not writable ({exc.strerror or exc}): "
                         "this command is not recorded in commands.log")
    report = run_cells(name, cells, ctx, executor, log=log)
    errors = [r for r in report.rows if r.get("error")]
    measured = [r for r in report.rows if not r.get("error")]
    table = (suite_obj.table(pd.DataFrame(measured), opts, ResultStore(ctx.results)) if measured
             else failed_table(errors))
    notes += table.attrs.get("notes", [])
    if measured and _one_seed_each(measured):
        notes.append(ONE_SEED_NOTE)
    return RunResult(suite=name, options=opts, pools=all_pools, rows=report.rows, table=table,
                     notes=notes, cells=len(cells), computed=report.computed,
                     skipped=report.skipped, failed=report.failed, results=ctx.results, errors=errors)


def with_data(cells: list[dict], data_root: str | None, settings: dict) -> list[dict]:
    """``cells`` with the fingerprint of their data (``poolbench.data.fingerprint``): in every
    training config (so in the checkpoint key and the cell hash) and, for official -C/-P sets,
    in the cell. Missing data fails here, before any stored cell is looked up."""
    prints: dict[str, str] = {}
    # run settings hold flags too (corruption_on_the_fly); only the *_data ones name folders
    official = {f"{key}_fingerprint": folder_fingerprint(path, f"--{key.replace('_', '-')}")
                for key, path in sorted(settings.items()) if key.endswith("_data") and path}
    out = []
    for cell in cells:
        cell = {**cell, **official}
        train = cell.get("train")
        if train is not None:
            dataset = train["dataset"]
            if dataset not in prints:
                prints[dataset] = dataset_fingerprint(dataset, data_root)
            cell["train"] = {**train, "data_fingerprint": prints[dataset]}
        out.append(cell)
    return out


def _one_seed_each(rows: list[dict]) -> bool:
    seeds: dict[str, set] = {}
    for r in rows:
        if r.get("seed") is not None:
            seeds.setdefault(r.get("pool"), set()).add(r["seed"])
    return bool(seeds) and all(len(s) == 1 for s in seeds.values())


def parse_seeds(seeds) -> list[int] | None:
    """``--seeds``: a list ("0,1,2", [0, 1, 2]) or a count ("3", 3 -> seeds 0, 1, 2)."""
    if seeds is None:
        return None
    items = [s for s in str(seeds).replace(" ", "").split(",") if s] if isinstance(seeds, (str, int)) \
        else list(seeds)
    try:
        values = [int(s) for s in items]
    except (TypeError, ValueError):
        raise UsageError(f"seeds must be a count (3) or a list of integers (0,1,2), got {seeds!r}") from None
    if len(values) == 1 and isinstance(seeds, (str, int)):
        check_value("seeds", values[0], low=1)
        values = list(range(values[0]))
    for v in values:
        check_value("seeds", v, low=0)
    if len(set(values)) != len(values):
        raise UsageError(f"seeds {seeds!r} repeat a seed; pass each once")
    return values


def failed_table(errors: list[dict]) -> pd.DataFrame:
    """The table of a run in which every cell failed: which, and why (never a traceback)."""
    columns = [c for c in ("pool", "seed", "up_pool", "error") if any(c in r for r in errors)]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in errors], columns=columns)


def _call_text(suite: str, pools: tuple, preset, seed, options: dict) -> str:
    """This call as Python, for commands.log (a record only: nothing reads it back)."""
    parts = [repr(suite)] + ([f"pools={list(pools)!r}"] if pools else [])
    parts += [f"{k}={v!r}" for k, v in (("preset", preset), ("seed", seed), *sorted(options.items()))
              if v is not None]
    return f"poolbench.run({', '.join(parts)})"

