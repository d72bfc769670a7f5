"""Perturbation stability (Hendrycks & Dietterich 2019): flip probability, top-5 distance,
mFR and mT5D."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from ._inputs import _lookup, _names, _np, _predictions
from .benchmarks import P_TEST_PERTURBATIONS


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


def frame_pairs(frames: int, noise: bool = False, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(compared, new) frame indices of the pairs a sequence is scored on, as ImageNet-P's
    ``test.py``: noise perturbations compare every frame with the first; the others compare
    each frame with the one ``step`` (the difficulty, 1..3) before it, within each of the
    ``step`` interleaved subsequences."""
    if frames < 2:
        raise UsageError("every sequence needs at least 2 frames to measure a flip")
    if noise:
        return np.zeros(frames - 1, dtype=np.int64), np.arange(1, frames)
    if step < 1 or step >= frames:
        raise UsageError(f"the temporal step (difficulty) must be 1..{frames - 1} for {frames} frames, got {step}")
    a = [j for i in range(step) for j in range(i, frames - step, step)]
    return np.asarray(a, dtype=np.int64), np.asarray(a, dtype=np.int64) + step


def flips_per_sequence(top1: Any, noise: bool = False, step: int = 1) -> np.ndarray:
    """Each sequence's flip probability (its mean over the frame pairs), from the top-1 class of
    every frame, shape (sequences, frames); FP is their mean."""
    p = _np(top1, "predictions")
    if p.ndim != 2:
        raise UsageError(f"predictions must have shape (sequences, frames); got {p.shape}")
    a, b = frame_pairs(p.shape[1], noise, step)
    return (p[:, a] != p[:, b]).mean(axis=1).astype(np.float64)


def top5_distances_per_sequence(top5: Any, noise: bool = False, step: int = 1) -> np.ndarray:
    """Each sequence's mean top-5 distance over its frame pairs, from the five most likely classes
    of every frame, best first, shape (sequences, frames, 5): min(sigma(i), 6) needs no more
    than whether, and where, a class is among the new frame's top five."""
    t = _np(top5, "top-5 classes")
    if t.ndim != 3 or t.shape[-1] != 5:
        raise UsageError(f"top-5 classes must have shape (sequences, frames, 5); got {t.shape}")
    a, b = frame_pairs(t.shape[1], noise, step)
    old, new = t[:, a], t[:, b]                                    # (n, pairs, 5)
    match = old[..., :, None] == new[..., None, :]                 # (n, pairs, 5 old, 5 new)
    sigma = np.where(match.any(-1), match.argmax(-1) + 1, 6)
    return np.abs(np.arange(1, 6) - sigma).sum(-1).mean(axis=1).astype(np.float64)


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
