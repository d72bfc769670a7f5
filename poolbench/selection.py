"""``--recipe tuned``: each pool's learning rate chosen on a validation split, never the test set.

The shared recipe was tuned with max pooling in view; ``tuned`` gives every (pool, backbone,
dataset) the learning rate of :data:`LR_GRID` times the shared one that scores the lowest
validation error, at the recipe's own budget (epochs, warm-up, schedule) and at
:data:`SELECTION_SEED`. The validation split is :data:`HOLDOUT_SHARE` of the training images,
drawn by the data seed (``data.bundles.hold_out``); the candidates train on the rest and are
evaluated on it, so the test set is read by no candidate. Candidates are ordinary accuracy
cells (their models cached, their rows stored, marked ``split = validation``), and the choice
is a stored record of its own (``<results>/selection/<hash>.json``: every candidate's
validation error and training time, and the choice), so a rerun trains nothing and every suite
run with ``--recipe tuned`` reuses both. The final seeds then train on the whole training set
with the chosen rate: where it is the shared one, they are the shared recipe's cells.

The rule (:func:`choose`): the lowest validation error wins (equal errors: the lower rate),
unless the shared rate's error is within :data:`Z` binomial standard errors of it (the
evaluation noise of one candidate on the validation images), in which case the shared rate
stays: one seed cannot tell such differences from noise, and keeping the shared rate then
reuses the shared cells.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import TrainConfig
from .errors import PoolbenchError, UsageError
from .process import is_main_process
from .runner import RunContext, cell_hash, run_cells
from .store import ResultStore, make_row, provenance
from .suites import get_suite
from .suites.base import bundle_for, train_columns

RECIPES = ("shared", "tuned")
LR_GRID = (0.5, 1.0, 2.0)     # the candidates' learning rates, as multiples of the shared one
SELECTION_SEED = 1000         # apart from the final seeds (0, 1, 2, ...): their luck is not the choice's
HOLDOUT_SHARE = 0.1           # of the training images, held out for validation
Z = 1.96                      # standard errors within which the shared rate stays (95%, two-sided)
RULE = "lowest-validation-error; shared within 1.96 SE; ties to the lower lr"
SUITE = "selection"           # the store folder of the choice records
CANDIDATES = "accuracy"       # the suite whose cells the candidates are


@dataclass
class Selection:
    """What ``select`` decided and what it cost."""

    chosen: dict[str, float]                       # pool -> learning rate of the final seeds
    rows: list[dict]                               # the choice records' rows
    trainings: int = 0                             # candidate trainings in all
    computed: int = 0                              # of which trained (or evaluated) by this run
    reused: int = 0                                # of which read from the store
    seconds: dict[str, float] = field(default_factory=dict)   # training device -> seconds

    def cost(self) -> dict:
        """What the selection cost, for ``--json`` and the notes."""
        return {"trainings": self.trainings, "computed": self.computed, "reused": self.reused,
                "train_seconds": {k: round(v, 3) for k, v in sorted(self.seconds.items())}}


def recipe(flag: str | None, preset: dict, trains: bool, suite: str, checkpoint: str | None) -> str:
    """shared | tuned: the ``--recipe`` flag, else the preset's [train] recipe, else shared. A
    preset's tuned recipe does not apply to a suite that ``trains`` no classifier; the flag is
    refused there, and with ``--checkpoint``."""
    chosen = flag or preset.get("train", {}).get("recipe") or "shared"
    if chosen not in RECIPES:
        raise UsageError(f"key recipe in [train] of {preset.get('_path', 'the preset')} must be one of "
                         f"{', '.join(RECIPES)}, got {chosen!r}")
    if chosen == "tuned" and not flag and not trains:
        return "shared"
    if chosen == "tuned" and not trains:
        raise UsageError(f"--recipe tuned chooses the learning rate of trained classifiers; {suite} trains "
                         "none of them: drop --recipe or use --recipe shared")
    if chosen == "tuned" and checkpoint:
        raise UsageError("--checkpoint evaluates a model trained elsewhere: drop --recipe tuned")
    return chosen


def recipe_text(lr: float | None, shared: float) -> str:
    """A pool's recipe in a run's table: "tuned: lr 0.1 (x2)"."""
    if lr is None:
        return "tuned"
    return f"tuned: lr {lr:g} ({'shared' if lr == shared else f'x{lr / shared:g}'})"


def selection_summary(chosen: Selection) -> dict:
    """The tuned recipe for ``--json``: each pool's chosen rate, the grid, the seed, the
    validation errors and what the selection cost."""
    picks = {r["pool"]: {"lr": r["value"], "lr_factor": r["lr_factor"], "shared_lr": r["shared_lr"],
                         "holdout": r["holdout"], "margin": r.get("margin")}
             for r in chosen.rows if r["metric"] == "chosen_lr"}
    for r in chosen.rows:
        if r["metric"] == "validation_error":
            picks[r["pool"]].setdefault("validation_error", {})[f"{r['lr_factor']:g}"] = r["value"]
    return {"grid": list(LR_GRID), "seed": SELECTION_SEED, "chosen": picks, "cost": chosen.cost()}


def selection_notes(chosen: Selection) -> list[str]:
    """How the tuned recipe was chosen and what it cost, one line each."""
    summary = selection_summary(chosen)
    picks = []
    for pool, pick in summary["chosen"].items():
        errs = ", ".join(f"x{k} {v:.2f}" if v is not None else f"x{k} failed"
                         for k, v in pick.get("validation_error", {}).items())
        picks.append(f"{pool} lr {pick['lr']:g} (x{pick['lr_factor']:g}; validation error % {errs})")
    cost = summary["cost"]
    seconds = ", ".join(f"{v:.1f} s on {k}" for k, v in cost["train_seconds"].items()) or "no time recorded"
    holdout = next(iter(summary["chosen"].values()))["holdout"] if summary["chosen"] else 0
    grid = ", x".join(f"{g:g}" for g in LR_GRID)
    return [(f"recipe tuned: learning rate per pool from x{grid} the shared one, by validation error on "
             f"{holdout} held-out training images at seed {SELECTION_SEED} (the shared rate stays unless "
             f"beaten by more than {Z} standard errors): " + "; ".join(picks)),
            (f"recipe tuned: the selection cost {cost['trainings']} trainings ({seconds}); "
             f"{cost['reused']} of them read from the store, {cost['computed']} computed now")]


def holdout_size(train_images: int) -> int:
    """Training images held out for validation: :data:`HOLDOUT_SHARE` of them, at least one."""
    return max(1, round(HOLDOUT_SHARE * train_images))


def choose(errors: dict[float, float], n: int) -> tuple[float, float]:
    """(the chosen multiple of the shared learning rate, the margin in points) from the
    validation errors (%) of the candidates that trained, by multiple; ``n`` validation images.

    At 11% shared error on 1000 images the margin is 1.96 * sqrt(0.11 * 0.89 / 1000) = 1.94
    points: ``{0.5: 12.0, 1.0: 11.0, 2.0: 10.0}`` keeps 1.0; ``{..., 2.0: 9.0}`` picks 2.0.
    """
    if not errors:
        raise PoolbenchError("every candidate learning rate failed to train; nothing to choose from")
    best = min(errors, key=lambda factor: (errors[factor], factor))
    if 1.0 not in errors:  # the shared rate diverged: the best of the others
        return best, math.nan
    p = errors[1.0] / 100
    margin = 100 * Z * math.sqrt(p * (1 - p) / n)
    return (1.0 if errors[1.0] - errors[best] <= margin else best), margin


def candidates(base: TrainConfig, holdout: int) -> list[TrainConfig]:
    """The candidate recipes of one pool: the shared recipe at each rate of the grid, trained
    at the selection seed on the training images less ``holdout``."""
    return [dataclasses.replace(base, lr=base.lr * factor, seed=SELECTION_SEED, holdout=holdout)
            for factor in LR_GRID]


@dataclass
class Candidates:
    """The candidate cells of every pool of a run, and where its choice record would be."""

    cells: dict[str, list[dict]]          # pool -> its candidate accuracy cells, in grid order
    holdout: dict[str, int]               # pool -> validation images
    recipe: dict[str, dict]               # pool -> its shared recipe (the fingerprinted train
                                          # settings without the seed)

    def record(self, pool: str) -> dict:
        """The cell of ``pool``'s choice record (``<results>/selection/<hash>.json``)."""
        return {"train": self.recipe[pool], "grid": list(LR_GRID), "seed": SELECTION_SEED,
                "holdout": self.holdout[pool], "rule": RULE,
                "candidates": [cell_hash(CANDIDATES, c) for c in self.cells[pool]]}


def candidate_cells(configs: list[TrainConfig], data_root: str | None,
                    prepare: Callable[[list[dict]], list[dict]]) -> Candidates:
    """The candidates of every pool of ``configs`` (the shared recipe, one per pool and seed);
    ``prepare`` puts the data fingerprint into cells (``api.with_data``). Nothing is trained."""
    bases = {}
    for cfg in configs:
        bases.setdefault(cfg.pool, cfg)
    suite = get_suite(CANDIDATES)
    holdouts = {pool: holdout_size(len(bundle_for(base, data_root).train)) for pool, base in bases.items()}
    try:
        cands = [c for pool, base in bases.items() for c in candidates(base, holdouts[pool])]
    except UsageError as exc:
        raise UsageError(f"--recipe tuned holds out {max(holdouts.values())} training images for "
                         f"validation: {exc}") from None
    # fingerprinted in one call each (a CIFAR fingerprint reads every file)
    every = prepare(suite.cells(cands, suite.options({})))
    shared = prepare([{"train": base.to_dict()} for base in bases.values()])
    k = len(LR_GRID)
    return Candidates(
        cells={pool: every[i * k:(i + 1) * k] for i, pool in enumerate(bases)}, holdout=holdouts,
        recipe={pool: {n: v for n, v in shared[i]["train"].items() if n != "seed"}
                for i, pool in enumerate(bases)})


def recorded(cands: Candidates, results: str) -> dict[str, float]:
    """{pool: chosen learning rate} of the pools whose choice is stored (nothing is run)."""
    store = ResultStore(results)
    out = {}
    for pool in cands.cells:
        chash = cell_hash(SUITE, cands.record(pool))
        if store.has(SUITE, chash):
            rows = store.read(SUITE, chash)
            out[pool] = next(float(r["value"]) for r in rows if r["metric"] == "chosen_lr")
    return out


def planned(suite, options, configs: list[TrainConfig], ctx: RunContext,
            prepare: Callable[[list[dict]], list[dict]],
            prepare_final: Callable[[list[dict]], list[dict]]) -> list[tuple[str, dict]]:
    """(suite name, cell) of a tuned run of ``suite`` without running it: the candidates, then
    the suite's cells at the chosen rates (``prepare_final`` fingerprints them) for the pools
    whose choice is already stored."""
    cands = candidate_cells(configs, ctx.data_root, prepare)
    chosen = recorded(cands, ctx.results)
    finals = [dataclasses.replace(cfg, lr=chosen[cfg.pool]) for cfg in configs if cfg.pool in chosen]
    return ([(CANDIDATES, c) for cells in cands.cells.values() for c in cells]
            + [(suite.name, c) for c in (prepare_final(suite.cells(finals, options)) if finals else [])])


def select(configs: list[TrainConfig], ctx: RunContext, executor: str,
           prepare: Callable[[list[dict]], list[dict]], log=None) -> Selection:
    """The learning rate of every pool of ``configs`` (the shared recipe, one per pool and
    seed): candidates trained as accuracy cells through ``executor`` (those in the store are
    read, even failed ones: a rerun trains nothing), then each choice recorded in the store.
    ``prepare`` puts the data fingerprint into cells (``api.with_data``)."""
    cands = candidate_cells(configs, ctx.data_root, prepare)
    store = ResultStore(ctx.results, strict=bool(ctx.extra.get("strict")))  # --strict audits them too
    named = {cell_hash(CANDIDATES, c): c for cells in cands.cells.values() for c in cells}
    stored = {h: store.read(CANDIDATES, h) for h in named if store.has(CANDIDATES, h)}
    todo = [c for h, c in named.items() if h not in stored]
    report = run_cells(CANDIDATES, todo, ctx, executor, log) if todo else None
    by_hash = dict(stored)
    for row in report.rows if report else []:
        by_hash.setdefault(row["config_hash"], []).append(row)
    if report and not is_main_process():  # torchrun: rank 0 alone returns and stores the rows,
        # and run_cells ended on a barrier after its last write
        by_hash.update({h: store.read(CANDIDATES, h) for h in named
                        if h not in by_hash and store.has(CANDIDATES, h)})
    waiting = [c for c in todo if cell_hash(CANDIDATES, c) not in by_hash]
    if waiting:  # Slurm without --wait: the choice waits for every candidate
        raise UsageError(f"{len(waiting)} candidate trainings of --recipe tuned are not finished (Slurm "
                         "--no-wait): run the same command again once `poolbench status` shows them done")
    out = Selection(chosen={}, rows=[], trainings=len(named), computed=report.computed if report else 0)
    out.reused = out.trainings - out.computed
    for pool in cands.cells:
        record = cands.record(pool)
        rows = _record(store, record, [by_hash.get(h, []) for h in record["candidates"]])
        for r in rows:
            if r["metric"] == "candidate_train_time" and r["value"] is not None:
                out.seconds[r["train_device"]] = out.seconds.get(r["train_device"], 0.0) + r["value"]
        out.chosen[pool] = float(next(r for r in rows if r["metric"] == "chosen_lr")["value"])
        out.rows += rows
    return out


def _record(store: ResultStore, cell: dict, results: list[list[dict]]) -> list[dict]:
    """The stored choice of one pool (``cell``: ``Candidates.record``), computed from its
    candidates' rows and stored when new."""
    chash = cell_hash(SUITE, cell)
    if store.has(SUITE, chash):
        return store.read(SUITE, chash)
    shared, holdout, hashes = cell["train"], cell["holdout"], cell["candidates"]
    cfg = TrainConfig(**{**shared, "milestones": tuple(shared.get("milestones", ())), "seed": SELECTION_SEED})
    base = {"suite": SUITE, "config_hash": chash, **train_columns(cfg),
            "holdout": holdout, "shared_lr": cfg.lr, "lr_grid": ",".join(f"{f:g}" for f in LR_GRID),
            "recipe": "tuned", "data_fingerprint": shared.get("data_fingerprint", ""), **provenance()}
    errors, rows, n = {}, [], None
    for factor, chash_c, got in zip(LR_GRID, hashes, results):
        top1 = next((r for r in got if r.get("metric") == "top1_error" and not r.get("error")), None)
        time = next((r for r in got if r.get("metric") == "train_time" and not r.get("error")), None)
        failed = next((r.get("error") for r in got if r.get("error")), None) or ("" if top1 else "no rows")
        extra = {"lr": cfg.lr * factor, "lr_factor": factor, "candidate_hash": chash_c}
        rows.append(make_row({**base, **extra}, "validation_error", top1 and top1["value"], "%",
                             top1 and top1.get("n"), error=failed))
        rows.append(make_row({**base, **extra, "train_device": (time or {}).get("device") or "unknown"},
                             "candidate_train_time", time and time["value"], "s", error=failed))
        if top1:
            errors[factor], n = float(top1["value"]), int(top1["n"])
    try:
        factor, margin = choose(errors, n or 1)
    except PoolbenchError:
        raise PoolbenchError(f"every candidate learning rate of {cfg.pool} failed to train "
                             f"({rows[0]['error']}); lower --lr, or check the operator") from None
    choice = {"lr": cfg.lr * factor, "lr_factor": factor, "margin": None if math.isnan(margin) else margin}
    rows.append(make_row({**base, **choice}, "chosen_lr", cfg.lr * factor, "lr"))
    if is_main_process():
        store.write(SUITE, chash, {"suite": SUITE, **cell}, rows)
    return rows
