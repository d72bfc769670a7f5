"""The report's section on ``--recipe tuned``: each pool under the shared recipe and under its
own chosen learning rate, side by side with their seed intervals, the chosen values and every
validation error, the pools whose ranking changes, and what the selection cost.

It reads the choice records (the ``selection`` rows, ``poolbench.selection``) and the accuracy
cells: a pool's shared results are the cells of the record's shared recipe, its tuned results
those of the same recipe at the chosen rate (the same cells where the shared rate was chosen).
"""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from ..canonical import canonical_json
from ..metrics.uncertainty import seed_interval
from ..selection import CANDIDATES, SUITE
from .markdown import Document, code_span
from .tables import sort_pools

TITLE = "Recipe selection: shared and tuned"


def _interval(values: list[float]) -> tuple[str, float]:
    """("mean [lo, hi] (n)", mean) of per-seed errors; "n/a" without any."""
    if not values:
        return "n/a", math.nan
    est = seed_interval(values)
    span = "" if math.isnan(est.low) else f" [{est.low:.2f}, {est.high:.2f}]"
    return f"{est.value:.2f}{span} ({len(values)})", est.value


def _ranks(means: dict[str, float]) -> dict[str, int]:
    """1 = the lowest error among the pools that have one."""
    known = sorted((v, p) for p, v in means.items() if not math.isnan(v))
    return {p: i + 1 for i, (_, p) in enumerate(known)}


def per_seed(accuracy: pd.DataFrame, recipes: dict, recipe: dict) -> dict[int, float]:
    """{seed: top-1 error} of the accuracy cells trained with ``recipe`` (seed-less)."""
    key = canonical_json(recipe)
    top1 = accuracy[accuracy["metric"] == "top1_error"]
    keep = [canonical_json(recipes.get(str(h), {})) == key for h in top1["config_hash"]]
    return {int(s): float(v) for s, v in zip(top1[keep]["seed"], top1[keep]["value"])}


def comparison(records: pd.DataFrame, accuracy: pd.DataFrame, recipes: dict) -> pd.DataFrame:
    """One row per pool with a choice record: its validation errors, the chosen rate, and its
    clean error under the shared and the tuned recipe (per-seed values, means, ranks)."""
    rows = []
    for chash, rec in records.groupby("config_hash", sort=False):
        chosen = rec[rec["metric"] == "chosen_lr"].iloc[0]
        shared = dict(recipes.get(str(chash), {}))
        if not shared:
            continue
        shared_errors = per_seed(accuracy, recipes, shared)
        tuned_errors = per_seed(accuracy, recipes, {**shared, "lr": float(chosen["value"])})
        val = rec[rec["metric"] == "validation_error"].sort_values("lr_factor")
        rows.append({
            "pool": str(chosen["pool"]), "model": str(chosen["model"]), "dataset": str(chosen["dataset"]),
            "shared_lr": float(chosen["shared_lr"]), "lr": float(chosen["value"]),
            "factor": float(chosen["lr_factor"]), "holdout": int(chosen["holdout"]),
            "validation": {float(f): (None if pd.isna(v) else float(v))
                           for f, v in zip(val["lr_factor"], val["value"])},
            "shared": shared_errors, "tuned": tuned_errors,
            "new_trainings": 0 if float(chosen["lr_factor"]) == 1.0 else len(tuned_errors),
        })
    return pd.DataFrame(rows)


def selection_section(doc: Document, ctx) -> None:
    records = ctx.rows[ctx.rows["suite"] == SUITE]
    accuracy = ctx.rows[ctx.rows["suite"] == CANDIDATES]
    table = comparison(records, accuracy, ctx.recipes)
    if table.empty:
        doc.note("The choice records name no recipe found in these stores.")
        return
    grid = sorted({float(f) for f in records["lr_factor"].dropna()})
    seeds = sorted({int(s) for s in records["seed"].dropna()})
    factors = ", x".join(f"{g:g}" for g in grid)
    doc.para(f"With `--recipe tuned` each pool's learning rate is chosen from x{factors} "
             f"the shared recipe's by the top-1 error on a validation split carved from the training "
             f"images (never the test set), at selection seed {', '.join(map(str, seeds))} and the "
             "recipe's own epochs; the shared rate stays unless another beats it by more than 1.96 "
             "standard errors of its validation error (docs/suites.md, \"Per-pool recipes\"). Clean "
             "top-1 error % on the test set, mean over seeds with its 95% Student-t interval over the "
             "seeds and the seed count in brackets.")
    for (model, dataset), group in table.groupby(["model", "dataset"], sort=True):
        doc.heading(f"{model} on {dataset}", 3)
        doc.within(records[(records["model"] == model) & (records["dataset"] == dataset)])
        shared_means = {r["pool"]: _interval(list(r["shared"].values()))[1] for _, r in group.iterrows()}
        tuned_means = {r["pool"]: _interval(list(r["tuned"].values()))[1] for _, r in group.iterrows()}
        shared_rank, tuned_rank = _ranks(shared_means), _ranks(tuned_means)
        lines = []
        for pool in sort_pools(list(group["pool"])):
            r = group[group["pool"] == pool].iloc[0]
            validation = " / ".join("failed" if v is None else f"{v:.2f}" for v in r["validation"].values())
            lines.append([pool, f"{r['shared_lr']:g}", f"{r['lr']:g} (x{r['factor']:g})", validation,
                          str(r["holdout"]), _interval(list(r["shared"].values()))[0],
                          _interval(list(r["tuned"].values()))[0],
                          str(shared_rank.get(pool, "")), str(tuned_rank.get(pool, ""))])
        grid_text = "x" + factors.replace(", ", " / ")
        headers = ["pool", "shared lr", "tuned lr", f"validation err % ({grid_text})",
                   "validation images", "shared err % [seeds]", "tuned err % [seeds]", "shared rank",
                   "tuned rank"]
        doc.table(tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True))
        doc.para(_ranking_text(shared_rank, tuned_rank))
        doc.para(_cost_text(records[(records["model"] == model) & (records["dataset"] == dataset)], group))


def _ranking_text(shared: dict[str, int], tuned: dict[str, int]) -> str:
    both = [p for p in shared if p in tuned]
    if len(both) < 2:
        return "Ranking: fewer than two pools have results under both recipes."
    moved = [f"{code_span(p)} ({shared[p]} -> {tuned[p]})" for p in sort_pools(both) if shared[p] != tuned[p]]
    if not moved:
        return "Ranking: no pool's rank by mean clean error changes between the shared and the tuned recipe."
    return ("Ranking changes between the shared and the tuned recipe (rank by mean clean error): "
            + ", ".join(moved) + ".")


def _cost_text(records: pd.DataFrame, group: pd.DataFrame) -> str:
    times = records[records["metric"] == "candidate_train_time"]
    trainings = int(times["candidate_hash"].nunique()) if "candidate_hash" in times else len(times)
    device = times["train_device"].fillna("unknown").astype(str) if "train_device" in times else \
        pd.Series(["unknown"] * len(times), index=times.index)
    seconds = times.drop_duplicates("candidate_hash")["value"].groupby(device).sum() if len(times) \
        else pd.Series(dtype=float)
    spent = ", ".join(f"{v:.1f} s on {k}" for k, v in seconds.items()) or "no training time recorded"
    reused = int((group["factor"] == 1.0).sum())
    new = int(group["new_trainings"].sum())
    return (f"Cost: the selection trained {trainings} candidates ({spent}, from their stored training "
            f"times); the tuned recipe's final seeds reuse the shared cells of {reused} of "
            f"{len(group)} pools (shared rate chosen) and add {new} trainings for the others.")
