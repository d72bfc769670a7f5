"""Perturbation sets (ImageNet-P / CIFAR-P style): generated and cached, or the official CIFAR-P.

A sequence is frames x_0..x_{n-1} of one image under a growing (or moving) perturbation; the
schedules and the frame generators are ``poolbench.distortions.perturbation_reference`` (re-exported here).
``generate_perturbed_set`` makes every perturbation's sequences of a set of images once, cached
like the corrupted sets, with one of two engines: ``reference`` (the numpy/OpenCV generator, in
worker processes) or ``torch`` (``poolbench.distortions.perturbation_torch``: batched, in this process);
``auto`` uses torch for the perturbations whose equivalence with the reference is tested
(``TORCH_DEFAULT``) and the reference for the rest. ``load_cifar_p`` reads CIFAR-10-P /
CIFAR-100-P. Both return a ``PerturbedSet``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..metrics import (
    ALL_PERTURBATIONS,
    CIFAR_P_TEST_PERTURBATIONS,
    NOISE_PERTURBATIONS,
    P_TEST_PERTURBATIONS,
    P_VALIDATION_PERTURBATIONS,
    is_noise_perturbation,
)
from . import cache as _cache
from . import jobs as _jobs
from . import perturbation_torch as _torch_engine
from .perturbation_reference import _perturb_chunk, perturb_sequences
from .perturbation_schedules import (
    GENERATOR_REVISION,
    MIN_SIZE,
    SCHEDULES,
    check_perturbation,
    frame_count,
    frame_parameters,
    resolve_schedule,
)

ENGINES = _cache.ENGINES

__all__ = [
    "ALL_PERTURBATIONS", "CIFAR_P_TEST_PERTURBATIONS", "ENGINES", "NOISE_PERTURBATIONS",
    "P_TEST_PERTURBATIONS", "P_VALIDATION_PERTURBATIONS", "SCHEDULES", "PerturbedSet",
    "engine_for", "frame_count", "frame_parameters", "generate_perturbed_set",
    "is_noise_perturbation", "load_cifar_p", "perturb_sequences", "resolve_schedule",
]


def engine_for(perturbation: str, engine: str) -> str:
    """``reference`` or ``torch`` for ``perturbation`` (``cache.choose_engine``; spatter has no
    torch version)."""
    return _cache.choose_engine(perturbation, engine, _torch_engine.TORCH_DEFAULT,
                                _torch_engine.IMPLEMENTED, "perturbation")


def _torch_chunk(images: np.ndarray, start: int, perturbation: str, schedule: str,
                 seed: int) -> np.ndarray:
    """``_perturb_chunk``'s signature for the torch engine (a job function)."""
    return _torch_engine.perturb_numpy(images, perturbation, seed, schedule, start=start)


class PerturbedSet(_cache.ArraySet):
    """Perturbation sequences of one image set: ``get(perturbation) -> uint8 (N, frames, H, W, 3)``."""

    def __init__(self, labels, sources, perturbations, schedule, seed=None, source="generated",
                 engines=None):
        super().__init__(kind="perturbed", labels=None if labels is None else np.asarray(labels),
                         _sources=sources)
        self.perturbations = tuple(perturbations)
        self.schedule = schedule
        self.seed = seed
        self.source = source
        self.engines = dict(engines or {})  # perturbation -> "reference" | "torch" (generated)

    def get(self, perturbation: str, mmap: bool = False) -> np.ndarray:
        return self._get((perturbation, self.schedule), mmap)

    @staticmethod
    def noise(perturbation: str) -> bool:
        """Whether FP/T5D compare with the first frame for this perturbation."""
        return is_noise_perturbation(perturbation)

    def __repr__(self) -> str:
        return (f"PerturbedSet({self.source}, {list(self.perturbations)}, schedule={self.schedule}, "
                f"seed={self.seed})")


def _names(perturbations) -> tuple[str, ...]:
    if isinstance(perturbations, str):
        perturbations = (perturbations,)
    names = tuple(dict.fromkeys(check_perturbation(p) for p in perturbations))
    if not names:
        raise UsageError("no perturbations given; pass at least one, e.g. CIFAR_P_TEST_PERTURBATIONS")
    return names


def generate_perturbed_set(images: np.ndarray, labels: Any = None,
                           perturbations: Sequence[str] = CIFAR_P_TEST_PERTURBATIONS,
                           seed: int = 0, cache_dir: str | os.PathLike | None = None, *,
                           schedule: str = "auto", dataset: str = "custom", subset: str = "test",
                           workers: int | None = None, chunk_size: int = 128,
                           progress: bool = True, mp_context: str | None = None,
                           engine: str | dict = "reference", strict: bool = False) -> PerturbedSet:
    """Produce every perturbation's sequences of ``images`` once and return them lazily.

    ``engine``: reference | torch | auto (see the module note), or a dict perturbation ->
    engine (missing ones: reference); ``PerturbedSet.engines`` says which made each. Cached
    like the corrupted sets: ``<cache_dir>/perturbations/<dataset>/<subset>/<perturbation>/
    <schedule>-<engine>-seed<seed>-<digest>.npy`` + JSON manifest (with the engine and its
    version), written atomically, the reference engine in ``workers`` processes, the torch
    engine in this process (batched on torch's threads), with a progress bar on stderr; in
    memory without ``cache_dir``. Note the size: 10,000 CIFAR images x 31 frames is 950 MB per
    perturbation (``get(..., mmap=True)`` maps it instead of reading it). With ``workers > 1``
    a calling script needs ``if __name__ == "__main__":`` (worker processes re-import it).
    """
    images = _cache.check_images(images, MIN_SIZE)
    if labels is not None and len(labels) != len(images):
        raise UsageError(f"{len(labels)} labels for {len(images)} images; pass one label per image")
    names, seed = _names(perturbations), _cache.check_seed(seed)
    schedule = resolve_schedule(schedule, images.shape[1:3])
    engines = {p: engine_for(p, engine.get(p, "reference") if isinstance(engine, dict) else engine)
               for p in names}
    fingerprint = _cache.images_fingerprint(images)
    jobs: dict[str, list] = {"reference": [], "torch": []}
    for p in names:
        frames = frame_count(p, schedule)
        manifest = {
            "kind": "perturbation", "dataset": str(dataset), "subset": str(subset),
            "perturbation": p, "schedule": schedule, "frames": frames, "seed": seed,
            "engine": engines[p],
            "generator": (_torch_engine.version() if engines[p] == "torch"
                          else f"poolbench.data.perturbations r{GENERATOR_REVISION}"),
            "format": _cache.FORMAT_VERSION, "images": fingerprint, "num_images": len(images),
            "image_shape": list(images.shape[1:]),
        }
        path = None if cache_dir is None else _cache.entry_path(
            cache_dir, "perturbations", dataset, subset, p, f"{schedule}-{engines[p]}", seed,
            _cache.digest(manifest))
        jobs[engines[p]].append(_jobs.Job(
            key=(p, schedule), func=_torch_chunk if engines[p] == "torch" else _perturb_chunk,
            params={"perturbation": p, "schedule": schedule, "seed": seed},
            item_shape=(frames, *images.shape[1:]), path=path, manifest=manifest))
    sources: dict = {}
    for kind, todo in jobs.items():
        if not todo:
            continue
        # the torch engine is batched on torch's own threads: worker processes would only
        # multiply the threads
        sources.update(_jobs.generate(
            todo, images, workers=0 if kind == "torch" else workers, chunk_size=chunk_size,
            progress=progress, desc=f"perturbing {dataset}/{subset} ({kind})",
            mp_context=mp_context, cache_dir=cache_dir, strict=strict))
    ordered = {(p, schedule): sources[(p, schedule)] for p in names}
    return PerturbedSet(labels, ordered, names, schedule, seed=seed, source=f"{dataset}/{subset}",
                        engines=engines)


# --------------------------------------------------------------------------- official CIFAR-P

_CIFAR_P_HINT = ("download CIFAR-10-P (https://zenodo.org/record/2535967) or CIFAR-100-P "
                 "(https://zenodo.org/record/3565846) and unpack it there")
_VARIANT = re.compile(r"^(gaussian_noise|shot_noise|speckle_noise)_[23]$")


def load_cifar_p(root: str | os.PathLike,
                 perturbations: Sequence[str] = CIFAR_P_TEST_PERTURBATIONS,
                 num_sequences: int | None = None, labels: Any = None) -> PerturbedSet:
    """Official CIFAR-10-P / CIFAR-100-P: ``<root>/<perturbation>.npy`` uint8
    (N, frames, 32, 32, 3), validated now (headers only) and read lazily on ``get``.

    Frame counts are checked against the CIFAR-P schedule (translate 16, motion_blur 21,
    others 31). The harder noise variants (``gaussian_noise_2``...) are accepted too.
    ``labels`` (the clean test labels, in order) are attached when given.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"CIFAR-P folder {root} does not exist; {_CIFAR_P_HINT}")
    if isinstance(perturbations, str):
        perturbations = (perturbations,)
    names = []
    for p in perturbations:
        names.append(p if _VARIANT.match(str(p)) else check_perturbation(p))
    if not names:
        raise UsageError("no perturbations given; pass at least one, e.g. CIFAR_P_TEST_PERTURBATIONS")
    sources = {}
    count = None if num_sequences is None else int(num_sequences)
    for p in dict.fromkeys(names):
        path = root / f"{p}.npy"
        if not path.exists():
            raise UsageError(f"CIFAR-P file {path} is missing; {_CIFAR_P_HINT}, or leave {p} out")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"{path} is not a readable .npy file ({exc}); download it again") from None
        frames = frame_count(_VARIANT.sub(r"\1", p), "cifar")
        if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[1:] != (frames, 32, 32, 3):
            raise UsageError(f"{path} has shape {arr.shape} and dtype {arr.dtype}, expected uint8 "
                             f"(N, {frames}, 32, 32, 3); re-download it")
        if count is None:
            count = arr.shape[0]
        if arr.shape[0] != count:
            raise UsageError(f"{path} holds {arr.shape[0]} sequences but {count} were expected; "
                             "use files from one release (or fix num_sequences)")
        sources[(p, "cifar")] = _cache._Cached(path)
    if labels is not None and len(labels) != count:
        raise UsageError(f"{len(labels)} labels for {count} sequences; pass the clean test labels in order")
    return PerturbedSet(labels, sources, tuple(dict.fromkeys(names)), "cifar", seed=None,
                        source=f"official {root}")
