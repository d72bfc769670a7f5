"""Classification error (top-1, top-k) and shift consistency (Zhang 2019)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UsageError
from ._inputs import _np, _predictions


def top1_error(logits_or_preds: Any, labels: Any) -> float:
    """Fraction of samples whose top-1 class differs from the label.

    ``logits_or_preds`` is (N,) class indices or (N, C) logits/probabilities.
    """
    y = _np(labels, "labels").reshape(-1)
    p = _predictions(logits_or_preds, "predictions", label_ndim=1).reshape(-1)
    if p.shape != y.shape:
        raise UsageError(f"predictions ({p.shape[0]}) and labels ({y.shape[0]}) differ in length; "
                         "pass one prediction per label")
    if y.size == 0:
        raise UsageError("no samples given to top1_error; evaluate at least one image")
    return float(np.mean(p != y))


def topk_error(logits: Any, labels: Any, k: int = 5) -> float:
    """Fraction of samples whose label is not among the k highest logits ((N, C) logits)."""
    z = _np(logits, "logits")
    y = _np(labels, "labels").reshape(-1)
    if z.ndim != 2:
        raise UsageError(f"logits must have shape (N, classes); got {z.shape}")
    if z.shape[0] != y.shape[0]:
        raise UsageError(f"logits ({z.shape[0]}) and labels ({y.shape[0]}) differ in length; "
                         "pass one row of logits per label")
    if y.size == 0:
        raise UsageError("no samples given to topk_error; evaluate at least one image")
    if not 1 <= int(k) <= z.shape[1]:
        raise UsageError(f"k={k} is outside 1..{z.shape[1]} (the number of classes); pick a smaller k")
    order = np.argsort(-z, axis=1, kind="stable")[:, : int(k)]
    hit = (order == y[:, None]).any(axis=1)
    return float(1.0 - hit.mean())


# --------------------------------------------------------------------------- shift consistency

def _view(x: Any, name: str) -> np.ndarray:
    a = _np(x, name)
    if a.ndim == 2:
        a = a.argmax(axis=-1)
    if a.ndim != 1:
        raise UsageError(f"{name} must be (N,) predictions or (N, classes) logits; got shape {a.shape}")
    return _predictions(a, name)


def consistency(pred_a: Any, pred_b: Any) -> float:
    """100 * fraction of images with the same top-1 class in two views (logits (N, C) or (N,))."""
    a, b = _view(pred_a, "pred_a"), _view(pred_b, "pred_b")
    if a.shape != b.shape:
        raise UsageError(f"the two views have {a.size} and {b.size} predictions; pass one per image for both")
    if a.size == 0:
        raise UsageError("no images given to consistency; evaluate at least one image")
    return float(100.0 * np.mean(a == b))
