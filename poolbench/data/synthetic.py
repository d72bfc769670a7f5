"""Built-in generated data: ``shapes`` (classification) and ``shapes-seg`` (segmentation).

Nothing to download: 32x32 RGB images generated from a seed with vectorised numpy
(12,000 images in about 2 s on one core). Each image holds ONE textured object at a
random position, scale, aspect, small rotation and colour, on a cluttered background (a
colour gradient, soft blobs, thin lines, sometimes a faint background grating) with pixel
noise. The ten classes are a 5 x 2 grid, five shapes times two stripe orientations, so
every class has a *texture twin* (same shape, stripes turned by 90 degrees) and four
*shape twins* (same stripes, other shape). Stripe periods are fine (2.2 to 5 pixels) so the
orientation cue lives at the scale that a 2x2 pooling layer keeps, blurs or aliases, and
the silhouette must survive striping and clutter: the choice of pooling matters.

Calibration (one CPU thread, seed 0, 10,000/2,000 images, SGD lr 0.05 momentum 0.9 wd 5e-4,
cosine schedule, batch 128, RandomCrop(32, 4) + flip, 5 epochs; conv-BN-ReLU stages of width
32/64/128 each ending in a 2x2 pool, then global average pool + linear): one conv per stage
reaches 86% test accuracy with max pooling (81% with data and init seed 1) and 50% with
average pooling (about 1 min on one thread); two convs per stage reach 95% with max pooling
(about 3 min).

| id | name | shape | stripes |
|---|---|---|---|
| 0 | disk-hstripes | filled disk | horizontal |
| 1 | disk-vstripes | filled disk | vertical |
| 2 | square-hstripes | filled square | horizontal |
| 3 | square-vstripes | filled square | vertical |
| 4 | triangle-hstripes | triangle (apex up or down) | horizontal |
| 5 | triangle-vstripes | triangle (apex up or down) | vertical |
| 6 | diamond-hstripes | square turned 45 degrees | horizontal |
| 7 | diamond-vstripes | square turned 45 degrees | vertical |
| 8 | cross-hstripes | plus sign | horizontal |
| 9 | cross-vstripes | plus sign | vertical |

Nuisances (random per image): shape rotation within +-10 degrees, stripe direction within
+-15 degrees, stripe period 2.2-5 px, phase, sharpness and contrast (0.3-0.8), object
half-size 7-12 px and aspect 0.85-1.15, position, colours (the object's kept apart from the
background under it), a colour gradient, 3 soft blobs, 2 thin lines, a faint grating behind
(3 images in 10) and pixel noise sigma 0.01-0.06 (on [0, 1]). Every class is invariant to
a horizontal flip (the flip keeps a stripe horizontal or vertical and an apex up or down),
so RandomHorizontalFlip is a label-preserving augmentation.

``shapes-seg`` is the same generator returning a per-pixel mask with the image: 0 for
background (clutter included) and ``class_id + 1`` (1..10) on the object's pixels, so the
segmentation task has 11 classes (``SEG_CLASS_NAMES``).

Determinism: a set is a pure function of (seed, split, size, image_size). Images come in
chunks of 1,000, each from its own stream ``SeedSequence([seed, split, chunk])``, so a
smaller set is a prefix of a larger one and the test split does not depend on the train
size. Labels come in blocks of ten holding each class once, so any prefix is balanced to
within one image per class. Same seed, same machine, same bytes.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError

CLASS_NAMES: tuple[str, ...] = (
    "disk-hstripes", "disk-vstripes",
    "square-hstripes", "square-vstripes",
    "triangle-hstripes", "triangle-vstripes",
    "diamond-hstripes", "diamond-vstripes",
    "cross-hstripes", "cross-vstripes",
)
SEG_CLASS_NAMES: tuple[str, ...] = ("background",) + CLASS_NAMES
NUM_CLASSES = len(CLASS_NAMES)
SHAPES = ("disk", "square", "triangle", "diamond", "cross")

DEFAULT_TRAIN_SIZE = 10_000
DEFAULT_TEST_SIZE = 2_000
IMAGE_SIZE = 32
# names the images this module draws for a (seed, split, size): change it with any change to
# the drawing, so that stored results and checkpoints of the old images are never reused
# (tests/data/test_data_synthetic.py pins the bytes it names)
GENERATOR = "shapes-v1"
CHUNK = 1_000
SPLITS = {"train": 0, "test": 1}

# Per-channel statistics of the default training set (seed 0, 10,000 images, [0,1] scale);
# the model wrapper normalises with these. tests/data/test_data_synthetic.py checks them.
MEAN = (0.5004, 0.5008, 0.5013)
STD = (0.2325, 0.2310, 0.2330)


def generate(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    image_size: int = IMAGE_SIZE,
    with_masks: bool = False,
):
    """Generate ``n`` images: ``(images, labels)`` or ``(images, labels, masks)``.

    images: uint8 (n, S, S, 3); labels: int64 (n,) in 0..9; masks (with_masks): uint8
    (n, S, S), 0 = background, label + 1 on the object.
    """
    n = _check_int("size", n, minimum=0)
    seed = _check_int("seed", seed, minimum=0)
    image_size = _check_int("image_size", image_size, minimum=16)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    masks = np.empty((n, image_size, image_size), np.uint8) if with_masks else None
    for chunk, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], chunk]))
        img, lab, msk = _render_chunk(rng, CHUNK, image_size, count=stop - start)
        images[start:stop], labels[start:stop] = img, lab
        if masks is not None:
            masks[start:stop] = msk * (lab[:, None, None] + 1).astype(np.uint8)
    return (images, labels, masks) if with_masks else (images, labels)


def _check_int(what: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _render_chunk(rng: np.random.Generator, m: int, S: int, layers: bool = False, count: int | None = None):
    """Render the first ``count`` (default all) of a chunk of m images (m a multiple of 10).

    Every random draw happens here, in a fixed order, for the whole chunk.

    ``layers=True`` also returns the background and the object layer alone (noise and
    quantisation included), such that ``image == where(mask, object, background)``.
    """
    f32 = np.float32
    k = S / 32.0  # lengths below are in pixels at 32x32
    count = m if count is None else count
    labels = rng.permuted(np.tile(np.arange(NUM_CLASSES), (m // NUM_CLASSES, 1)), axis=1).ravel()
    shape_id, vertical = labels // 2, labels % 2

    # ---- every parameter, drawn up front --------------------------------------------------
    bg0 = rng.random((m, 3), dtype=f32)
    bg1 = rng.random((m, 3), dtype=f32)
    grad_angle = rng.uniform(0, 2 * np.pi, m).astype(f32)
    grad_strength = rng.uniform(0.0, 1.0, m).astype(f32)
    n_blobs, n_lines = 3, 2
    blob_xy = rng.uniform(0, S, (m, n_blobs, 2)).astype(f32)
    blob_sigma = (rng.uniform(2.0, 6.0, (m, n_blobs)) * k).astype(f32)
    blob_col = rng.random((m, n_blobs, 3), dtype=f32)
    blob_alpha = rng.uniform(0.0, 0.6, (m, n_blobs)).astype(f32)
    line_xy = rng.uniform(0, S, (m, n_lines, 2)).astype(f32)
    line_angle = rng.uniform(0, np.pi, (m, n_lines)).astype(f32)
    line_width = (rng.uniform(0.5, 1.0, (m, n_lines)) * k).astype(f32)
    line_col = rng.random((m, n_lines, 3), dtype=f32)
    line_alpha = rng.uniform(0.0, 0.7, (m, n_lines)).astype(f32)
    grating_on = rng.random(m) < 0.3
    grating_angle = rng.uniform(0, np.pi, m).astype(f32)
    grating_period = (rng.uniform(2.5, 6.0, m) * k).astype(f32)
    grating_amp = (rng.uniform(0.03, 0.12, m) * grating_on).astype(f32)

    size = (rng.uniform(7.0, 12.0, m) * k).astype(f32)            # half-size in pixels
    aspect = rng.uniform(0.85, 1.15, (m, 2)).astype(f32)
    margin = 0.7 * size
    cx = (margin + rng.random(m, dtype=f32) * (S - 2 * margin)).astype(f32)
    cy = (margin + rng.random(m, dtype=f32) * (S - 2 * margin)).astype(f32)
    rot = np.deg2rad(rng.uniform(-10, 10, m)).astype(f32)
    apex_down = rng.random(m) < 0.5
    stripe_angle = np.deg2rad(rng.uniform(-15, 15, m) + 90.0 * vertical).astype(f32)
    period = (rng.uniform(2.2, 5.0, m) * k).astype(f32)
    phase = rng.uniform(0, 2 * np.pi, m).astype(f32)
    sharp = rng.uniform(0.6, 2.0, m).astype(f32)
    contrast = rng.uniform(0.3, 0.8, m).astype(f32)
    col1 = rng.random((m, 3), dtype=f32)
    col2 = rng.random((m, 3), dtype=f32)
    noise_sigma = rng.uniform(0.01, 0.06, m).astype(f32)
    noise = rng.standard_normal((m, S, S, 3), dtype=f32)
    if count < m:  # render only a prefix; the draws above keep the whole chunk's stream
        drawn = (
            labels, shape_id, vertical, bg0, bg1, grad_angle, grad_strength, blob_xy,
            blob_sigma, blob_col, blob_alpha, line_xy, line_angle, line_width, line_col,
            line_alpha, grating_angle, grating_period, grating_amp, size, aspect, cx, cy,
            rot, apex_down, stripe_angle, period, phase, sharp, contrast, col1, col2,
            noise_sigma, noise,
        )
        (
            labels, shape_id, vertical, bg0, bg1, grad_angle, grad_strength, blob_xy,
            blob_sigma, blob_col, blob_alpha, line_xy, line_angle, line_width, line_col,
            line_alpha, grating_angle, grating_period, grating_amp, size, aspect, cx, cy,
            rot, apex_down, stripe_angle, period, phase, sharp, contrast, col1, col2,
            noise_sigma, noise,
        ) = (a[:count] for a in drawn)
        m = count

    # ---- background -------------------------------------------------------------------------
    c = (np.arange(S, dtype=f32) + 0.5)
    yy, xx = c[:, None], c[None, :]                                 # (S,1), (1,S)
    X, Y = xx[None] - S / 2, yy[None] - S / 2                       # (1,1,S), (1,S,1)
    ca, sa = np.cos(grad_angle)[:, None, None], np.sin(grad_angle)[:, None, None]
    t = ((X * ca + Y * sa) / S + 0.5) * grad_strength[:, None, None]           # (m,S,S)
    img = bg0[:, None, None, :] + (bg1 - bg0)[:, None, None, :] * t[..., None]  # (m,S,S,3)

    gx = xx[None, None] - blob_xy[..., 0, None, None]               # (m,B,1,S)
    gy = yy[None, None] - blob_xy[..., 1, None, None]               # (m,B,S,1)
    inv = (-0.5 / blob_sigma**2)[..., None, None]
    for b in range(n_blobs):
        a = (np.exp((gx[:, b] ** 2 + gy[:, b] ** 2) * inv[:, b]) * blob_alpha[:, b, None, None])[..., None]
        img += (blob_col[:, b, None, None, :] - img) * a
    for j in range(n_lines):
        s_, c_ = np.sin(line_angle[:, j])[:, None, None], np.cos(line_angle[:, j])[:, None, None]
        d = np.abs((xx[None] - line_xy[:, j, 0, None, None]) * s_ - (yy[None] - line_xy[:, j, 1, None, None]) * c_)
        a = (np.clip(line_width[:, j, None, None] - d + 0.5, 0, 1) * line_alpha[:, j, None, None])[..., None]
        img += (line_col[:, j, None, None, :] - img) * a
    ga, gb = np.cos(grating_angle)[:, None, None], np.sin(grating_angle)[:, None, None]
    g = np.sin((X * ga + Y * gb) * (2 * np.pi / grating_period)[:, None, None])
    img += (g * grating_amp[:, None, None])[..., None]

    # ---- object -------------------------------------------------------------------------------
    # Colours: the object's base colour stays away from the background under it, and the
    # stripe colour away from the base colour (a flipped colour when too close).
    ix = np.clip(cx.astype(np.int64), 0, S - 1)
    iy = np.clip(cy.astype(np.int64), 0, S - 1)
    under = np.clip(img[np.arange(m), iy, ix], 0, 1)
    close = np.linalg.norm(col1 - under, axis=1) < 0.5
    col1[close] = 1.0 - under[close]
    close = np.linalg.norm(col2 - col1, axis=1) < 0.4
    col2[close] = 1.0 - col1[close]

    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]         # (m,1,S),(m,S,1)
    cr, sr = np.cos(rot)[:, None, None], np.sin(rot)[:, None, None]
    u = (dx * cr + dy * sr) / (size * aspect[:, 0])[:, None, None]
    v = (dy * cr - dx * sr) / (size * aspect[:, 1])[:, None, None]
    v = np.where(apex_down[:, None, None], -v, v)                    # only triangles care
    mask = np.zeros((m, S, S), bool)
    for sid, name in enumerate(SHAPES):
        sel = np.nonzero(shape_id == sid)[0]
        if sel.size:
            mask[sel] = _inside(name, u[sel], v[sel])

    cs, ss = np.cos(stripe_angle)[:, None, None], np.sin(stripe_angle)[:, None, None]
    # stripe coordinate runs along the stripes' normal: angle 0 -> horizontal stripes
    w = dy * cs - dx * ss
    p = np.sin(w * (2 * np.pi / period)[:, None, None] + phase[:, None, None])
    p = np.clip(0.5 + 0.5 * sharp[:, None, None] * p, 0, 1) * contrast[:, None, None]
    obj = col1[:, None, None, :] + (col2 - col1)[:, None, None, :] * p[..., None]
    noise *= noise_sigma[:, None, None, None]
    out = _quantise(np.where(mask[..., None], obj, img) + noise)
    if layers:
        return out, labels.astype(np.int64), mask.astype(np.uint8), _quantise(img + noise), _quantise(obj + noise)
    return out, labels.astype(np.int64), mask.astype(np.uint8)


def _quantise(x: np.ndarray) -> np.ndarray:
    np.clip(x, 0, 1, out=x)
    return (x * 255 + 0.5).astype(np.uint8)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if shape == "disk":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.85
    if shape == "diamond":
        return au + av <= 1.2
    if shape == "triangle":  # apex at v = -1, base at v = 0.75 with half-width 1.05
        return (v >= -1.0) & (v <= 0.75) & (au <= (v + 1.0) * (1.05 / 1.75))
    if shape == "cross":
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    raise AssertionError(shape)
