"""Shift consistency (Zhang 2019): does the top-1 class survive a small shift of the input?

Protocols (recorded in every row):
- ``crop``: zero-pad the image by k on each side and take two random S x S crops with offsets
  in {0..2k}^2 (the small-image variant; k = max_shift);
- ``circular``: torch.roll by two random offsets in [-3, 2] per axis;
- ``diagonal``: the sweep used for plots: a circular diagonal shift by 0..max_shift pixels,
  top-1 accuracy and mean probability of the true class per shift.
Offsets come from a generator seeded by the run seed, so the numbers are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..metrics import consistency
from ..store import make_row
from ..errors import UsageError
from ..evaluate import predict
from ..process import is_main_process
from .base import TrainedSuite, train_columns

SHIFT_KINDS = ("crop", "circular", "diagonal")
CIRCULAR_RANGE = (-3, 2)


def crop_views(images: torch.Tensor, k: int, offsets: np.ndarray) -> torch.Tensor:
    """S x S crops of the zero-padded images at per-image offsets (N, 2) in {0..2k}."""
    n, _, s, _ = images.shape
    padded = F.pad(images, (k, k, k, k))
    out = torch.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, dy:dy + s, dx:dx + s]
    return out


def roll_views(images: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    out = torch.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = torch.roll(images[i], shifts=(int(dy), int(dx)), dims=(1, 2))
    return out


@dataclass(frozen=True)
class ShiftOptions:
    """The ``[shift]`` preset table and its flags: test images, random offset draws averaged,
    and k (crop offsets in {0..2k}, the diagonal sweep 0..k)."""

    subset: int = 1000
    passes: int = 5
    max_shift: int = 4

    def __post_init__(self):
        for key in ("subset", "passes"):
            if getattr(self, key) < 1:
                raise UsageError(f"shift option {key} must be at least 1, got {getattr(self, key)}")
        if self.max_shift < 0:
            raise UsageError(f"shift option max_shift must be 0 or more, got {self.max_shift}")


class ShiftSuite(TrainedSuite):
    name = "shift"
    Options = ShiftOptions

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        cfg, bundle, result = self.trained(cell, ctx)
        if not is_main_process():
            return []
        arrays = bundle.eval_arrays(cell["subset"])
        images_u8, labels = arrays.images, arrays.labels
        images = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div_(255)
        labels = np.asarray(labels)
        n = len(labels)
        k, passes = cell["max_shift"], cell["passes"]
        rng = np.random.default_rng([cfg.seed, 7919])
        model = result.model
        base = train_columns(cfg)
        proto = {"max_shift": k, "passes": passes, "subset": n}
        rows = []

        def top1(x):
            return predict(model, x, ctx.device).argmax(1).numpy()

        crop_scores, roll_scores = [], []
        for _ in range(passes):
            a, b = rng.integers(0, 2 * k + 1, size=(2, n, 2))
            crop_scores.append(consistency(top1(crop_views(images, k, a)), top1(crop_views(images, k, b))))
            lo, hi = CIRCULAR_RANGE
            a, b = rng.integers(lo, hi + 1, size=(2, n, 2))
            roll_scores.append(consistency(top1(roll_views(images, a)), top1(roll_views(images, b))))
        rows.append(make_row(base, "consistency", float(np.mean(crop_scores)), "%", n,
                             shift_kind="crop", **proto))
        rows.append(make_row(base, "consistency", float(np.mean(roll_scores)), "%", n,
                             shift_kind="circular", **{**proto, "max_shift": None, "offset_range": "[-3, 2]"}))
        for s in range(k + 1):
            logits = predict(model, torch.roll(images, shifts=(s, s), dims=(2, 3)), ctx.device)
            prob = logits.softmax(1)[torch.arange(n), torch.from_numpy(labels).long()].mean().item()
            acc = 100.0 * float((logits.argmax(1).numpy() == labels).mean())
            extra = {"shift_kind": "diagonal", "shift": s, "subset": n}
            rows.append(make_row(base, "top1_accuracy", acc, "%", n, **extra))
            rows.append(make_row(base, "true_class_probability", prob, "", n, **extra))
        return rows

    def table(self, frame: pd.DataFrame, options=None) -> pd.DataFrame:
        cons = frame[frame["metric"] == "consistency"]
        wide = cons.pivot_table(index="pool", columns="shift_kind", values="value", aggfunc="mean", sort=False)
        wide.columns = [f"consistency {c} %" for c in wide.columns]
        diag = frame[(frame["metric"] == "top1_accuracy") & (frame["shift_kind"] == "diagonal")]
        if len(diag):
            acc0 = diag[diag["shift"] == 0].groupby("pool", sort=False)["value"].mean().rename("clean acc %")
            spread = diag.groupby(["pool", "shift"])["value"].mean().groupby("pool").agg(lambda v: v.max() - v.min())
            wide = wide.join(acc0).join(spread.rename("acc range over shifts"))
        return wide


SUITE = ShiftSuite()
