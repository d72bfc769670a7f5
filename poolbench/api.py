"""The library entry point: ``poolbench.run(suite, pools=..., **options)``.

Everything a run does lives here, so that the command line and a Python session get the same
rows and the same table: options typed and validated at this boundary (preset table < flags),
pool specs made canonical, the reference pools a suite needs added, training configs crossed
with seeds, the cells run through an executor and the stored rows turned into the suite's view.

The keywords ``run`` accepts are declared once, as fields: :class:`RunOptions` (where and how a
run happens, and the [train] recipe's overrides), ``training.runtime.TrainSettings`` (how models
train here) and the suite's own ``Options``. The command line's flags are generated from the
same fields.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .atomic import DiskFull, append_line
from .config import TrainConfig, env_default, load_preset, seeds_of, train_config
from .data import dataset_fingerprint
from .data.fingerprint import folder_fingerprint
from .errors import UsageError
from .models import PADDINGS, model_spec
from .options import build_options, option
from .process import init_distributed, is_main_process, resolve_device
from .ranges import check_ranges, check_value
from .registry import canonical_spec
from .runner import EXECUTORS, RunContext, cell_hash, run_cells
from .selection import RECIPES, planned, recipe, recipe_text, select, selection_notes, selection_summary
from .slurm import SlurmOptions, preset_options
from .store import ResultStore
from .suites import get_suite
from .suites.base import TrainedSuite
from .suites.convergence import plateau_note
from .suites.intervals import ONE_SEED_NOTE
from .suites.verdicts import narrow, verdict_lines
from .training.runtime import AMP_MODES, TrainSettings, check_amp, default_amp

# run options that a suite whose Options has a field of the same name takes too (SegNet's own
# recipe, the efficiency cell's device and threads)
SHARED_WITH_SUITES = ("model", "dataset", "epochs", "batch_size", "lr", "train_size", "test_size",
                      "data_seed", "device", "threads")
# the run options that override the preset's [train] recipe
TRAIN_OVERRIDES = ("model", "dataset", "epochs", "batch_size", "lr", "train_size", "test_size", "data_seed")


@dataclass(frozen=True)
class RunOptions:
    """Where and how a run happens, and the overrides of the preset's [train] recipe."""

    preset: str | None = option(None, "Preset name in suites/ (quick, cifar100-vgg13, ...) or a TOML file.",
                                flag=("--preset", "--config"))
    model: str | None = option(None, "Backbone (default from the preset: convnet).")
    padding: str | None = option(None, "Padding of the backbone's convs (default zeros): sets the model's "
                                 "option, e.g. convnet:padding=circular.", choices=PADDINGS)
    dataset: str | None = option(None, "shapes | photos | cifar10 | cifar100 | imagefolder:PATH.")
    data_root: str | None = option(None, "Where datasets live.")
    epochs: int | None = option(None, "Override the preset's epochs.")
    batch_size: int | None = option(None, "Override the preset's batch size.")
    lr: float | None = option(None, "Override the preset's learning rate.")
    train_size: int | None = option(None, "Generated data: training images.")
    test_size: int | None = option(None, "Generated data: test images.")
    seed: int | None = option(None, "One run seed (default: the preset's seeds).", low=0)
    seeds: str | None = option(None, "Training seeds: 0,1,2 or a count (3 = 0,1,2); the data seed "
                               "stays fixed.", metavar="LIST|COUNT")
    data_seed: int | None = option(None, "Seed of the generated data, corruptions, perturbations and "
                                   "shifts (default 0).")
    device: str | None = option(None, "cpu (default) or cuda[:N].")
    results: str | None = option(None, "Result store (default ./results, or POOLBENCH_RESULTS).")
    executor: str | None = option(None, "Where cells run (default: POOLBENCH_EXECUTOR, else auto: worker "
                                  "processes when 2 or more cells must be computed and 2 or more "
                                  "cores are free, else this process).", choices=EXECUTORS)
    workers: int = option(2, "Processes for --executor process.", low=1)
    threads: int | None = option(None, "torch threads per process (default: POOLBENCH_THREADS, else "
                                 "the free cores shared among the workers).", low=1)
    amp: str | None = option(None, "Mixed-precision training (default bf16 on CUDA, off on CPU); part "
                             "of the recipe.", choices=AMP_MODES)
    checkpoint: str | None = option(None, "Evaluate this trained model instead of training (one pool).")
    recipe: str | None = option(None, "shared: every pool trains with the preset's recipe; tuned: each "
                                "pool's learning rate chosen from x0.5, x1, x2 of it by the error on a "
                                "validation split of the training images (docs/suites.md) [default: "
                                "the preset's [train] recipe, else shared].", choices=RECIPES)
    resolve: float | None = option(None, "The difference the seed planner sizes the verdicts for "
                                   "(default: the observed one).", low=0, low_open=True)
    progress: bool = option(True, "Progress bars.")
    strict: bool = option(False, "Audit: refuse (exit 2) a stored result, prediction file or cached "
                          "model that fails verification, or was written before digests, instead "
                          "of setting it aside into .damaged/ and computing it again.")
    command: str | None = option(None, "The line recorded in <results>/commands.log (default: this "
                                 "call).", cli=False)


def option_classes(suite: str) -> tuple[type, ...]:
    """The dataclasses whose fields ``run(suite, ...)`` takes as keywords, in precedence order."""
    return RunOptions, TrainSettings, SlurmOptions, get_suite(suite).Options


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
    reference: str | None = None     # the pool the differences are taken to
    verdicts: list[str] = field(default_factory=list)   # one line per pool and difference
    recipe: str = "shared"           # shared | tuned (``selection``)
    selection: dict | None = None    # tuned: the chosen values, the grid and what choosing cost

    @property
    def narrow(self) -> pd.DataFrame:
        """The table the terminal shows first (``suites.verdicts.narrow``); ``table`` has all."""
        out = narrow(self.table, self.reference, get_suite(self.suite).verdict_metric)
        if "recipe" in self.table.columns and "recipe" not in out.columns:
            out.insert(0, "recipe", self.table["recipe"].reindex(out.index))
        return out

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a tidy DataFrame (one measured value per row)."""
        return pd.DataFrame(self.rows)


def _split(suite_obj, options: dict[str, Any]) -> tuple[RunOptions, TrainSettings, dict[str, Any]]:
    """``options`` taken apart: the run's, the training settings and the suite's own (the Slurm
    options are built with the preset, in ``_plan``)."""
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    run_fields |= {f.name for f in dataclasses.fields(SlurmOptions)}
    train_fields = {f.name for f in dataclasses.fields(TrainSettings)}
    suite_fields = {f.name for f in dataclasses.fields(suite_obj.Options)}
    unknown = sorted(set(options) - run_fields - train_fields - suite_fields)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(run_fields | train_fields | suite_fields), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown {suite_obj.name} option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}{hint} ({suite_obj.name} options: "
                         f"{', '.join(sorted(suite_fields))}; the run's: `poolbench run {suite_obj.name} -h`)")
    own_run = {f.name for f in dataclasses.fields(RunOptions)}
    run_opts = build_options(RunOptions, {k: v for k, v in options.items() if k in own_run}, "run")
    settings = build_options(TrainSettings, {k: v for k, v in options.items() if k in train_fields},
                             "training")
    own = {k: v for k, v in options.items() if k in suite_fields and k not in run_fields}
    return run_opts, settings, own


def run(suite: str, pools: list[str] | tuple[str, ...] | str | None = None, *,
        log: Callable[[str], None] | None = None, **options) -> RunResult:
    """Run one suite for ``pools`` (specs such as ``"lift:kernel_size=7"``; default ``max``).

    ``options`` are the fields of :class:`RunOptions` (``preset``, ``seeds``, ``epochs``,
    ``results``, ``executor``...), of ``TrainSettings`` (``checkpoint_minutes``...) and of the
    suite's ``Options`` (e.g. ``reference="avg"``, ``corruptions="gaussian_noise,fog"``), which win
    over the preset's table. Finished cells come from the store under ``results``; the rest are
    computed and stored. ``amp`` (off | bf16 | fp16; default bf16 on CUDA, off elsewhere) is part
    of the recipe. ``log`` receives the progress lines (default: stderr).

    >>> result = poolbench.run("robustness", pools=["lift"])   # doctest: +SKIP
    >>> result.table                                           # the table the CLI prints
    """
    plan = _plan(suite, pools, options)
    suite_obj, opt, opts, ctx, cells = plan.suite, plan.run, plan.options, plan.ctx, plan.cells
    name, all_pools, named, notes = suite_obj.name, plan.pools, plan.named, suite_obj.notes(plan.options)
    if is_main_process():
        record = opt.command or _call_text(name, named, options)
        try:
            append_line(Path(ctx.results) / "commands.log", record)
        except (OSError, DiskFull) as exc:  # a read-only or full store still shows what it holds
            notes.append(f"{ctx.results} is not writable ({getattr(exc, 'strerror', None) or exc}): "
                         "this command is not recorded in commands.log")
    lrs = {cfg.pool: cfg.lr for cfg in plan.configs}
    chosen = None
    if plan.recipe == "tuned":
        chosen = select(plan.configs, ctx, plan.executor,
                        lambda c: with_data(c, opt.data_root, {}), log)
        lrs = chosen.chosen
        configs = [dataclasses.replace(cfg, lr=lrs[cfg.pool]) for cfg in plan.configs]
        cells = with_data(suite_obj.cells(configs, opts), opt.data_root, suite_obj.run_settings(opts))
        notes += selection_notes(chosen)
    if opt.strict:  # an audit: every stored cell of the run verifies, or the run stops here
        audit = ResultStore(ctx.results, strict=True)
        for cell in cells:
            audit.has(name, cell_hash(name, cell))
    report = run_cells(name, cells, ctx, plan.executor, log=log)
    rows = report.rows
    if chosen:  # which recipe made each row: not stored, as a shared cell the tuned recipe chose
        rows = [{**r, "recipe": "tuned", "lr": lrs.get(r.get("pool"))} for r in rows]  # is one cell
    errors = [r for r in rows if r.get("error")]
    measured = [r for r in rows if not r.get("error")]
    table = (suite_obj.table(pd.DataFrame(measured), opts, ResultStore(ctx.results)) if measured
             else failed_table(errors))
    if measured and plan.recipe == "tuned" and not table.empty:
        table.insert(0, "recipe", [recipe_text(lrs.get(p), plan.configs[0].lr) for p in table.index])
    notes += table.attrs.get("notes", [])
    if measured and _one_seed_each(measured):
        notes.append(ONE_SEED_NOTE)
    if late := plateau_note(measured):
        notes.append(late)
    reference = getattr(opts, "reference", None) or getattr(opts, "baseline", None)
    return RunResult(suite=name, options=opts, pools=all_pools, rows=rows, table=table,
                     notes=notes, cells=len(cells), computed=report.computed,
                     skipped=report.skipped, failed=report.failed, results=ctx.results, errors=errors,
                     reference=reference,
                     verdicts=verdict_lines(table, reference, opt.resolve) if measured else [],
                     recipe=plan.recipe, selection=selection_summary(chosen) if chosen else None)


@dataclass
class Plan:
    """What a run would do: the suite and its options, the context and the cells."""

    suite: Any
    run: RunOptions
    options: Any
    ctx: RunContext
    cells: list[dict]
    executor: str
    pools: list[str]
    named: tuple
    configs: list[TrainConfig] = field(default_factory=list)   # the shared recipe per pool and seed
    recipe: str = "shared"


def cells_of(suite: str, pools=None, **options) -> tuple[list[dict], str]:
    """The cells of ``suite`` that ``run(suite, pools, **options)`` would compute, and its
    result store (with ``--recipe tuned``: the final cells of the pools whose choice is stored,
    and for accuracy its candidates too). Nothing is trained or written."""
    pairs, results = status_cells(suite, pools, **options)
    return [cell for name, cell in pairs if name == suite], results


def status_cells(suite: str, pools=None, **options) -> tuple[list[tuple[str, dict]], str]:
    """(suite, cell) of every cell the run would compute, and its result store: what
    ``poolbench status SUITE ...`` reports on. With ``--recipe tuned``: the candidates (accuracy
    cells), then the final cells of the pools whose choice is already stored (the others' wait
    for their candidates). Nothing is trained or written."""
    plan = _plan(suite, pools, options)
    if plan.recipe == "shared":
        return [(suite, cell) for cell in plan.cells], plan.ctx.results
    root, settings = plan.run.data_root, plan.suite.run_settings(plan.options)
    return planned(plan.suite, plan.options, plan.configs, plan.ctx, lambda c: with_data(c, root, {}),
                   lambda c: with_data(c, root, settings)), plan.ctx.results


def _plan(suite: str, pools, options: dict) -> Plan:
    suite_obj = get_suite(suite)
    name = suite_obj.name
    opt, settings, own = _split(suite_obj, options)
    slurm_fields = {f.name for f in dataclasses.fields(SlurmOptions)}
    slurm_given = {k: v for k, v in options.items() if k in slurm_fields and v is not None}
    executor = opt.executor or env_default("executor", "auto")
    if executor not in EXECUTORS:
        raise UsageError(f"POOLBENCH_EXECUTOR {executor!r}: use one of {', '.join(EXECUTORS)}")
    if not suite_obj.parallel:
        if executor not in ("sequential", "auto"):
            raise UsageError(f"{name} times pools side by side: use --executor sequential")
        executor = "sequential"
    preset_data = load_preset(opt.preset)
    named = (pools,) if isinstance(pools, str) else tuple(pools or ())
    user_pools = [canonical_spec(p) for p in named] or ["max"]  # unknown names fail here, before work
    if opt.checkpoint and len(set(user_pools)) > 1:
        raise UsageError("--checkpoint evaluates one model: pass exactly one --pool")
    device = resolve_device(opt.device)
    if opt.threads and executor != "slurm" and opt.threads > len(os.sched_getaffinity(0)):
        # more threads than cores makes every op wait for its slowest thread (measured: 5x slower)
        warnings.warn(f"--threads {opt.threads} is more than the {len(os.sched_getaffinity(0))} cores "
                      "this process may use: training and timings run slower; pass at most that "
                      "many", stacklevel=2)
    model = opt.model
    if opt.padding:
        # a backbone option: it rides in the model name, which configs, hashes and rows record
        model = model_spec(model or preset_data["train"].get("model", TrainConfig.model), opt.padding)
    flags = {**{k: getattr(opt, k) for k in SHARED_WITH_SUITES}, "model": model, "device": device}

    fields = {f.name for f in dataclasses.fields(suite_obj.Options)}
    values = {**suite_obj.pool_defaults(named), **preset_data.get(name, {})}
    values.update({k: v for k, v in flags.items() if k in fields and v is not None})
    if opt.seed is not None and opt.seeds is not None:
        raise UsageError("pass --seed N (one seed) or --seeds LIST|COUNT, not both")
    run_seeds = [opt.seed] if opt.seed is not None else parse_seeds(opt.seeds)
    if run_seeds is not None and "seeds" in fields:
        values["seeds"] = run_seeds
    values.update({k: v for k, v in own.items() if v is not None})
    _check_preset_table(suite_obj.Options, values, preset_data, name)
    opts = suite_obj.options(values)

    all_pools = list(dict.fromkeys(user_pools + [canonical_spec(p) for p in suite_obj.extra_pools(opts)]))
    overrides = {k: flags[k] for k in TRAIN_OVERRIDES}
    # mixed precision changes the weights, so it is in the recipe: the flag, else the preset's,
    # else the device's default
    overrides["amp"] = check_amp(opt.amp or preset_data.get("train", {}).get("amp") or default_amp(device))
    configs = [train_config(preset_data, p, s, overrides) for p in all_pools
               for s in (run_seeds or seeds_of(preset_data, None))]
    init_distributed(device)
    ctx = RunContext(
        results=str(opt.results or env_default("results", "results")), device=device,
        data_root=opt.data_root, progress=opt.progress, checkpoint=opt.checkpoint, threads=opt.threads,
        workers=opt.workers, extra={"strict": opt.strict, "slurm": build_options(
            SlurmOptions, {**preset_options(preset_data.get("slurm", {})), **slurm_given}, "slurm")},
        checkpoint_pool=suite_obj.checkpoint_pool(user_pools[0]) if opt.checkpoint else None,
        train=settings, **suite_obj.run_settings(opts),
    )
    cells = with_data(suite_obj.cells(configs, opts), opt.data_root, suite_obj.run_settings(opts))
    return Plan(suite_obj, opt, opts, ctx, cells, executor, all_pools, named, configs,
                recipe(opt.recipe, preset_data, isinstance(suite_obj, TrainedSuite), suite_obj.name,
                       opt.checkpoint))


def _check_preset_table(options_class, values: dict, preset: dict, name: str) -> None:
    """The numbers the preset's [name] table gives (and no flag overrode), range-checked with
    the file's key in the message instead of a flag the user never typed."""
    table = preset.get(name, {})

    def numbers(v):
        items = v if isinstance(v, (list, tuple)) else (v,)
        return all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items)

    from_file = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                 if k in table and v is table[k] and numbers(v)}
    check_ranges(options_class, values=from_file,
                 source="key {name} in " + f"[{name}] of {preset.get('_path', 'the preset')}")


def with_data(cells: list[dict], data_root: str | None, settings: dict) -> list[dict]:
    """``cells`` with the fingerprint of their data (``poolbench.data.fingerprint``): in every
    training config (so in the checkpoint key and the cell hash) and, for official -C/-P sets,
    in the cell. Missing data fails here, before any stored cell is looked up."""
    prints: dict[tuple[str, int], str] = {}
    # run settings hold flags too (corruption_on_the_fly); only the *_data ones name folders
    official = {f"{key}_fingerprint": folder_fingerprint(path, f"--{key.replace('_', '-')}")
                for key, path in sorted(settings.items()) if key.endswith("_data") and path}
    out = []
    for cell in cells:
        cell = {**cell, **official}
        train = cell.get("train")
        if train is not None:
            key = (train["dataset"], train.get("holdout", 0))  # a validation split is data of its own
            if key not in prints:
                prints[key] = dataset_fingerprint(key[0], data_root, holdout=key[1])
            cell["train"] = {**train, "data_fingerprint": prints[key]}
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


def _call_text(suite: str, pools: tuple, options: dict) -> str:
    """This call as Python, for commands.log (a record only: nothing reads it back)."""
    parts = [repr(suite)] + ([f"pools={list(pools)!r}"] if pools else [])
    parts += [f"{k}={v!r}" for k, v in sorted(options.items()) if v is not None]
    return f"poolbench.run({', '.join(parts)})"
