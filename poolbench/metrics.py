"""Pure metric functions: arrays of predictions or logits in, plain floats out.

Everything here follows ``spec/protocols.md`` (Hendrycks & Dietterich 2019 for CE/mCE and
FP/T5D, Zhang 2019 for shift consistency) and is tested against hand-computed numbers.

Units: ``top1_error``/``topk_error`` and the per-severity errors ``E`` are fractions in [0, 1];
``mce``/``relative_mce``/``mfr``/``mt5d`` are percentages (x100, a model that is its own
reference scores 100); ``unnormalized_mce`` keeps the unit of the errors it is given;
``consistency`` and ``miou`` are percentages; ``psnr`` is in dB.

Inputs may be numpy arrays, torch tensors or nested lists.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import UsageError

# --------------------------------------------------------------------------- constants

BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# AlexNet top-1 errors on the OFFICIAL ImageNet-C images, severities 1..5.
ALEXNET_ERR: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
    "speckle_noise": (0.66192, 0.74440, 0.90246, 0.94548, 0.97268),
    "gaussian_blur": (0.54732, 0.70444, 0.82574, 0.89864, 0.95940),
    "spatter": (0.47196, 0.62194, 0.75052, 0.84132, 0.90182),
    "saturate": (0.59342, 0.65514, 0.51174, 0.70834, 0.82260),
}
ALEXNET_CLEAN_ERR: float = 0.43478

P_TEST_PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
    "brightness", "translate", "rotate", "tilt", "scale",
)
# The CIFAR-P evaluation uses spatter in place of snow.
CIFAR_P_TEST_PERTURBATIONS: tuple[str, ...] = tuple(
    "spatter" if p == "snow" else p for p in P_TEST_PERTURBATIONS)
P_VALIDATION_PERTURBATIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "shear")
ALL_PERTURBATIONS: tuple[str, ...] = P_TEST_PERTURBATIONS + P_VALIDATION_PERTURBATIONS
# Noise sequences compare every frame with the first (clean) frame.
NOISE_PERTURBATIONS: tuple[str, ...] = ("gaussian_noise", "shot_noise", "speckle_noise")

# AlexNet flip probabilities on the OFFICIAL ImageNet-P (test + validation perturbations).
ALEXNET_FP: dict[str, float] = {
    "gaussian_noise": 0.23653, "shot_noise": 0.30062, "motion_blur": 0.09297,
    "zoom_blur": 0.05942, "snow": 0.11928, "brightness": 0.04889, "translate": 0.11007,
    "rotate": 0.13104, "tilt": 0.07050, "scale": 0.23531,
    "speckle_noise": 0.18649, "gaussian_blur": 0.02775, "spatter": 0.05053, "shear": 0.10658,
}


def is_noise_perturbation(name: str) -> bool:
    """Whether FP/T5D compare every frame with the first frame (the authors test 'noise' in name)."""
    return "noise" in name


# --------------------------------------------------------------------------- helpers

def _np(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise UsageError(f"{what} is not a rectangular array ({exc}); pass a numpy array") from None


def _predictions(x: Any, what: str, label_ndim: int | None = None) -> np.ndarray:
    """Class indices from predictions or logits (logits have one more axis than the labels)."""
    a = _np(x, what)
    if label_ndim is not None and a.ndim == label_ndim + 1:
        return a.argmax(axis=-1)
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise UsageError(f"{what} must be integer class predictions (or logits with a class axis); "
                         f"got dtype {a.dtype} and shape {a.shape}")
    return a


def _floats(values: Any, what: str) -> np.ndarray:
    if isinstance(values, Mapping):  # {severity: error}
        values = [values[k] for k in sorted(values)]
    a = _np(values, what).astype(np.float64).reshape(-1)
    if a.size == 0:
        raise UsageError(f"{what} is empty; pass one error per severity")
    if not np.all(np.isfinite(a)):
        raise UsageError(f"{what} contains NaN or infinity; check the evaluation that produced it")
    return a


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise UsageError(
            f"{what} has no entry for '{name}'; add it, or pass the names you evaluated "
            f"(corruptions=... / perturbations=...)") from None


def _names(names: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise UsageError(f"no {what} given; pass at least one name")
    return names


# --------------------------------------------------------------------------- accuracy

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


# --------------------------------------------------------------------------- corruption errors

def corruption_error(err: Any, ref_err: Any) -> float:
    """CE = sum_s E(f, c, s) / sum_s E(ref, c, s) (a ratio; 1.0 means as good as the reference)."""
    e = _floats(err, "errors")
    r = _floats(ref_err, "reference errors")
    if e.shape != r.shape:
        raise UsageError(f"{e.size} errors but {r.size} reference errors; evaluate the same "
                         "severities as the reference")
    denom = r.sum()
    if denom <= 0:
        raise UsageError("the reference errors sum to 0, so CE is undefined; pick a reference "
                         "model that makes mistakes under this corruption")
    return float(e.sum() / denom)


def corruption_errors(errors: Mapping[str, Any], ref_errors: Mapping[str, Any],
                      corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> dict[str, float]:
    """CE for every corruption named, as a dict (ratios, not x100)."""
    out = {}
    for c in _names(corruptions, "corruptions"):
        out[c] = corruption_error(_lookup(errors, c, "errors"), _lookup(ref_errors, c, "reference errors"))
    return out


def mce(errors: Mapping[str, Any], ref_errors: Mapping[str, Any],
        corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """mCE = 100 * mean over ``corruptions`` of CE (errors: corruption -> per-severity errors).

    ``ref_errors`` is ``ALEXNET_ERR`` only for the official ImageNet-C images; for generated
    corruptions pass the suite's reference model's errors on the same images.
    """
    ces = corruption_errors(errors, ref_errors, corruptions)
    return float(100.0 * np.mean(list(ces.values())))


def relative_corruption_error(err: Any, clean: float, ref_err: Any, ref_clean: float) -> float:
    """relative CE = sum_s (E(f,c,s) - E(f,clean)) / sum_s (E(ref,c,s) - E(ref,clean))."""
    e = _floats(err, "errors")
    r = _floats(ref_err, "reference errors")
    if e.shape != r.shape:
        raise UsageError(f"{e.size} errors but {r.size} reference errors; evaluate the same "
                         "severities as the reference")
    denom = float((r - float(ref_clean)).sum())
    if denom == 0:
        raise UsageError("the reference loses no accuracy under this corruption, so relative CE "
                         "is undefined; use plain CE or another reference")
    return float((e - float(clean)).sum() / denom)


def relative_mce(errors: Mapping[str, Any], clean: float, ref_errors: Mapping[str, Any],
                 ref_clean: float, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """Relative mCE = 100 * mean of relative CE (for AlexNet: ref_clean=ALEXNET_CLEAN_ERR)."""
    vals = [relative_corruption_error(_lookup(errors, c, "errors"), clean,
                                      _lookup(ref_errors, c, "reference errors"), ref_clean)
            for c in _names(corruptions, "corruptions")]
    return float(100.0 * np.mean(vals))


def unnormalized_mce(errors: Mapping[str, Any],
                     corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """Mean over ``corruptions`` (the 15 benchmark ones, NOT all 19) of mean_s E(f, c, s).

    Same unit as the errors given (fractions in, fraction out). This is what the CIFAR-C
    literature reports; the authors' own script averages all 19, a known trap.
    """
    vals = [float(_floats(_lookup(errors, c, "errors"), f"errors['{c}']").mean())
            for c in _names(corruptions, "corruptions")]
    return float(np.mean(vals))


# --------------------------------------------------------------------------- perturbations

def _sequences(predictions: Any) -> list[np.ndarray]:
    """Predictions as a list of 1-D int arrays, one per sequence (ragged lists allowed)."""
    if isinstance(predictions, (list, tuple)) and predictions and not np.isscalar(predictions[0]):
        seqs = [_predictions(p, "predictions", label_ndim=1).reshape(-1) for p in predictions]
    else:
        a = _np(predictions, "predictions")
        if a.ndim == 3:  # logits (sequences, frames, classes)
            a = a.argmax(axis=-1)
        if a.ndim != 2:
            raise UsageError(f"predictions must have shape (sequences, frames); got {a.shape}")
        a = _predictions(a, "predictions")
        seqs = list(a)
    if not seqs:
        raise UsageError("no sequences given; evaluate at least one perturbation sequence")
    for s in seqs:
        if s.size < 2:
            raise UsageError("every sequence needs at least 2 frames to measure a flip")
    return seqs


def flip_probability(predictions: Any, noise: bool = False) -> float:
    """FP = mean over sequences of mean over j=2..n of 1[f(x_j) != f(x_{j-1})].

    With ``noise=True`` (noise perturbations) every frame is compared with the FIRST frame.
    ``predictions``: int array (sequences, frames), or logits (sequences, frames, classes).
    """
    per_seq = []
    for s in _sequences(predictions):
        ref = s[:1] if noise else s[:-1]
        per_seq.append(np.mean(s[1:] != ref))
    return float(np.mean(per_seq))


def ranks_from_logits(logits: Any) -> np.ndarray:
    """1-based ordinal class ranks along the last axis (1 = highest logit; ties by class index)."""
    z = _np(logits, "logits")
    order = np.argsort(-z, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, z.shape[-1] + 1).reshape((1,) * (z.ndim - 1) + (-1,)),
                      axis=-1)
    return ranks


def _top5_from_orders(top5_a: np.ndarray, ranks_b: np.ndarray) -> np.ndarray:
    # sigma(i): rank in the new frame of the class ranked i-th in the compared frame
    sigma = np.take_along_axis(ranks_b, top5_a, axis=-1)
    return np.abs(np.arange(1, 6) - np.minimum(sigma, 6)).sum(axis=-1)


def top5_distance(ranks_a: Any, ranks_b: Any) -> float | np.ndarray:
    """Top-5 distance between two rankings: sum_{i=1..5} |i - min(sigma(i), 6)| (0..15).

    ``ranks_*`` hold each class's 1-based rank (1 = top class), e.g. ``ranks_from_logits``;
    ``ranks_a`` is the compared (earlier or clean) frame, ``ranks_b`` the new one. A 1-D pair
    gives a float; (..., classes) arrays give an array of distances.
    """
    a = _np(ranks_a, "ranks_a").astype(np.int64)
    b = _np(ranks_b, "ranks_b").astype(np.int64)
    if a.shape != b.shape or a.ndim == 0:
        raise UsageError(f"ranks_a {a.shape} and ranks_b {b.shape} must have the same shape (..., classes)")
    c = a.shape[-1]
    if c < 5:
        raise UsageError(f"top-5 distance needs at least 5 classes; got {c}")
    expected = np.arange(1, c + 1)
    for name, r in (("ranks_a", a), ("ranks_b", b)):
        if not np.array_equal(np.sort(r, axis=-1), np.broadcast_to(expected, r.shape)):
            raise UsageError(f"{name} is not a permutation of the ranks 1..{c}; "
                             "build it with poolbench.metrics.ranks_from_logits(logits)")
    top5_a = np.argsort(a, axis=-1, kind="stable")[..., :5]
    d = _top5_from_orders(top5_a, b)
    return float(d) if d.ndim == 0 else d.astype(np.float64)


def mean_top5_distance(logits_sequences: Any, noise: bool = False) -> float:
    """T5D of a perturbation: mean over sequences of the mean top-5 distance over frame pairs.

    ``logits_sequences``: (sequences, frames, classes). Pairs are adjacent frames, or
    (frame 0, frame j) for noise perturbations.
    """
    z = _np(logits_sequences, "logits")
    if z.ndim != 3:
        raise UsageError(f"logits must have shape (sequences, frames, classes); got {z.shape}")
    n, f, c = z.shape
    if n == 0 or f < 2:
        raise UsageError(f"need at least one sequence of at least 2 frames; got shape {z.shape}")
    if c < 5:
        raise UsageError(f"top-5 distance needs at least 5 classes; got {c}")
    order = np.argsort(-z, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, c + 1), order.shape), axis=-1)
    top5 = order[..., :5]
    compared = np.broadcast_to(top5[:, :1], top5[:, 1:].shape) if noise else top5[:, :-1]
    d = _top5_from_orders(compared, ranks[:, 1:])  # (n, f-1)
    return float(d.mean(axis=1).mean())


def flip_rate(fp: float, ref_fp: float) -> float:
    """FR = FP / FP(ref) (a ratio). The same normalisation gives T5D / T5D(ref)."""
    if not ref_fp > 0:
        raise UsageError(f"reference value is {ref_fp}, so the rate is undefined; pick a reference "
                         "model that flips at least once on this perturbation")
    return float(fp) / float(ref_fp)


def _mean_rate(values: Mapping[str, float], refs: Mapping[str, float],
               perturbations: Sequence[str], what: str) -> float:
    rates = [flip_rate(_lookup(values, p, what), _lookup(refs, p, f"reference {what}"))
             for p in _names(perturbations, "perturbations")]
    return float(100.0 * np.mean(rates))


def mfr(fps: Mapping[str, float], ref_fps: Mapping[str, float],
        perturbations: Sequence[str] = P_TEST_PERTURBATIONS) -> float:
    """mFR = 100 * mean over ``perturbations`` of FP / FP(ref). ``ALEXNET_FP`` only for official
    ImageNet-P; CIFAR-P uses ``CIFAR_P_TEST_PERTURBATIONS``."""
    return _mean_rate(fps, ref_fps, perturbations, "flip probabilities")


def mt5d(t5ds: Mapping[str, float], ref_t5ds: Mapping[str, float],
         perturbations: Sequence[str] = P_TEST_PERTURBATIONS) -> float:
    """mT5D = 100 * mean over ``perturbations`` of T5D / T5D(ref) (no public AlexNet table)."""
    return _mean_rate(t5ds, ref_t5ds, perturbations, "top-5 distances")


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


# --------------------------------------------------------------------------- segmentation

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
