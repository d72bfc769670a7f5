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
from .errors import UsageError
from .process import init_distributed, is_main_process, resolve_device
from .registry import canonical_spec
from .runner import Executor, RunContext, run_cells
from .suites import SuiteName, get_suite

# flags of every run that set the [train] recipe; a suite whose Options has a field of the
# same name (SegNet's own recipe, the efficiency cell's device) takes the flag too
TRAIN_FLAGS = ("model", "dataset", "epochs", "batch_size", "lr", "train_size", "test_size")


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
        preset: str | None = None, seed: int | None = None, model: str | None = None,
        dataset: str | None = None, data_root: str | None = None, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, train_size: int | None = None,
        test_size: int | None = None, device: str | None = None, results: str | None = None,
        executor: str | Executor = Executor.SEQUENTIAL, workers: int = 2, threads: int | None = None,
        checkpoint: str | None = None, progress: bool = True, command: str | None = None,
        log: Callable[[str], None] | None = None, **options) -> RunResult:
    """Run one suite for ``pools`` (specs such as ``"lift:kernel_size=7"``; default ``max``).

    ``preset`` names a preset in ``suites/`` or a TOML file; the keyword arguments above set
    the [train] recipe and where and how cells run; ``**options`` are the suite's own (e.g.
    ``reference="avg"``, ``corruptions="gaussian_noise,fog"``) and win over the preset's table.
    Finished cells come from the store under ``results``; the rest are computed and stored.
    ``command`` is the line recorded in ``<results>/commands.log`` (default: this call).

    >>> result = poolbench.run("robustness", pools=["lift"])   # doctest: +SKIP
    >>> result.table                                           # the table the CLI prints
    """
    suite_obj = get_suite(suite)
    name = suite_obj.name
    executor = _enum(Executor, executor, "executor").value
    if not suite_obj.parallel and executor != Executor.SEQUENTIAL.value:
        raise UsageError(f"{name} times pools side by side: use --executor sequential")
    preset_data = load_preset(preset)
    named = (pools,) if isinstance(pools, str) else tuple(pools or ())
    user_pools = [canonical_spec(p) for p in named] or ["max"]  # unknown names fail here, before work
    if checkpoint and len(set(user_pools)) > 1:
        raise UsageError("--checkpoint evaluates one model: pass exactly one --pool")
    device = resolve_device(device)

    flags = {"model": model, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "train_size": train_size, "test_size": test_size, "device": device, "threads": threads}
    fields = {f.name for f in dataclasses.fields(suite_obj.Options)}
    values = {**suite_obj.pool_defaults(named), **preset_data.get(name, {})}
    values.update({k: v for k, v in flags.items() if k in fields and v is not None})
    if seed is not None and "seeds" in fields:
        values["seeds"] = [seed]
    values.update({k: v for k, v in options.items() if v is not None})
    opts = suite_obj.options(values)

    all_pools = list(dict.fromkeys(user_pools + [canonical_spec(p) for p in suite_obj.extra_pools(opts)]))
    overrides = {k: flags[k] for k in TRAIN_FLAGS}
    configs = [train_config(preset_data, p, s, overrides) for p in all_pools
               for s in seeds_of(preset_data, seed)]
    init_distributed(device)
    ctx = RunContext(
        results=str(results or env_default("results", "results")), device=device, data_root=data_root,
        progress=progress, checkpoint=checkpoint, threads=threads, workers=workers,
        extra={"slurm": preset_data.get("slurm", {})},
        checkpoint_pool=suite_obj.checkpoint_pool(user_pools[0]) if checkpoint else None,
        **suite_obj.run_settings(opts),
    )
    cells = suite_obj.cells(configs, opts)
    if is_main_process():
        record = command or _call_text(name, named, preset, seed, options)
        append_line(Path(ctx.results) / "commands.log", record)
    report = run_cells(name, cells, ctx, executor, log=log)
    frame = pd.DataFrame(report.rows)
    table = suite_obj.table(frame, opts) if report.rows else pd.DataFrame()
    return RunResult(suite=name, options=opts, pools=all_pools, rows=report.rows, table=table,
                     notes=suite_obj.notes(opts), cells=len(cells), computed=report.computed,
                     skipped=report.skipped, failed=report.failed, results=ctx.results,
                     errors=[r for r in report.rows if r.get("error")])


def _call_text(suite: str, pools: tuple, preset, seed, options: dict) -> str:
    """This call as Python, for commands.log (a record only: nothing reads it back)."""
    parts = [repr(suite)] + ([f"pools={list(pools)!r}"] if pools else [])
    parts += [f"{k}={v!r}" for k, v in (("preset", preset), ("seed", seed), *sorted(options.items()))
              if v is not None]
    return f"poolbench.run({', '.join(parts)})"

