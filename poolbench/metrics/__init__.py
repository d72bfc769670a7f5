"""Pure metric functions: arrays of predictions or logits in, plain floats out.

Everything here follows ``docs/protocols.md`` (Hendrycks & Dietterich 2019 for CE/mCE and
FP/T5D, Zhang 2019 for shift consistency) and is tested against hand-computed numbers.

Units: ``top1_error``/``topk_error`` and the per-severity errors ``E`` are fractions in [0, 1];
``mce``/``relative_mce``/``mfr``/``mt5d`` are percentages (x100, a model that is its own
reference scores 100); ``unnormalized_mce`` keeps the unit of the errors it is given;
``consistency`` and ``miou`` are percentages; ``psnr`` is in dB.

Inputs may be numpy arrays, torch tensors or nested lists.

Modules: ``benchmarks`` (names and AlexNet reference numbers), ``accuracy`` (top-1/top-k
error, shift consistency), ``corruption`` (CE, mCE), ``perturbation`` (FP, T5D, mFR, mT5D),
``dense`` (confusion matrix, IoU, mIoU, PSNR); every public name is importable from here.
"""
from __future__ import annotations

from .accuracy import consistency, top1_error, topk_error
from .benchmarks import (
    ALEXNET_CLEAN_ERR,
    ALEXNET_ERR,
    ALEXNET_FP,
    ALL_CORRUPTIONS,
    ALL_PERTURBATIONS,
    BENCHMARK_CORRUPTIONS,
    CIFAR_P_TEST_PERTURBATIONS,
    EXTRA_CORRUPTIONS,
    NOISE_PERTURBATIONS,
    P_TEST_PERTURBATIONS,
    P_VALIDATION_PERTURBATIONS,
    SEVERITIES,
    is_noise_perturbation,
)
from .corruption import (
    corruption_error,
    corruption_error_ratio,
    corruption_errors,
    mce,
    mean_error,
    mean_percent,
    relative_corruption_error,
    relative_mce,
    unnormalized_mce,
)
from .dense import confusion_matrix, iou_per_class, miou, psnr
from .perturbation import (
    flip_probability,
    flip_rate,
    flips_per_sequence,
    frame_pairs,
    mean_top5_distance,
    mfr,
    mt5d,
    ranks_from_logits,
    top5_distance,
    top5_distances_per_sequence,
)

__all__ = [
    "ALEXNET_CLEAN_ERR", "ALEXNET_ERR", "ALEXNET_FP", "ALL_CORRUPTIONS", "ALL_PERTURBATIONS",
    "BENCHMARK_CORRUPTIONS", "CIFAR_P_TEST_PERTURBATIONS", "EXTRA_CORRUPTIONS",
    "NOISE_PERTURBATIONS", "P_TEST_PERTURBATIONS", "P_VALIDATION_PERTURBATIONS", "SEVERITIES",
    "confusion_matrix", "consistency", "corruption_error", "corruption_error_ratio",
    "corruption_errors", "flip_probability", "flip_rate", "flips_per_sequence", "frame_pairs",
    "iou_per_class", "is_noise_perturbation", "mce", "mean_error", "mean_percent",
    "mean_top5_distance", "mfr", "miou", "mt5d", "psnr", "ranks_from_logits",
    "relative_corruption_error", "relative_mce", "top1_error", "top5_distance",
    "top5_distances_per_sequence", "topk_error", "unnormalized_mce",
]
