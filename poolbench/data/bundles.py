"""Dataset bundles: what every loader returns (train and test sets with their statistics).

Convention: every dataset yields ``(image, label)`` with ``image`` a float32 CHW tensor in
[0, 1] (ToTensor scale) and NO normalisation; the bundle carries ``mean`` and ``std`` and the
model wrapper normalises. Corruption, perturbation and shift suites therefore work on [0, 1]
images, or on the uint8 arrays from ``bundle.eval_arrays()`` (HxWx3, after the deterministic
evaluation geometry; ``bundle.test[i]`` is exactly ``eval_arrays().images[i] / 255``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..errors import UsageError


class EvalArrays(NamedTuple):
    images: np.ndarray   # uint8 (N, H, W, 3), after the deterministic eval geometry
    labels: np.ndarray   # int64 (N,)
    indices: np.ndarray  # int64 (N,), positions in bundle.test


class SegEvalArrays(NamedTuple):
    images: np.ndarray   # uint8 (N, H, W, 3)
    masks: np.ndarray    # uint8 (N, H, W), 0 = background
    indices: np.ndarray  # int64 (N,)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetBundle:
    """A classification dataset ready for training and evaluation.

    ``config`` holds the fields that change a result (for the store's config hash): never a
    path. ``source`` says where the data came from (a path, or "generated").
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""
    evaluated: str = "test"   # what ``test`` holds: the test split, or a validation split (hold_out)

    @property
    def split_name(self) -> str:
        """What an evaluation on ``test`` reads, in words: "shapes test split"."""
        return f"{self.name} {self.evaluated} split"

    def eval_indices(self, limit: int | None = None) -> np.ndarray:
        """Positions in ``test`` of an evaluation subset: all, or ``limit`` evenly spaced ones.

        Evenly spaced (not the first ``limit``) so that a class-sorted test set (any folder
        tree) stays balanced; deterministic and independent of the run seed.
        """
        return spread_indices(len(self.test), limit)

    def eval_arrays(self, limit: int | None = None, *, indices: Sequence[int] | None = None) -> EvalArrays:
        """The evaluation images as uint8 HxWx3 arrays with their labels (and positions)."""
        idx = self._indices(limit, indices)
        images, labels = self.test.uint8_arrays(idx)
        return EvalArrays(images, labels, idx)

    def _indices(self, limit, indices) -> np.ndarray:
        if indices is None:
            return self.eval_indices(limit)
        if limit is not None:
            raise UsageError("eval_arrays takes limit or indices, not both: drop one of them")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.test)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise UsageError(f"eval indices must lie in 0..{n - 1} for {self.name}'s {n} test images")
        return idx


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentationBundle(DatasetBundle):
    """A segmentation dataset: items are ``(image, mask)``, mask int64 HxW, 0 = background."""

    def eval_arrays(self, limit: int | None = None, *, indices: Sequence[int] | None = None) -> SegEvalArrays:
        idx = self._indices(limit, indices)
        images, masks = self.test.uint8_arrays(idx)
        return SegEvalArrays(images, masks, idx)


def spread_indices(n: int, limit: int | None) -> np.ndarray:
    """``limit`` evenly spaced positions out of ``n`` (all of them when limit is None or >= n)."""
    if limit is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise UsageError(f"limit must be a positive integer, got {limit!r}")
    if limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.floor((np.arange(limit) + 0.5) * (n / limit)).astype(np.int64)


# the permutation a validation split is drawn from; a change of how it is drawn changes this, and
# with it the data fingerprint of every held-out configuration (data.fingerprint)
HOLDOUT_SPLIT = "permutation-v1"


def holdout_indices(n: int, holdout: int, seed: int) -> np.ndarray:
    """Positions of the ``holdout`` training images (out of ``n``) held out for validation,
    sorted: the first ``holdout`` of a permutation of ``n`` drawn from the data seed, so that a
    larger holdout of the same seed and training set contains every image of a smaller one."""
    check_holdout(holdout, n)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EA1])).permutation(n)
    return np.sort(order[:holdout]).astype(np.int64)


def check_holdout(holdout, n: int) -> int:
    """``holdout`` as an int, if it leaves at least one of ``n`` training images to train on."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 0:
        raise UsageError(f"holdout must be a non-negative integer, got {holdout!r}")
    if holdout >= n:
        raise UsageError(f"cannot hold out {holdout} of {n} training images for validation: "
                         "hold out fewer, or train on more (--train-size)")
    return int(holdout)


def hold_out(bundle: DatasetBundle, holdout: int, seed: int) -> DatasetBundle:
    """``bundle`` with ``holdout`` of its training images moved into a validation split that
    replaces its test split: the model trains on the rest (with the training transform) and is
    evaluated on them with the test transform; the test split is left out of the bundle, so no
    evaluation can read it. ``holdout`` 0 returns ``bundle`` unchanged."""
    if not holdout:
        return bundle
    held = holdout_indices(len(bundle.train), holdout, seed)
    rest = np.setdiff1d(np.arange(len(bundle.train)), held)
    train, validation = bundle.train.split(rest, held, bundle.test)
    config = {**bundle.config, "holdout": int(holdout), "holdout_split": HOLDOUT_SPLIT}
    return dataclasses.replace(bundle, train=train, test=validation, evaluated="validation", config=config)


def check_size(what: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
