"""The built-in ``photos`` dataset: 32x32 crops of the photographs that scikit-image ships.

Nothing to download: the ten source photographs are the files bundled inside the
scikit-image wheel (``skimage.data``; none of them needs pooch or a network). The class of
a crop is the photograph it was cut from, so the pixels are real and have the 1/f power
spectrum of natural images (the built-in ``shapes`` set, by contrast, puts its class cue in
2-5 px stripes by construction). A random crop of random scale shows a small patch of the
source, so what identifies the class is the texture and colour statistics of the
photograph, not a memorised object.

| id | name | ``skimage.data`` | source pixels | colour |
|---|---|---|---|---|
| 0 | astronaut | ``astronaut()`` | 512 x 512 | RGB |
| 1 | cat | ``chelsea()`` | 300 x 451 | RGB |
| 2 | coffee | ``coffee()`` | 400 x 600 | RGB |
| 3 | hubble | ``hubble_deep_field()`` | 872 x 1000 | RGB |
| 4 | ihc | ``immunohistochemistry()`` | 512 x 512 | RGB |
| 5 | rocket | ``rocket()`` | 427 x 640 | RGB |
| 6 | motorcycle | ``stereo_motorcycle()[0]`` | 500 x 741 | RGB |
| 7 | grass | ``grass()`` | 512 x 512 | grey |
| 8 | gravel | ``gravel()`` | 512 x 512 | grey |
| 9 | brick | ``brick()`` | 512 x 512 | grey |

Grey photographs are repeated over the three channels.

Disjoint regions: each photograph is cut into a grid of ``CELL`` x ``CELL`` cells (from the
top-left corner; a remainder narrower than a cell is unused). Cell (row i, column j) is a
test cell when ``(i + 2 j) % 4 == 0`` and a training cell otherwise: 25-33% of the cells
(4 of 12 for the cat, 25 of 90 for hubble) are held out, spread over the whole photograph,
so the two splits see the same kinds of
content (a left/right split would test the cat's face on a model trained on its fur) and
no test pixel is ever read for a training image. Every crop lies inside one cell of its
split, and resampling reads only the pixels inside the crop's box.

The validation split (``load_photos(holdout=N)``, what ``--recipe tuned`` selects on) is held
out the same way, by region, from the training cells only: cells with ``(i + 2 j) % 4 == 2``
(about a third of the training cells, spread over the photograph like the test cells) give the
``N`` validation crops, and the other training cells the ``train_size - N`` crops the model
fits. Held-out crops of the cells a model trained on would measure how well it recalls those
cells: a held-out image of a training cell shares most of its pixels with training crops, so
validation errors read 0.1-2.5 % against 6-9 % on the test cells and could not rank learning
rates (docs/measurements.md, "Shared and tuned recipes"). The test cells are never read.

A crop: the label (blocks of ten holding each class once, so any prefix is balanced to
within one image per class), a cell of that photograph's split chosen uniformly, a square
box of side 32 to ``CELL`` source pixels (log-uniform, so scale varies 1x to 3x) at a
uniform position inside the cell, and a horizontal flip with probability 1/2. The box is
resampled to 32x32 by exact area averaging (each output pixel is the mean of the source
area it covers, computed from a summed-area table), which is what ``cv2.INTER_AREA`` does
and, unlike bilinear sampling, neither aliases nor reads outside the box.

Calibration (the quick preset: convnet, 6 epochs, seed 0, one thread, 2,000 test images):
top-1 error 6.5% with max pooling, 8.0% with lift, 11.6% with average pooling (shapes:
9.85% and 41.7%). Most of what average pooling loses is on the two grey textures, grass
and gravel, which only fine texture tells apart (17% and 24% error against 0% and 3%
with max); astronaut and motorcycle, the photographs of most varied content, keep
16-33% error under all three pools.

Determinism: a set is a pure function of (seed, split, size). Crops come in chunks of
1,000, each from its own stream ``SeedSequence([seed, split, chunk])``, so a smaller set is
a prefix of a larger one and the test split does not depend on the train size. Generating
the default 10,000 + 2,000 images takes under 2 s of one core (shapes: about 2.3 s).
"""
from __future__ import annotations

import functools

import numpy as np
import skimage.data

from ..errors import UsageError
from .arrays import ArrayDataset, small_train_transform
from .bundles import DatasetBundle, check_holdout, check_size

# (class name, skimage.data function); the order is the label
PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut"),
    ("cat", "chelsea"),
    ("coffee", "coffee"),
    ("hubble", "hubble_deep_field"),
    ("ihc", "immunohistochemistry"),
    ("rocket", "rocket"),
    ("motorcycle", "stereo_motorcycle"),
    ("grass", "grass"),
    ("gravel", "gravel"),
    ("brick", "brick"),
)
CLASS_NAMES: tuple[str, ...] = tuple(name for name, _ in PHOTOS)
NUM_CLASSES = len(CLASS_NAMES)

DEFAULT_TRAIN_SIZE = 10_000
DEFAULT_TEST_SIZE = 2_000
IMAGE_SIZE = 32
CELL = 96                    # region cell side in source pixels = the largest crop side
MIN_SIDE = IMAGE_SIZE        # smallest crop side: never upsample
TEST_EVERY = 4               # cell (i, j) is a test cell when (i + 2 j) % TEST_EVERY == 0
VALIDATION_CELL = 2          # ... and a validation cell when (i + 2 j) % TEST_EVERY == VALIDATION_CELL
# names the images this module cuts for a (seed, split, size): change it with any change to
# the photographs, the regions or the sampling, so that stored results and checkpoints of
# the old images are never reused (tests/data/test_data_photos.py pins the statistics)
GENERATOR = "photos-v1"
CHUNK = 1_000
# the crop stream of each split; "fit" is the training cells less the validation cells
SPLITS = {"train": 0, "test": 1, "fit": 2, "validation": 3}
# names how a validation split is cut (data fingerprint of a held-out configuration): by cell
HOLDOUT_SPLIT = "photos-cells-v1"

# Per-channel statistics of the default training set (seed 0, 10,000 images, [0,1] scale);
# the model wrapper normalises with these. tests/data/test_data_photos.py checks them.
MEAN = (0.4656, 0.3903, 0.3589)
STD = (0.2505, 0.2188, 0.2193)


@functools.lru_cache(maxsize=1)
def photographs() -> tuple[np.ndarray, ...]:
    """The ten source photographs as read-only uint8 (H, W, 3) arrays, in label order."""
    out = []
    for _, fn in PHOTOS:
        img = getattr(skimage.data, fn)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity); keep left
            img = img[0]
        img = np.asarray(img, dtype=np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        img = np.ascontiguousarray(img[..., :3])
        img.flags.writeable = False
        out.append(img)
    return tuple(out)


def cells(photo: int, split: str) -> np.ndarray:
    """The (top, left) pixel corners of ``photo``'s cells in ``split``: int64 (k, 2).

    "train" and "test" partition the cells; "fit" and "validation" partition "train"."""
    _check_split(split)
    h, w = photographs()[photo].shape[:2]
    i, j = np.meshgrid(np.arange(h // CELL), np.arange(w // CELL), indexing="ij")
    residue = (i + 2 * j) % TEST_EVERY
    keep = {"test": residue == 0, "train": residue != 0, "validation": residue == VALIDATION_CELL,
            "fit": (residue != 0) & (residue != VALIDATION_CELL)}[split]
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64) * CELL


def crop_boxes(n: int, *, seed: int = 0, split: str = "train"):
    """The crops of a set: ``(labels, boxes, flips)``.

    labels: int64 (n,); boxes: int64 (n, 3) as (top, left, side) in source pixels of photo
    ``labels[k]``, the box being rows top..top+side-1 and columns left..left+side-1;
    flips: bool (n,), mirrored left-right after resampling.
    """
    n = _check_int("size", n, minimum=0)
    seed = _check_int("seed", seed, minimum=0)
    _check_split(split)
    grids = [cells(p, split) for p in range(NUM_CLASSES)]
    labels = np.empty(n, np.int64)
    boxes = np.empty((n, 3), np.int64)
    flips = np.empty(n, bool)
    for chunk, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], chunk]))
        # every draw is made for the whole chunk, in a fixed order, so a prefix is stable
        lab = rng.permuted(np.tile(np.arange(NUM_CLASSES), (CHUNK // NUM_CLASSES, 1)), axis=1).ravel()
        pick = rng.random(CHUNK)
        side = np.floor(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(CELL + 1), CHUNK))).astype(np.int64)
        side = np.minimum(side, CELL)
        offset = rng.random((CHUNK, 2))
        flip = rng.random(CHUNK) < 0.5
        counts = np.array([len(g) for g in grids])
        which = np.minimum((pick * counts[lab]).astype(np.int64), counts[lab] - 1)
        corner = np.stack([grids[c][k] for c, k in zip(lab, which)])
        pos = corner + np.floor(offset * (CELL - side + 1)[:, None]).astype(np.int64)
        m = stop - start
        labels[start:stop], flips[start:stop] = lab[:m], flip[:m]
        boxes[start:stop] = np.column_stack([pos, side])[:m]
    return labels, boxes, flips


def generate(n: int, *, seed: int = 0, split: str = "train"):
    """Cut ``n`` crops: ``(images, labels)``, uint8 (n, 32, 32, 3) and int64 (n,)."""
    labels, boxes, flips = crop_boxes(n, seed=seed, split=split)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for photo in range(NUM_CLASSES):
        sel = np.nonzero(labels == photo)[0]
        if sel.size:
            images[sel] = _area_resample(_summed_area(photo), boxes[sel], IMAGE_SIZE)
    images[flips] = images[flips, :, ::-1]
    return images, labels


@functools.lru_cache(maxsize=NUM_CLASSES)
def _summed_area(photo: int) -> np.ndarray:
    """Summed-area table of a photograph: float64 (H+1, W+1, 3), ``T[y, x]`` = sum of img[:y, :x]."""
    img = photographs()[photo].astype(np.float64)
    table = np.zeros((img.shape[0] + 1, img.shape[1] + 1, 3))
    table[1:, 1:] = img.cumsum(0).cumsum(1)
    table.flags.writeable = False
    return table


def _area_resample(table: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Area-average each square box to size x size: uint8 (len(boxes), size, size, 3).

    The table of a piecewise-constant image is bilinear inside each pixel, so bilinear
    interpolation of it at fractional edges gives the exact area integral; the outer edges
    are the box's own integer edges, so no pixel outside a box contributes.
    """
    h1, w1 = table.shape[:2]
    flat = table.reshape(-1, 3)
    t = np.arange(size + 1) / size                                   # output pixel edges in [0, 1]
    y0, fy = _floor_frac(boxes[:, 0, None] + boxes[:, 2, None] * t, h1 - 2)  # (n, E) source rows
    x0, fx = _floor_frac(boxes[:, 1, None] + boxes[:, 2, None] * t, w1 - 2)  # (n, E) source columns
    at = y0[:, :, None] * w1 + x0[:, None, :]                        # (n, E, E) flat table index
    wx, wy = fx[:, None, :, None], fy[:, :, None, None]

    def lerp(lo, hi, w):  # lo + (hi - lo) * w, in place on temporaries: memory bound
        hi -= lo
        hi *= w
        hi += lo
        return hi

    def along_x(i):  # the table interpolated along x on the row that flat index i lies on
        return lerp(np.take(flat, i, axis=0), np.take(flat, i + 1, axis=0), wx)

    corner = lerp(along_x(at), along_x(at + w1), wy)                 # table at every edge crossing
    sums = corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
    area = (boxes[:, 2].astype(np.float64) / size) ** 2
    return np.clip(sums / area[:, None, None, None] + 0.5, 0, 255).astype(np.uint8)


def _floor_frac(v: np.ndarray, top: int):
    # an edge on the last table row is interpolated from the cell below it with weight 1
    i = np.minimum(np.floor(v).astype(np.int64), top)
    return i, v - i


def load_photos(*, seed: int = 0, train_size: int | None = None, test_size: int | None = None,
                holdout: int = 0) -> DatasetBundle:
    """The built-in ``photos`` classification set (crops of scikit-image's photographs).

    holdout: with N > 0, ``test`` is N validation crops cut from the validation cells and
    ``train`` the other ``train_size - N`` crops, cut from the rest of the training cells (the
    test split is not in the bundle); 0: the training and test splits.
    """
    train_size = check_size("train_size", train_size) or DEFAULT_TRAIN_SIZE
    test_size = check_size("test_size", test_size) or DEFAULT_TEST_SIZE
    seed = _check_int("seed", seed, minimum=0)
    holdout = check_holdout(holdout, train_size)
    config = {"name": "photos", "seed": seed, "train_size": train_size, "test_size": test_size,
              "generator": GENERATOR}
    if holdout:
        config.update(holdout=holdout, holdout_split=HOLDOUT_SPLIT)
        (xtr, ytr), (xte, yte) = _generated(train_size - holdout, seed, "fit"), _generated(holdout, seed, "validation")
    else:
        (xtr, ytr), (xte, yte) = _generated(train_size, seed, "train"), _generated(test_size, seed, "test")
    return DatasetBundle(
        name="photos",
        train=ArrayDataset(xtr, ytr, small_train_transform(IMAGE_SIZE)),
        test=ArrayDataset(xte, yte),
        num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, mean=MEAN, std=STD,
        class_names=CLASS_NAMES, config=config, source="skimage.data",
        evaluated="validation" if holdout else "test",
    )


@functools.lru_cache(maxsize=4)
def _generated(n: int, seed: int, split: str):
    arrays = generate(n, seed=seed, split=split)
    for a in arrays:
        a.flags.writeable = False  # cached: shared between bundles
    return arrays


def _check_split(split) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def _check_int(what: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)
