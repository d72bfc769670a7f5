"""Corrupted image sets: generated with ``imagecorruptions``, or the official CIFAR-C / ImageNet-C.

Generated corruptions (``corrupt_images``, ``generate_corrupted_set``)
    At the data's scale: the parameter set of the benchmark's authors for the resolution
    (``poolbench.distortions.corruption_params``: ``cifar`` = CIFAR-10-C's at 32x32, ``tinyimagenet`` =
    Tiny-ImageNet-C's at 64x64, ``imagenet`` = ImageNet-C's at 224), ``auto`` picking the set
    whose native size is nearest to the images' shorter side. Two engines: ``reference`` (the
    ``imagecorruptions`` module, from the maintained ``imagecorruptions-imaug`` distribution, at
    ImageNet parameters; the project's numpy generator ``poolbench.distortions.corruption_reference`` at the
    others) and ``torch`` (``poolbench.distortions.corruption_torch``: batched, CPU or CUDA); ``auto`` uses torch for
    the corruptions whose equivalence with the reference is tested (``TORCH_DEFAULT``) and the
    reference for the rest. The set and the engine of every array are in its cache key and
    manifest. With the reference engine every image is seeded from (run seed, corruption, severity, image index):
    ``np.random.seed`` for the 17 corruptions that draw from numpy's global generator, the
    ``seed=`` argument for ``impulse_noise`` and ``glass_blur`` (the only two that accept it;
    glass_blur's pixel shuffle runs in numba with its own generator). numpy's global state is
    restored afterwards. A set is therefore the same bytes for the same seed whatever the
    number of workers or the chunk size.

    What the library does at 32x32 (imagecorruptions-imaug 1.1.5, checked for all 19
    corruptions x 5 severities at 32x32, 33x47, 40x56 and 224x224): the output always has the
    input's shape and is uint8 (``corrupt`` truncates its float result with ``np.uint8``);
    inputs smaller than 32x32 are refused. One defect: ``spatter`` at severities 1-3 divides by
    the maximum of its liquid mask, which is all zero for about 2% of 32x32 images at severity
    1 (never seen at 64x64 or 224x224); the library then returns NaN, cast to an all-black
    image. Here the NaN pixels get the clean pixel back (what a zero mask means: no spatter).
    ``glass_blur``'s first call in a process
    JIT-compiles its numba kernel (about 2 s); every worker process pays it once.
    The library's stray ``print`` calls (zoom_blur/snow fallbacks) are sent to stderr so that
    ``--json`` output on stdout stays clean. Shapes that ever differ from the input would be
    cropped or edge-padded back, NaN/inf repaired and values clipped to 0..255 (defensive; not
    observed with this version).

Official data (``load_cifar_c``, ``load_imagenet_c``)
    CIFAR-10-C / CIFAR-100-C: ``<root>/<corruption>.npy`` uint8 (5 * num_test, 32, 32, 3),
    severity s in rows (s-1)*num_test .. s*num_test-1, and ``<root>/labels.npy``.
    ImageNet-C (and Tiny-ImageNet-C): ``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm  # plain tqdm, not tqdm.auto: always a text bar on stderr

from ..errors import UsageError
from ..metrics import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, SEVERITIES
from . import cache as _cache
from . import corruption_reference as _numpy_reference
from . import corruption_torch as _torch_engine
from . import jobs as _jobs
from .corruption_params import PARAM_SETS, SOURCES, resolve_params

# impulse_noise and glass_blur take their own seed= argument; the other 17 follow np.random.seed
SEED_ARGUMENT_CORRUPTIONS = ("impulse_noise", "glass_blur")
LIBRARY_DISTRIBUTIONS = ("imagecorruptions-imaug", "imagecorruptions")
MIN_SIZE = 32
GENERATOR_REVISION = 2  # bump when this module's post-processing changes the bytes
ENGINES = _cache.ENGINES

__all__ = [
    "ALL_CORRUPTIONS", "BENCHMARK_CORRUPTIONS", "ENGINES", "PARAM_SETS", "SEVERITIES",
    "CorruptedSet", "corrupt_images", "engine_for", "generate_corrupted_set", "library_version",
    "load_cifar_c", "load_imagenet_c", "resolve_params",
]


def library_version() -> str:
    return _cache.library_version(*LIBRARY_DISTRIBUTIONS)


def engine_for(corruption: str, engine: str) -> str:
    """``reference`` or ``torch`` for ``corruption`` (``cache.choose_engine``)."""
    return _cache.choose_engine(corruption, engine, _torch_engine.TORCH_DEFAULT,
                                _torch_engine.IMPLEMENTED, "corruption")


def generator_version(params: str, engine: str) -> str:
    """What made the bytes: the library (reference at imagenet), our numpy generator (reference
    at the small sets, which calls the library's helpers) or the torch engine."""
    if engine == "torch":
        return _torch_engine.version()
    if params == "imagenet":
        return library_version()
    return f"poolbench.corrupt.reference r{_numpy_reference.REVISION} ({library_version()})"


def check_corruption(name: str) -> str:
    return _cache.check_name(name, ALL_CORRUPTIONS, "corruption")


def check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) \
            or int(severity) not in SEVERITIES:
        raise UsageError(f"severity must be an integer from 1 to 5; got {severity!r}")
    return int(severity)


def _names(corruptions: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(corruptions, str):
        corruptions = (corruptions,)
    names = tuple(check_corruption(c) for c in corruptions)
    if not names:
        raise UsageError("no corruptions given; pass at least one, e.g. BENCHMARK_CORRUPTIONS")
    return tuple(dict.fromkeys(names))


def _severities(severities: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(severities, (int, np.integer)):
        severities = (severities,)
    sev = tuple(check_severity(s) for s in severities)
    if not sev:
        raise UsageError("no severities given; pass some of 1..5")
    return tuple(dict.fromkeys(sev))


def _library():
    try:
        import imagecorruptions  # noqa: PLC0415 - heavy (numba, cv2): import on first use
    except ImportError as exc:
        raise UsageError(f"the imagecorruptions module is not importable ({exc}); "
                         "pip install imagecorruptions-imaug") from None
    return imagecorruptions


def _fit(out: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The library's result as float (H, W, 3) of the clean image's shape, finite, in 0..255."""
    out = np.asarray(out)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    out = out[..., :3].astype(np.float64, copy=False)
    h, w = clean.shape[:2]
    out = out[:h, :w]
    if out.shape[:2] != (h, w):
        out = np.pad(out, ((0, h - out.shape[0]), (0, w - out.shape[1]), (0, 0)), mode="edge")
    bad = ~np.isfinite(out)
    if bad.any():  # spatter's 0/0 on an empty liquid mask: no spatter there
        out = np.where(bad, clean, out)
    return np.clip(out, 0, 255)


def _corrupt_chunk(images: np.ndarray, start: int, corruption: str, severity: int,
                   seed: int, params: str = "imagenet", engine: str = "reference",
                   device: str = "cpu") -> np.ndarray:
    """Corrupt a chunk whose first image has index ``start`` in the whole set (``device``: where
    the torch engine runs)."""
    if engine == "torch":
        return _torch_engine.corrupt_numpy(images, corruption, severity, seed, params, start=start,
                                           device=device)
    if params == "imagenet":
        fn = _library().corruption_dict[corruption]
    else:
        def fn(img, sev, seed=None):
            return _numpy_reference.corrupt(np.asarray(img), corruption, sev, params, seed=seed)
    out = np.empty_like(images)
    state = np.random.get_state()
    try:
        with contextlib.redirect_stdout(sys.stderr), np.errstate(divide="ignore", invalid="ignore"):
            for k, img in enumerate(images):
                s = _cache.item_seed(seed, corruption, severity, start + k)
                if corruption in SEED_ARGUMENT_CORRUPTIONS:
                    res = fn(Image.fromarray(img), severity, seed=s)
                else:
                    np.random.seed(s)
                    res = fn(Image.fromarray(img), severity)
                # np.uint8 truncates, like imagecorruptions.corrupt
                out[k] = np.uint8(_fit(res, img))
    finally:
        np.random.set_state(state)
    return out


def corrupt_images(images: np.ndarray, corruption: str, severity: int, seed: int,
                   params: str = "auto", engine: str = "reference") -> np.ndarray:
    """Corrupt uint8 (N, H, W, 3) images (H, W >= 32) in this process; returns uint8 (N, H, W, 3).

    ``params``: ``auto`` (from the image size) | cifar | tinyimagenet | imagenet; ``engine``: reference | torch | auto. Image i is seeded from (seed,
    corruption, severity, i) only: deterministic.
    """
    images = _cache.check_images(images, MIN_SIZE)
    corruption = check_corruption(corruption)
    return _corrupt_chunk(images, 0, corruption, check_severity(severity),
                          _cache.check_seed(seed), resolve_params(params, images.shape[1:3]),
                          engine_for(corruption, engine))


class CorruptedSet(_cache.ArraySet):
    """Corrupted versions of one image set: ``get(corruption, severity) -> uint8 (N, H, W, 3)``.

    Arrays are read from disk on each ``get`` (``mmap=True`` maps them instead). ``labels``
    are the clean labels (the same for every corruption and severity).
    """

    def __init__(self, labels, sources, corruptions, severities, seed=None, source="generated",
                 params=None, engines=None):
        super().__init__(kind="corrupted", labels=None if labels is None else np.asarray(labels),
                         _sources=sources)
        self.corruptions = tuple(corruptions)
        self.severities = tuple(severities)
        self.seed = seed
        self.source = source
        self.params = params            # the parameter set (None: official data)
        self.engines = dict(engines or {})  # corruption -> "reference" | "torch"

    def get(self, corruption: str, severity: int, mmap: bool = False) -> np.ndarray:
        return self._get((check_corruption(corruption), check_severity(severity)), mmap)

    def __repr__(self) -> str:
        return (f"CorruptedSet({self.source}, {len(self.corruptions)} corruptions x severities "
                f"{list(self.severities)}, seed={self.seed}, params={self.params})")


@dataclass
class _OnTheFly:
    """One (corruption, severity) made from the clean images on each ``get``, chunk by chunk in
    this process, never stored: the same bytes as a generated array (every image is seeded by
    its index), without the disk a large set needs."""

    images: np.ndarray
    job: dict
    chunk_size: int
    progress: bool
    manifest: dict = field(default_factory=dict)

    def load(self, mmap: bool) -> np.ndarray:
        out = np.empty_like(self.images)
        n, step = len(self.images), self.chunk_size
        with tqdm(total=n, desc=f"{self.job['corruption']} s{self.job['severity']} (on the fly)",
                  unit="img", disable=not self.progress, leave=False, file=sys.stderr) as bar:
            for s in range(0, n, step):
                out[s:s + step] = _corrupt_chunk(self.images[s:s + step], s, **self.job)
                bar.update(min(step, n - s))
        return out


def generate_corrupted_set(images: np.ndarray, labels: Any = None,
                           corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
                           severities: Sequence[int] = SEVERITIES, seed: int = 0,
                           cache_dir: str | os.PathLike | None = None, *,
                           dataset: str = "custom", subset: str = "test",
                           workers: int | None = None, chunk_size: int = 256,
                           progress: bool = True, mp_context: str | None = None,
                           params: str = "auto", engine: str | dict = "reference",
                           on_the_fly: bool = False, device: str = "cpu", strict: bool = False) -> CorruptedSet:
    """Produce every (corruption, severity) of ``images`` once and return them lazily.

    ``params``: the parameter set (``auto``: from the image size); ``engine``: reference |
    torch | auto (see the module note), or a dict corruption -> engine. With ``cache_dir`` each array is cached as
    ``<cache_dir>/corruptions/<dataset>/<subset>/<corruption>/<params>-<engine>-s<severity>-seed<seed>-<digest>.npy``
    plus a JSON manifest, keyed by dataset, subset, corruption, severity, seed, parameter set,
    engine, the generator's version and a fingerprint of the images; arrays already there are
    reused, missing ones are generated: the reference engine in ``workers`` processes (default:
    the usable cores; 0 or 1: in this process), the torch engine in this process (batched, on
    torch's threads), chunked over images, with a progress bar on stderr. Without
    ``cache_dir`` the arrays are kept in memory. With ``workers > 1`` a calling script needs
    ``if __name__ == "__main__":``.
    """
    images = _cache.check_images(images, MIN_SIZE)
    if labels is not None and len(labels) != len(images):
        raise UsageError(f"{len(labels)} labels for {len(images)} images; pass one label per image")
    names, sev, seed = _names(corruptions), _severities(severities), _cache.check_seed(seed)
    params = resolve_params(params, images.shape[1:3])
    engines = {c: engine_for(c, engine.get(c, "reference") if isinstance(engine, dict) else engine)
               for c in names}
    fingerprint = _cache.images_fingerprint(images)
    jobs: dict[str, list] = {"reference": [], "torch": []}
    sources: dict = {}
    for c in names:
        for s in sev:
            manifest = {
                "kind": "corruption", "dataset": str(dataset), "subset": str(subset),
                "corruption": c, "severity": s, "seed": seed, "params": params,
                "params_source": SOURCES[params], "engine": engines[c],
                "library": generator_version(params, engines[c]),
                "generator_revision": GENERATOR_REVISION, "format": _cache.FORMAT_VERSION,
                "images": fingerprint, "num_images": len(images),
                "image_shape": list(images.shape[1:]),
            }
            job = {"corruption": c, "severity": s, "seed": seed, "params": params, "engine": engines[c]}
            if on_the_fly:
                sources[(c, s)] = _OnTheFly(images, {**job, "device": device}, chunk_size, progress,
                                            manifest)
                continue
            path = None if cache_dir is None else _cache.entry_path(
                cache_dir, "corruptions", dataset, subset, c, f"{params}-{engines[c]}-s{s}", seed,
                _cache.digest(manifest))
            jobs[engines[c]].append(_jobs.Job(
                key=(c, s), func=_corrupt_chunk, params=job,
                item_shape=tuple(images.shape[1:]), path=path, manifest=manifest))
    for kind, todo in jobs.items():
        if not todo:
            continue
        # the torch engine is batched on torch's own threads: worker processes would only
        # multiply the threads
        sources.update(_jobs.generate(
            todo, images, workers=0 if kind == "torch" else workers,
            chunk_size=chunk_size, progress=progress,
            desc=f"corrupting {dataset}/{subset} ({params}, {kind})", mp_context=mp_context,
            cache_dir=cache_dir, strict=strict))
    ordered = {(c, s): sources[(c, s)] for c in names for s in sev}
    return CorruptedSet(labels, ordered, names, sev, seed=seed, source=f"{dataset}/{subset}",
                        params=params, engines=engines)


# --------------------------------------------------------------------------- official data

_CIFAR_C_HINT = ("download CIFAR-10-C (https://zenodo.org/record/2535967) or CIFAR-100-C "
                 "(https://zenodo.org/record/3555552) and unpack it there")


def _npy_header(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path} is not a readable .npy file ({exc}); download it again") from None


def load_cifar_c(root: str | os.PathLike, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
                 severities: Sequence[int] = SEVERITIES, num_test: int = 10000,
                 clean_labels: Any = None) -> CorruptedSet:
    """Official CIFAR-10-C / CIFAR-100-C from ``root`` as a ``CorruptedSet`` (lazy, validated).

    Checks now (reading headers only): every ``<corruption>.npy`` exists and is uint8
    (5 * num_test, 32, 32, 3); ``labels.npy`` has 5 * num_test integer labels, the same in
    every severity block, and equal to ``clean_labels`` (the clean test labels) when given.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"CIFAR-C folder {root} does not exist; {_CIFAR_C_HINT}")
    names, sev = _names(corruptions), _severities(severities)
    n = int(num_test)
    if n < 1:
        raise UsageError(f"num_test must be >= 1; got {num_test}")
    expected = (5 * n, 32, 32, 3)

    label_path = root / "labels.npy"
    if not label_path.exists():
        raise UsageError(f"CIFAR-C labels file {label_path} is missing; {_CIFAR_C_HINT}")
    labels = np.asarray(_npy_header(label_path))
    if labels.shape != (5 * n,) or labels.dtype.kind not in "iu":
        raise UsageError(f"{label_path} has shape {labels.shape} and dtype {labels.dtype}, expected "
                         f"integer ({5 * n},) (5 severities x the {n} images of the clean test set); "
                         "re-download it, or evaluate on the whole test split it was made from (no --test-size)")
    blocks = labels.reshape(5, n)
    if not (blocks == blocks[0]).all():
        bad = int(np.nonzero((blocks != blocks[0]).any(axis=1))[0][0]) + 1
        raise UsageError(f"{label_path}: the labels of severity {bad} differ from severity 1; "
                         "the file is corrupt, download it again")
    labels = blocks[0].astype(np.int64)
    if clean_labels is not None:
        clean = np.asarray(clean_labels).reshape(-1)
        if clean.shape[0] < n or not np.array_equal(clean[:n], labels):
            where = "fewer" if clean.shape[0] < n else "different"
            raise UsageError(f"{label_path} does not match the clean test labels ({where} labels); "
                             "use the CIFAR-C release of the same dataset (CIFAR-10 vs CIFAR-100) "
                             "and the test split in its original order")

    sources = {}
    for c in names:
        path = root / f"{c}.npy"
        if not path.exists():
            raise UsageError(f"CIFAR-C file {path} is missing; {_CIFAR_C_HINT}, "
                             "or leave that corruption out")
        arr = _npy_header(path)
        if arr.dtype != np.uint8 or arr.shape != expected:
            raise UsageError(f"{path} has shape {arr.shape} and dtype {arr.dtype}, expected uint8 "
                             f"{expected} (5 severities x the {n} images of the clean test set); re-download it, "
                             "or evaluate on the whole test split it was made from (no --test-size)")
        for s in sev:
            sources[(c, s)] = _cache._Sliced(path, (s - 1) * n, s * n,
                                             manifest={"kind": "corruption", "source": "official",
                                                       "corruption": c, "severity": s,
                                                       "path": str(path)})
    return CorruptedSet(labels, sources, names, sev, seed=None, source=f"official {root}")


def load_imagenet_c(root: str | os.PathLike, corruption: str, severity: int,
                    transform=None, classes: Sequence[str] | None = None):
    """One (corruption, severity) of ImageNet-C (or Tiny-ImageNet-C) as an ``ImageFolder``.

    Layout ``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG``. Pass ``classes`` (the clean
    set's ``ImageFolder.classes``) to check that the class folders are exactly the same, so
    that class indices agree with the model's.
    """
    # imported on first use: torchvision would add about 1.4 s to every command's start
    from torchvision.datasets import ImageFolder  # noqa: PLC0415

    corruption, severity = check_corruption(corruption), check_severity(severity)
    root = Path(root)
    folder = root / corruption / str(severity)
    if not root.is_dir():
        raise UsageError(f"ImageNet-C folder {root} does not exist; download ImageNet-C "
                         "(https://zenodo.org/record/2235448) and unpack it there")
    if not folder.is_dir():
        raise UsageError(f"ImageNet-C folder {folder} is missing; unpack {corruption}.tar into "
                         f"{root} or leave {corruption} severity {severity} out")
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not found:
        raise UsageError(f"{folder} has no class folders (<wnid>/<file>.JPEG); unpack the archive again")
    if classes is not None:
        expected = sorted(classes)
        if found != expected:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            what = (f"{len(missing)} class folders missing (first: {missing[0]})" if missing
                    else f"{len(extra)} unexpected class folders (first: {extra[0]})")
            raise UsageError(f"{folder}: {what} compared with the clean set; class indices would "
                             "not match the model's, so unpack the complete release")
    try:
        return ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as exc:
        raise UsageError(f"{folder}: {exc}; unpack the archive again") from None
