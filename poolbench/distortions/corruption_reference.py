"""The project's numpy generator: the 19 corruptions at any parameter set (``params.PARAMS``).

This is the reference engine for the ``cifar`` and ``tinyimagenet`` sets (for ``imagenet`` the
reference is ``imagecorruptions`` itself; ``tests/distortions/test_corruptions.py`` checks that this
generator with the ImageNet constants gives the library's bytes where the formulas agree). The
formulas are the authors' (``make_cifar_c.py``, ``make_tinyimagenet_c.py``), written for any
H x W, with three deliberate differences, all as in ``imagecorruptions``: motion blur is
the library's re-implementation of ImageMagick's (the authors called ImageMagick through
Wand), the fog fractal is drawn at the next power of two above the longer side, and impulse
noise and glass blur take their own ``seed`` (the other 17 read numpy's global generator,
seeded by the caller). The frost photographs are the ones ``imagecorruptions`` ships.

Every function maps uint8 (H, W, 3) to float (H, W, 3) in 0..255 (callers truncate to uint8,
as the authors' ``np.uint8`` did).
"""
from __future__ import annotations

import importlib.resources
from functools import lru_cache
from io import BytesIO

import cv2
import numpy as np
import skimage as sk
from imagecorruptions import corruptions as _lib
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian

from .corruption_params import NATIVE_SIZE, VARIANTS, constants

REVISION = 1  # bump when a change here changes the bytes
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


@lru_cache(maxsize=None)
def frost_image(index: int) -> np.ndarray:
    """Frost photograph ``index`` (0..5) as BGR uint8, loaded from the imagecorruptions package."""
    ref = importlib.resources.files("imagecorruptions") / "frost" / FROST_FILES[index]
    with importlib.resources.as_file(ref) as path:
        img = cv2.imread(str(path))
    if img is None:  # pragma: no cover - a broken install
        raise FileNotFoundError(f"frost image {ref} is missing from imagecorruptions")
    return img


def clipped_zoom(img: np.ndarray, factor: float, trim: str) -> np.ndarray:
    """Zoom the central crop of (H, W, C) by ``factor`` (bilinear) back to at least H x W and
    cut H x W from its centre (``center``, the authors) or its top-left corner (``topleft``);
    ``none`` keeps the whole zoomed image (its top-left H x W is the ``topleft`` result)."""
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / float(factor))), int(np.ceil(w / float(factor)))
    top, left = (h - ch) // 2, (w - cw) // 2
    z = scizoom(img[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
    if trim == "center":
        t, l = (z.shape[0] - h) // 2, (z.shape[1] - w) // 2
        return z[t:t + h, l:l + w]
    return z if trim == "none" else z[:h, :w]


def _gray(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None]


def gaussian_noise(x, c, **_):
    x = x / 255.
    return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, **_):
    x = x / 255.
    return np.clip(np.random.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x, c, seed=None, **_):
    return np.clip(sk.util.random_noise(x / 255., "s&p", rng=seed, amount=c), 0, 1) * 255


def speckle_noise(x, c, **_):
    x = x / 255.
    return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, c, **_):
    return np.clip(gaussian(x / 255., sigma=c, channel_axis=-1), 0, 1) * 255


def glass_blur(x, c, seed=None, **_):
    y = np.uint8(gaussian(x / 255., sigma=c[0], channel_axis=-1) * 255)
    y = _lib._shuffle_pixels_njit_glass_blur(y.shape[0], y.shape[1], y, c, seed)
    return np.clip(gaussian(y / 255., sigma=c[0], channel_axis=-1), 0, 1) * 255


def defocus_blur(x, c, **_):
    kernel = _lib.disk(radius=c[0], alias_blur=c[1])
    x = x / 255.
    out = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


def motion_blur(x, c, **_):
    angle = np.random.uniform(-45, 45)
    return np.clip(_lib._motion_blur(x, radius=c[0], sigma=c[1], angle=angle), 0, 255)


def zoom_blur(x, c, params, **_):
    x = (x / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for z in c:
        out += clipped_zoom(x, z, VARIANTS["zoom_trim"][params])
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def fog(x, c, **_):
    h, w = x.shape[:2]
    x = x / 255.
    peak = x.max()
    layer = _lib.plasma_fractal(mapsize=_lib.next_power_of_2(max(h, w)), wibbledecay=c[1])
    x = x + c[0] * layer[:h, :w][..., None]
    return np.clip(x * peak / (peak + c[0]), 0, 1) * 255


def frost_layer(params: str, h: int, w: int, index: int, x0: int, y0: int) -> np.ndarray:
    """The RGB frost crop at (x0, y0) (rows, columns) of the resized photograph ``index``."""
    return frost_source(params, h, w, index)[x0:x0 + h, y0:y0 + w][..., [2, 1, 0]]


@lru_cache(maxsize=64)
def frost_source(params: str, h: int, w: int, index: int) -> np.ndarray:
    """Photograph ``index`` resized for an h x w image, BGR uint8 (cached: it is the same for
    every image of a set)."""
    img = frost_image(index)
    rule = VARIANTS["frost_resize"][params]
    if rule == "fit":  # imagecorruptions: grow to fit, then 10% more, bicubic
        fh, fw = img.shape[:2]
        scale = max(1.0, h / fh, w / fw) * 1.1
        size = (int(np.ceil(fw * scale)), int(np.ceil(fh * scale)))
        return cv2.resize(img, dsize=size, interpolation=cv2.INTER_CUBIC)
    # the authors' fixed factor at the native size, scaled with the image (and never smaller
    # than the image plus one pixel, so that a crop position can be drawn)
    factor = float(rule) * max(h, w) / NATIVE_SIZE[params]
    factor = max(factor, (h + 1) / img.shape[0], (w + 1) / img.shape[1])
    return cv2.resize(img, (0, 0), fx=factor, fy=factor)


def frost_draw(params: str, h: int, w: int) -> tuple[int, int, int]:
    """(photograph, row, column) from numpy's global generator, in the authors' order."""
    index = np.random.randint(int(VARIANTS["frost_files"][params]))
    src = frost_source(params, h, w, index)
    return index, np.random.randint(0, src.shape[0] - h), np.random.randint(0, src.shape[1] - w)


def frost(x, c, params, **_):
    h, w = x.shape[:2]
    index, x0, y0 = frost_draw(params, h, w)
    return np.clip(c[0] * x + c[1] * frost_layer(params, h, w, index, x0, y0), 0, 255)


def snow(x, c, params, **_):
    h, w = x.shape[:2]
    x = x.astype(np.float32) / 255.
    layer = np.random.normal(size=(h, w), loc=c[0], scale=c[1])
    # imagecorruptions blurs the whole zoomed layer and crops afterwards (the edge it replicates
    # is the zoomed layer's); the authors trim first
    trim = VARIANTS["zoom_trim"][params]
    layer = clipped_zoom(layer[..., None], c[2], "none" if trim == "topleft" else trim)[..., 0]
    layer[layer < c[3]] = 0
    layer = np.clip(layer, 0, 1)
    if VARIANTS["snow_quantise_first"][params]:  # the authors' 8-bit PNG for ImageMagick
        layer = (layer * 255).astype(np.uint8) / 255.
    layer = _lib._motion_blur(layer, radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.)[:h, :w, None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def spatter(x, c, **_):
    x = x.astype(np.float32) / 255.
    liquid = gaussian(np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1]), sigma=c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:  # water: a turquoise sheen along the edges of the liquid
        liquid = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, ker), (3, 3)).astype(np.float32)
        m = liquid * dist
        with np.errstate(divide="ignore", invalid="ignore"):
            m = m / m.max() * c[4]
        color = np.array([175, 238, 238], np.float32) / 255.
        return np.clip(x + m[..., None] * color, 0, 1) * 255
    m = gaussian(np.where(liquid > c[3], 1, 0).astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = np.array([63, 42, 20], np.float64) / 255. * m[..., None]  # mud brown
    return np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255


def contrast(x, c, **_):
    x = x / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def brightness(x, c, **_):
    x = sk.color.rgb2hsv(x / 255.)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255


def saturate(x, c, **_):
    x = sk.color.rgb2hsv(x / 255.)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255


def jpeg_compression(x, c, **_):
    out = BytesIO()
    Image.fromarray(x).save(out, "JPEG", quality=c)
    return np.asarray(Image.open(out), dtype=np.float64)


def pixelate(x, c, params, **_):
    h, w = x.shape[:2]
    img = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
    up = Image.BOX if VARIANTS["pixelate_up"][params] == "box" else Image.NEAREST
    return np.asarray(img.resize((w, h), up), dtype=np.float64)


def elastic_draw(params: str, severity: int, h: int, w: int):
    """The random parts of elastic_transform, in the authors' order: the affine map (None in
    the plain variant) and the two displacement fields dx, dy (float32 H x W)."""
    c = constants(params, "elastic_transform", severity)
    if VARIANTS["elastic"][params] == "plain":
        sigma = np.array((h, w)) * c[1]
        dmax = h * c[2]
        fields = [np.random.uniform(-dmax, dmax, size=(h, w)) for _ in range(2)]
        dx, dy = ((gaussian(f, sigma, mode="reflect", truncate=3) * c[0]).astype(np.float32)
                  for f in fields)
        return None, dx, dy
    size = min(h, w)
    centre = np.float32((h, w)) // 2
    half = min(h, w) // 3
    pts1 = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    pts2 = pts1 + np.random.uniform(-c[2] * size, c[2] * size, size=pts1.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(pts1, pts2)
    u1 = np.random.uniform(-1, 1, size=(h, w))
    dx = (gaussian(u1, c[1] * size, mode="reflect", truncate=3) * c[0] * size).astype(np.float32)
    u2 = np.random.uniform(-1, 1, size=(h, w))
    dy = (gaussian(u2, c[1] * size, mode="reflect", truncate=3) * c[0] * size).astype(np.float32)
    return matrix, dx, dy


def elastic_transform(x, c, params, severity, **_):
    h, w = x.shape[:2]
    matrix, dx, dy = elastic_draw(params, severity, h, w)
    image = x.astype(np.float32) / 255.
    if matrix is not None:
        image = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.stack([map_coordinates(image[..., k], (yy + dy, xx + dx), order=1, mode="reflect")
                    for k in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


FUNCTIONS = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression,
    speckle_noise, gaussian_blur, spatter, saturate)}


def corrupt(x: np.ndarray, corruption: str, severity: int, params: str, seed: int | None = None):
    """One uint8 (H, W, 3) image -> float (H, W, 3) in 0..255 (numpy's global generator seeded
    by the caller; ``seed`` for impulse_noise and glass_blur)."""
    c = constants(params, corruption, severity)
    return FUNCTIONS[corruption](np.asarray(x), c, params=params, severity=severity, seed=seed)
