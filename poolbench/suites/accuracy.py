"""Clean accuracy: top-1/top-5 error, parameters and training cost per pool, with the
evaluation interval (paired bootstrap over test images), the seed interval, the difference to
the reference pool and each pool's rank (``suites.intervals``)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..options import check_fields, option
from ..registry import canonical_spec
from ..store import Measured, make_row
from ..training.evaluate import predict_dataset, top_classes
from . import register_suite
from .base import DEFAULT_REFERENCE, TrainedSuite, train_columns, training_rows
from .intervals import METHOD_NOTE, add_intervals, mean_over_seeds, per_image, wrong_top1

TOP1 = "top-1 err %"


@dataclass(frozen=True)
class AccuracyOptions:
    """``reference``: the pool the table's differences are taken to, when the run has it (it is
    not trained for this suite alone); the [train] recipe decides everything else."""

    reference: str = option(DEFAULT_REFERENCE, "Pool the differences are taken to, when the run has it.")

    def __post_init__(self):
        check_fields(self, "accuracy")
        object.__setattr__(self, "reference", canonical_spec(self.reference))


class AccuracySuite(TrainedSuite):
    """Train each pool in the backbone and report top-1/top-5 error, parameters and cost."""

    name = "accuracy"
    title = "Clean accuracy"
    order = 10
    Options = AccuracyOptions

    def cell_options(self, options) -> dict:
        return {}  # the reference only changes the view

    def evaluate(self, cell: dict, ctx, cfg, bundle, result) -> Measured | list[dict]:
        logits, labels = predict_dataset(result.model, bundle.test, ctx.device, progress=ctx.progress,
                                         desc=f"eval {cfg.pool}", what=bundle.split_name)
        base = train_columns(cfg)
        arrays = {"labels": labels.numpy(), "clean": top_classes(logits)}
        top5_wrong = (arrays["clean"] != arrays["labels"][:, None]).all(axis=1)
        n = len(labels)
        rows = [  # the errors are views of the stored predictions, as the intervals are
            make_row(base, "top1_error", 100 * wrong_top1(arrays, "clean").mean(), "%", n, predictions="clean"),
            make_row(base, "top5_error", 100 * top5_wrong.mean(), "%", n, predictions="clean"),
        ] + training_rows(base, result)
        return Measured(rows, arrays)

    def table(self, frame: pd.DataFrame, options=None, store=None) -> pd.DataFrame:
        wanted = {"top1_error": TOP1, "top5_error": "top-5 err %", "params": "params",
                  "train_time": "train s", "train_throughput": "img/s"}
        sub = frame[frame["metric"].isin(wanted)]
        wide = sub.pivot_table(index="pool", columns="metric", values="value", aggfunc="mean", sort=False)
        wide = wide[[m for m in wanted if m in wide.columns]].rename(columns=wanted)
        seeds = sub.groupby("pool", sort=False)["seed"].nunique().rename("seeds")
        wide = wide.join(seeds)
        for col in ("params", "seeds"):
            if col in wide.columns:
                wide[col] = wide[col].round().astype("Int64")
        top1 = sub[sub["metric"] == "top1_error"]
        if top1.empty:
            return wide
        per_seed = {p: dict(zip(g["seed"], g["value"])) for p, g in top1.groupby("pool", sort=False)}
        values = per_image(top1, store, self.name, lambda a, k: 100 * wrong_top1(a, k),
                           lambda r: (r["pool"], int(r["seed"])))
        keys = {p: [k for k in values if k[0] == p] for p in per_seed}
        reference = (options or AccuracyOptions()).reference
        return add_intervals(wide, TOP1, per_seed, lambda m: {p: mean_over_seeds(m, ks)
                                                              for p, ks in keys.items() if ks},
                             values, reference if reference in per_seed else None)

    def notes(self, options) -> list[str]:
        return [METHOD_NOTE]


SUITE = register_suite(AccuracySuite())
