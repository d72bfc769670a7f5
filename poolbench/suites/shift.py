"""Shift consistency (Zhang 2019): does the top-1 class survive a small shift of the input?

Protocols (the ``shift_kind`` of every row):
- ``crop``: zero-pad the image by k on each side and take two random S x S crops with offsets
  in {0..2k}^2 (the small-image variant; k = max_shift);
- ``circular``: torch.roll by two random offsets in [-3, 2] per axis; with a backbone of
  circular convolutions (``--padding circular``, the model ``convnet:padding=circular``) the
  polyphase pools ``aps`` and ``lps`` are exactly invariant to it (100%), max pooling is not;
- ``diagonal_crop``: the published diagonal protocol: the window moves by 0..k pixels along
  the diagonal without wrap-around (a crop of the zero-padded image, the uncovered border
  zero), top-1 accuracy and the probability of the true class in % per shift;
- ``diagonal_roll``: the same sweep as a circular roll (content wraps around).
Offsets come from a generator seeded by the data seed (the same for every training seed), and
every view's top-1 class is stored per image, so every number has a paired bootstrap interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..options import check_fields, option
from ..registry import canonical_spec
from ..store import Measured, make_row
from ..training.evaluate import predict
from . import register_suite
from .base import DEFAULT_REFERENCE, TrainedSuite, train_columns
from .intervals import METHOD_NOTE, add_intervals, mean_over_seeds, per_image

SHIFT_KINDS = ("crop", "circular", "diagonal_crop", "diagonal_roll")
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


def diagonal_views(images: torch.Tensor, shift: int, k: int, kind: str) -> torch.Tensor:
    """The images moved by ``shift`` pixels along the diagonal: ``diagonal_crop`` without
    wrap-around (the window of the k-padded image at offset k + shift), ``diagonal_roll`` as a
    circular roll."""
    if kind == "diagonal_roll":
        return torch.roll(images, shifts=(shift, shift), dims=(2, 3))
    return crop_views(images, k, np.full((images.shape[0], 2), k + shift))


@dataclass(frozen=True)
class ShiftOptions:
    """The ``[shift]`` preset table and its flags: test images, random offset draws averaged,
    k (crop offsets in {0..2k}, the diagonal sweeps 0..k), and the pool the differences are
    taken to when the run has it."""

    subset: int = option(1000, "Test images evaluated.", low=1)
    passes: int = option(5, "Random offset draws averaged.", low=1)
    max_shift: int = option(4, "k: crop offsets in {0..2k}, the diagonal sweeps 0..k.", low=0)
    reference: str = option(DEFAULT_REFERENCE, "Pool the differences are taken to, when the run has it.")

    def __post_init__(self):
        check_fields(self, "shift")
        object.__setattr__(self, "reference", canonical_spec(self.reference))


class ShiftSuite(TrainedSuite):
    """Shift consistency under crop and circular shifts, and accuracy along a diagonal shift."""

    name = "shift"
    title = "Shift consistency"
    order = 20
    Options = ShiftOptions

    def cell_options(self, options) -> dict:
        return {"subset": options.subset, "passes": options.passes, "max_shift": options.max_shift}

    def evaluate(self, cell: dict, ctx, cfg, bundle, result) -> Measured | list[dict]:
        arrays = bundle.eval_arrays(cell["subset"])
        images = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float().div_(255)
        labels = np.asarray(arrays.labels)
        n = len(labels)
        k, passes = cell["max_shift"], cell["passes"]
        rng = np.random.default_rng([cfg.data_seed, 7919])   # offsets are data: one draw for every seed
        model = result.model
        base = train_columns(cfg)
        proto = {"max_shift": k, "passes": passes, "subset": n}
        preds = {"labels": labels}

        def top1(x):
            return predict(model, x, ctx.device).argmax(1).numpy().astype(np.int16)

        views = {"crop": [], "circular": []}
        for _ in range(passes):
            a, b = rng.integers(0, 2 * k + 1, size=(2, n, 2))
            views["crop"].append((top1(crop_views(images, k, a)), top1(crop_views(images, k, b))))
            lo, hi = CIRCULAR_RANGE
            a, b = rng.integers(lo, hi + 1, size=(2, n, 2))
            views["circular"].append((top1(roll_views(images, a)), top1(roll_views(images, b))))
        rows = []
        for kind, pairs in views.items():
            preds[kind] = np.stack([np.stack(pair) for pair in pairs])     # (passes, 2 views, n)
            extra = proto if kind == "crop" else {**proto, "max_shift": None, "offset_range": "[-3, 2]"}
            rows.append(make_row(base, "consistency", same_class(preds, kind).mean(), "%", n,
                                 shift_kind=kind, predictions=kind, **extra))
        for kind in ("diagonal_crop", "diagonal_roll"):
            tops, probs = [], []
            for s in range(k + 1):
                logits = predict(model, diagonal_views(images, s, k, kind), ctx.device)
                tops.append(logits.argmax(1).numpy().astype(np.int16))
                probs.append(logits.softmax(1)[torch.arange(n), torch.from_numpy(labels).long()].numpy())
            preds[kind], preds[f"{kind}:p"] = np.stack(tops), 100 * np.stack(probs).astype(np.float32)
            for s in range(k + 1):
                extra = {"shift_kind": kind, "shift": s, "subset": n}
                rows.append(make_row(base, "top1_accuracy", 100.0 * float((preds[kind][s] == labels).mean()), "%",
                                     n, predictions=f"{kind}#{s}", **extra))
                rows.append(make_row(base, "true_class_probability", float(preds[f"{kind}:p"][s].mean()), "%",
                                     n, predictions=f"{kind}:p#{s}", **extra))
        return Measured(rows, preds)

    def table(self, frame: pd.DataFrame, options=None, store=None) -> pd.DataFrame:
        frame = _label_models(frame)
        cons = frame[frame["metric"] == "consistency"]
        wide = cons.pivot_table(index="pool", columns="shift_kind", values="value", aggfunc="mean", sort=False)
        wide.columns = [f"consistency {c} %" for c in wide.columns]
        diag = frame[(frame["metric"] == "top1_accuracy") & frame["shift_kind"].astype(str).str.startswith("diagonal")]
        if len(diag):
            clean = diag[(diag["shift"] == 0) & (diag["shift_kind"] == diag["shift_kind"].iloc[0])]
            wide = wide.join(clean.groupby("pool", sort=False)["value"].mean().rename("clean acc %"))
            for kind, g in diag.groupby("shift_kind", sort=True):
                spread = g.groupby(["pool", "shift"])["value"].mean().groupby("pool").agg(lambda v: v.max() - v.min())
                wide = wide.join(spread.rename(f"acc range {kind}"))
        reference = (options or ShiftOptions()).reference
        for kind in ("crop", "circular"):
            rows = cons[cons["shift_kind"] == kind]
            column = f"consistency {kind} %"
            if rows.empty or column not in wide.columns:
                continue
            per_seed = {p: dict(zip(g["seed"], g["value"])) for p, g in rows.groupby("pool", sort=False)}
            values = per_image(rows, store, self.name, same_class, lambda r: (r["pool"], int(r["seed"])))
            keys = {p: [key for key in values if key[0] == p] for p in per_seed}
            wide = add_intervals(wide, column, per_seed, lambda m, keys=keys: {p: mean_over_seeds(m, ks)
                                                                            for p, ks in keys.items() if ks},
                                 values, reference if reference in per_seed else None, lower_is_better=False)
        return wide

    def notes(self, options) -> list[str]:
        return [METHOD_NOTE,
                "circular: the two views are circular shifts of one image; only with circular "
                "padding in the backbone (--padding circular) can a pool be exactly invariant to them "
                "(aps and lps are; max is not)",
                "diagonal_crop: the published sweep (no wrap-around); diagonal_roll: the same as a circular roll"]


def same_class(arrays: dict, key: str) -> np.ndarray:
    """Per image, % of the passes whose two views got the same top-1 class (consistency is the mean)."""
    views = arrays[key]                                  # (passes, 2, n)
    return 100.0 * (views[:, 0] == views[:, 1]).mean(axis=0)


def _label_models(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of several backbones (e.g. zero and circular padding) apart: ``pool [model]``."""
    if "model" not in frame.columns or frame["model"].nunique(dropna=True) <= 1:
        return frame
    frame = frame.copy()
    frame["pool"] = frame["pool"].astype(str) + " [" + frame["model"].astype(str) + "]"
    return frame


SUITE = register_suite(ShiftSuite())
