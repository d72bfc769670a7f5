"""Image operations of the perturbation frames (``poolbench.distortions.perturbation_reference``): OpenCV warps
about the image centre (bilinear, zero fill), the one-sided Gaussian motion-blur line kernel,
and the zoom, drip and spatter steps of the snow and spatter layers."""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from scipy.ndimage import zoom


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def warp(images: np.ndarray, matrix: np.ndarray, perspective: bool = False) -> np.ndarray:
    """Warp uint8 (n, H, W, 3) images with one 2x3 affine or 3x3 perspective matrix
    (bilinear, zero fill), one OpenCV call per image (about 15 us at 32x32). Stacking images
    along channels would be faster, but OpenCV's path for more than 4 channels interpolates
    differently (up to 5 grey levels apart), so results would depend on the chunking."""
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    kw = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    fn = cv2.warpPerspective if perspective else cv2.warpAffine
    for k in range(n):
        out[k] = fn(np.ascontiguousarray(images[k]), matrix, (w, h), **kw)
    return out


def _center(h: int, w: int) -> tuple[float, float]:
    return (w - 1) / 2.0, (h - 1) / 2.0


def affine(h: int, w: int, angle: float = 0.0, scale: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """2x3 matrix: rotate by ``angle`` degrees (counter-clockwise), scale, and shear x by
    ``shear`` degrees, about the image centre."""
    cx, cy = _center(h, w)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * scale
    sh = np.array([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]])
    lin = rot @ sh
    c = np.array([cx, cy])
    t = c - lin @ c
    return np.hstack([lin, t[:, None]]).astype(np.float64)


def tilt_matrix(h: int, w: int, degrees: float) -> np.ndarray:
    """Perspective of a plane turned by ``degrees`` about both the x and y axes (authors' model:
    focal length sqrt(w^2 + h^2), centre of the image)."""
    phi = theta = math.radians(degrees)
    f = math.hypot(w, h)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]], dtype=np.float64)
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0],
                   [0, math.sin(theta), math.cos(theta), 0], [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0],
                   [math.sin(phi), 0, math.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]], dtype=np.float64)
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]], dtype=np.float64)
    return p2 @ t @ rx @ ry @ p1


def motion_kernel(radius: int, sigma: float, angle: float, h: int, w: int) -> np.ndarray:
    """The line kernel of ``motion_blur`` for cv2.filter2D (anchor at the centre)."""
    width = 2 * int(radius) + 1
    k = np.arange(width, dtype=np.float64)
    weights = np.exp(-(k ** 2) / (2.0 * sigma ** 2))
    weights /= weights.sum()
    s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    size = 2 * (width - 1) + 1
    kernel = np.zeros((size, size))
    for i in range(width):
        dy, dx = -math.ceil(i * s - 0.5), -math.ceil(i * c - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break  # the streak left the image
        kernel[width - 1 - dy, width - 1 - dx] += weights[i]
    return kernel


def motion_blur(a: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """One-sided Gaussian line blur of float (n, H, W[, C]) along ``angle`` degrees: the sum
    over i of weight_i * (the image shifted i pixels along the angle), edges replicated."""
    h, w = a.shape[1], a.shape[2]
    kernel = motion_kernel(radius, sigma, angle, h, w)
    out = np.empty(a.shape, np.float64)
    for k in range(a.shape[0]):
        out[k] = cv2.filter2D(np.ascontiguousarray(a[k], dtype=np.float64), cv2.CV_64F, kernel,
                              borderType=cv2.BORDER_REPLICATE)
    return out


def gray(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def clipped_zoom(layer: np.ndarray, factor: float) -> np.ndarray:
    """Zoom (n, H, W) layers by ``factor`` about the centre, keeping H x W (bilinear)."""
    n, h, w = layer.shape
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    z = zoom(layer[:, top:top + ch, left:left + cw], (1, factor, factor), order=1)
    t, l = (z.shape[1] - h) // 2, (z.shape[2] - w) // 2
    return z[:, t:t + h, l:l + w]


def drip(layer: np.ndarray, kernel: Sequence[float]) -> np.ndarray:
    """np.convolve(column, kernel, mode='same') down every column of (H, W): the liquid runs down."""
    h = layer.shape[0]
    m = len(kernel)
    full = np.zeros((h + m - 1,) + layer.shape[1:])
    for j, wgt in enumerate(kernel):
        full[j:j + h] += wgt * layer
    off = (m - 1) // 2
    return full[off:off + h]


def spatter_frame(x: np.ndarray, layer: np.ndarray, strength: float) -> np.ndarray:
    """One spatter frame of float image x (H, W, 3) under the liquid layer (H, W)."""
    liquid = np.clip(layer * 255.0, 0, 255).astype(np.uint8)
    dist = 255 - cv2.Canny(liquid, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = liquid.astype(np.float32) * dist
    peak = float(m.max())
    m = m / peak * strength if peak > 0 else np.zeros_like(m)
    color = np.array([175, 238, 238], dtype=np.float64) / 255.0  # pale turquoise water
    return np.clip(x + m[..., None] * color, 0.0, 1.0)
