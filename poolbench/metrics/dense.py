"""Per-pixel metrics: the segmentation confusion matrix, IoU and mIoU, and PSNR."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UsageError
from ._inputs import _np, _predictions


def confusion_matrix(pred: Any, target: Any, num_classes: int,
                     ignore_index: int | None = 255) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = target class, columns = predicted class.

    ``pred`` holds class indices shaped like ``target`` (or logits with a class axis at dim 1,
    (N, C, H, W)). Target pixels equal to ``ignore_index`` (VOC's 255 border) are skipped.
    """
    t = _np(target, "target")
    p = _np(pred, "pred")
    if p.ndim == t.ndim + 1:
        p = p.argmax(axis=1)
    p = _predictions(p, "pred")
    t = _predictions(t, "target")
    if p.shape != t.shape:
        raise UsageError(f"pred {p.shape} and target {t.shape} differ in shape; pass one class per pixel")
    k = int(num_classes)
    if k < 1:
        raise UsageError(f"num_classes must be >= 1; got {num_classes}")
    p = p.reshape(-1).astype(np.int64)
    t = t.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, a in (("target", t), ("pred", p)):
        if a.size and (a.min() < 0 or a.max() >= k):
            bad = int(a[(a < 0) | (a >= k)][0])
            raise UsageError(f"{name} holds class {bad}, outside 0..{k - 1}; fix num_classes "
                             f"or set ignore_index")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def iou_per_class(confusion: Any) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN) as fractions; NaN for a class absent from target and pred."""
    m = _np(confusion, "confusion").astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise UsageError(f"confusion must be a square (classes, classes) matrix; got {m.shape}")
    tp = np.diag(m)
    denom = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def miou(confusion: Any) -> float:
    """Mean IoU in percent over the classes present (background included)."""
    iou = iou_per_class(confusion)
    if np.all(np.isnan(iou)):
        raise UsageError("the confusion matrix is empty; evaluate at least one labelled pixel")
    return float(100.0 * np.nanmean(iou))


def psnr(x: Any, y: Any, data_range: float) -> float:
    """PSNR in dB = 10 * log10(data_range^2 / MSE); inf for identical inputs.

    ``data_range`` is the span of valid values (1.0 for [0, 1] images, 255 for uint8).
    """
    a = _np(x, "x").astype(np.float64)
    b = _np(y, "y").astype(np.float64)
    if a.shape != b.shape:
        raise UsageError(f"x {a.shape} and y {b.shape} differ in shape; compare images of the same size")
    if a.size == 0:
        raise UsageError("psnr got empty arrays; pass at least one pixel")
    if not data_range > 0:
        raise UsageError(f"data_range must be positive (1.0 for [0, 1] images, 255 for uint8); got {data_range}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return float(10.0 * math.log10(float(data_range) ** 2 / mse))
