"""Clean accuracy: top-1/top-5 error, parameters and training cost per pool."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..metrics import topk_error
from ..store import make_row
from ..evaluate import predict_dataset
from ..process import is_main_process
from .base import TrainedSuite, train_columns, training_rows


@dataclass(frozen=True)
class AccuracyOptions:
    """Clean accuracy has no options of its own: the [train] recipe decides everything."""


class AccuracySuite(TrainedSuite):
    name = "accuracy"
    Options = AccuracyOptions

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        cfg, bundle, result = self.trained(cell, ctx)
        if not is_main_process():
            return []
        logits, labels = predict_dataset(result.model, bundle.test, ctx.device, progress=ctx.progress,
                                         desc=f"eval {cfg.pool}")
        base = train_columns(cfg)
        n = len(labels)
        return [
            make_row(base, "top1_error", 100 * topk_error(logits, labels, 1), "%", n),
            make_row(base, "top5_error", 100 * topk_error(logits, labels, min(5, logits.shape[1])), "%", n),
        ] + training_rows(base, result)

    def table(self, frame: pd.DataFrame, options=None) -> pd.DataFrame:
        wanted = {"top1_error": "top-1 err %", "top5_error": "top-5 err %", "params": "params",
                  "train_time": "train s", "train_throughput": "img/s"}
        sub = frame[frame["metric"].isin(wanted)]
        wide = sub.pivot_table(index="pool", columns="metric", values="value", aggfunc="mean", sort=False)
        wide = wide[[m for m in wanted if m in wide.columns]].rename(columns=wanted)
        seeds = sub.groupby("pool", sort=False)["seed"].nunique().rename("seeds")
        wide = wide.join(seeds)
        for col in ("params", "seeds"):
            if col in wide.columns:
                wide[col] = wide[col].round().astype("Int64")
        return wide


SUITE = AccuracySuite()
