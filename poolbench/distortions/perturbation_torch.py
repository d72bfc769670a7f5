"""The torch engine of the perturbation sequences (ImageNet-P / CIFAR-P style): ``perturb``
(uint8 (N, 3, H, W) tensors -> (N, frames, 3, H, W)) and ``perturb_numpy`` (the cache's uint8
NHWC arrays, the role of ``poolbench.distortions.perturbation_reference._perturb_chunk``), batched on the
images' device, with the schedules and constants of ``perturb_frames`` (``PARAMS``). Image i's
random numbers come from ``rng.py`` keyed by (seed, perturbation, schedule, its index in the
set), so a set is the same whatever the batch size or chunking (per device type: CPU and CUDA
generators differ).

Matched against the numpy generator (tests/distortions/test_perturb_engine.py: photographs and a pattern at
32, 64 and 224 px, every frame; OpenCV 5.0):

- translate, brightness, gaussian_blur, motion_blur: the same bytes (brightness via ``ops``' HSV
  conversion, the blurs with scipy's kernel and the reference's own line kernel, in float64);
- rotate, shear, tilt, scale, zoom_blur: OpenCV's warp (the matrix inverted as OpenCV inverts
  it, its float32 source coordinates, bilinear, zero fill, rounded) by ``grid_sample``: per
  sequence 87 dB or more for rotate, shear and tilt, 80 dB for zoom_blur, 73 dB for scale
  (0.3 % of pixels one grey level apart: grid_sample interpolates in another order, which
  rounds the other way where OpenCV's value is within float32 error of a half);
- the noises and snow: the same formulas with the engine's own draws, so equal in
  distribution: the mean absolute change of every frame within 2.8 standard errors of the
  reference's (differences under 0.9 % for the noises, 1.3 % for snow), the noise independent
  between frames and white (|r| < 0.006); fed the reference's own draws, 78 dB or more (snow)
  and 97 dB or more (noises; shot noise the same bytes).

spatter is left to the numpy generator (not in IMPLEMENTED): each frame's water needs OpenCV's
Canny edges, distance transform and histogram equalisation of the dripping layer, which torch
has no equivalent of (the corruption engine leaves spatter to its reference for the same
reason). Frames whose parameter is the identity (translate 0, rotate 0, scale 1, brightness 0,
frame 0 of the noises and zoom_blur) are the input bytes; the rest is rounded as the numpy
generator rounds (np.rint, half to even like torch.round, of the clipped result).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError

# poolbench.data does not import this module (only data.perturbations does, after
# perturb_frames is loaded), so importing the schedules at module level makes no cycle
from .cache import check_seed
from .kernels import ops, rng
from .kernels.weather import gray
from .perturbation_ops import affine, motion_kernel, tilt_matrix
from .perturbation_schedules import (
    MIN_SIZE,
    PARAMS,
    SCHEDULE_LEVEL,
    check_perturbation,
    frame_count,
    frame_parameters,
    resolve_schedule,
)

REVISION = 2  # bump when a change here changes the bytes

IMPLEMENTED = ("gaussian_noise", "shot_noise", "speckle_noise", "brightness", "translate",
               "rotate", "tilt", "scale", "zoom_blur", "motion_blur", "gaussian_blur", "shear",
               "snow")
# Those whose equivalence with the numpy generator is tested (tests/distortions/test_perturb_engine.py):
# the default engine for these is torch. All that are implemented pass; spatter is not one.
TORCH_DEFAULT = IMPLEMENTED

_NOISES = ("gaussian_noise", "shot_noise", "speckle_noise")
_STREAMS = {"gaussian_noise": 101, "shot_noise": 102, "speckle_noise": 103, "snow": 130}
# float64 where it makes the bytes the numpy generator's (its float64 blurs and HSV round the
# same way then); the warps stay float32 like OpenCV's
_FLOAT64 = ("brightness", "motion_blur", "gaussian_blur")


def version() -> str:
    return f"poolbench.corrupt.perturb torch r{REVISION} (torch {'.'.join(torch.__version__.split('.')[:2])})"


def _to_levels(z: torch.Tensor) -> torch.Tensor:
    """``perturb_ops.to_uint8`` of values in [0, 1], kept as float levels 0..255."""
    return torch.round(z.clamp(0.0, 1.0) * 255.0)


def _u8(levels: torch.Tensor) -> torch.Tensor:
    """Rounded levels 0..255 as uint8: every frame is assembled in bytes, a quarter of the
    memory traffic of float frames."""
    return levels.clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- geometry

def _cv_inverse(m: np.ndarray) -> np.ndarray:
    """The 3x3 inverse cv2.warpAffine / warpPerspective sample with (without WARP_INVERSE_MAP
    they invert the forward matrix: affine by the explicit 2x2 formula, as here, perspective by
    LU)."""
    m = np.asarray(m, np.float64)
    if m.shape[0] == 3:
        return np.linalg.inv(m)
    d = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    d = 1.0 / d if d != 0 else 0.0
    a11, a12, a21, a22 = m[1, 1] * d, -m[0, 1] * d, -m[1, 0] * d, m[0, 0] * d
    return np.array([[a11, a12, -a11 * m[0, 2] - a12 * m[1, 2]],
                     [a21, a22, -a21 * m[0, 2] - a22 * m[1, 2]], [0.0, 0.0, 1.0]])


def _source_maps(h: int, w: int, matrices: Sequence[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, H, W) source rows and columns of every output pixel for each forward 2x3 or 3x3
    matrix, rounded as OpenCV (>= 4.11) computes them: per row float32(y * m1 + m2) in double,
    then fma(float32(m0), x, that) in float32 (a product of two floats is exact in double, so
    the double sum rounded once to float32 is the fma), and x / w in float32."""
    inv = torch.tensor(np.stack([_cv_inverse(m) for m in matrices]), dtype=torch.float64,
                       device=device)[..., None]
    f32, f64 = torch.float32, torch.float64
    x = torch.arange(w, dtype=f64, device=device)[None, None]
    y = torch.arange(h, dtype=f64, device=device)[None, :, None]

    def row(r):
        m0 = inv[:, r, 0, None].to(f32).to(f64)
        return (m0 * x + (y * inv[:, r, 1, None] + inv[:, r, 2, None]).to(f32).to(f64)).to(f32)

    xs, ys, ws = row(0), row(1), row(2)
    return ys / ws, xs / ws


@lru_cache(maxsize=4)
def _grid(h: int, w: int, kind: str, values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """grid_sample's float32 (1, F * H, W, 2) grid of the frames' warps (``kind``: rotate,
    scale, shear or tilt; ``values``: their parameters), made once per size and schedule."""
    if kind == "tilt":
        mats = [tilt_matrix(h, w, v) for v in values]
    else:
        key = {"rotate": "angle", "scale": "scale", "shear": "shear"}[kind]
        mats = [affine(h, w, **{key: v}) for v in values]
    ys, xs = _source_maps(h, w, mats, device)
    # clamped one pixel outside the image: such a sample is zero, as OpenCV's BORDER_CONSTANT
    # (NaN: a point at infinity of the perspective, outside too)
    ys = torch.nan_to_num(ys, nan=-1.0).clamp(-1.0, float(h))
    xs = torch.nan_to_num(xs, nan=-1.0).clamp(-1.0, float(w))
    grid = torch.stack([xs * (2.0 / max(w - 1, 1)) - 1.0, ys * (2.0 / max(h - 1, 1)) - 1.0], -1)
    return grid.to(torch.float32).reshape(1, -1, w, 2)


def _warp(x: torch.Tensor, kind: str, values: Sequence[float]) -> torch.Tensor:
    """Float32 (N, C, H, W) 0..255 warped as each frame's matrix says, bilinear, zero fill,
    rounded as OpenCV's uint8 output: uint8 (N, F, C, H, W)."""
    n, c, h, w = x.shape
    grid = _grid(h, w, kind, tuple(values), x.device).expand(n, -1, -1, -1)
    # grid_sample, not ops.sample_bilinear: the same zero-fill bilinear sample in one fused
    # kernel, 6-20 times faster on CPU than its four gathers (measured at 32 and 224 px); every
    # image shares the frame's grid (an expanded view)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # weights >= 0 summing to 1 over bytes: rounded, the result is a byte already
    return out.round_().to(torch.uint8).reshape(n, c, len(values), h, w).transpose(1, 2)


def _geometric(images: torch.Tensor, x: torch.Tensor, p: str, params: list[float]) -> torch.Tensor:
    identity = 1.0 if p == "scale" else 0.0
    todo = [i for i, v in enumerate(params) if v != identity]
    out = images[:, None].repeat(1, len(params), 1, 1, 1)
    if todo:
        out[:, todo] = _warp(x, p, [params[i] for i in todo])
    return out


def _translate(images: torch.Tensor, params: list[float]) -> torch.Tensor:
    n, c, h, w = images.shape
    out = torch.zeros(n, len(params), c, h, w, dtype=images.dtype, device=images.device)
    for i, d in enumerate(int(v) for v in params):
        if abs(d) >= w:
            continue
        if d >= 0:
            out[:, i, ..., d:] = images[..., :w - d]
        else:
            out[:, i, ..., :w + d] = images[..., -d:]
    return out


def _zoom_blur(images: torch.Tensor, x: torch.Tensor, params: list[float]) -> torch.Tensor:
    zooms = _warp(x, "scale", params[1:])
    # sums of at most 31 bytes are exact in float32, and acc / (i + 1) is never within float32
    # rounding of a half unless it is one: np.rint of the float64 mean, to the byte
    acc, frames = x.clone(), [images]
    for i in range(1, len(params)):
        acc += zooms[:, i - 1]
        frames.append((acc / (i + 1)).round_().to(torch.uint8))
    return torch.stack(frames, 1)


# --------------------------------------------------------------------------- blurs

def _line_blur(x: torch.Tensor, radius: int, sigma: float, angle: float) -> torch.Tensor:
    """``perturb_ops.motion_blur`` of float (N, C, H, W): cv2.filter2D (correlation about the
    centre, edges replicated) with the reference's own line kernel. Not ``ops.motion_blur``:
    that one takes sin and cos on the images' device, and at the schedules' multiples of 30
    degrees i * sin(a) - 0.5 is an integer to the last bit (sin(-150 deg)), so one ulp of a
    device's sin moves a tap by a pixel; the host's math.sin keeps the taps the reference's."""
    h, w = x.shape[-2:]
    kernel = motion_kernel(radius, sigma, angle, h, w)
    r = kernel.shape[0] // 2
    xp = ops.pad(x, (r, r), (r, r), "nearest")
    out = torch.zeros_like(x)
    for u, v in zip(*np.nonzero(kernel)):
        out.add_(xp[..., u:u + h, v:v + w], alpha=float(kernel[u, v]))
    return out


def _motion_blur(x, q, params):
    return torch.stack([_u8(torch.round(_line_blur(x, q["radius"], q["sigma"], a)))
                        for a in params], 1)


def _gaussian_blur(x, q, params):
    y = x / 255.0
    return torch.stack([_u8(_to_levels(ops.gaussian(y, s, "nearest", truncate=q["truncate"])))
                        for s in params], 1)


def _brightness(images, x, params):
    # digital.brightness's steps with the HSV conversion made once, not once per frame
    hsv = ops.rgb2hsv(x / 255.0)
    frames = []
    for c in params:
        if c == 0:
            frames.append(images)
            continue
        v = torch.clamp(hsv[:, 2] + c, 0, 1)
        frames.append(_u8(_to_levels(ops.hsv2rgb(torch.stack([hsv[:, 0], hsv[:, 1], v], 1)))))
    return torch.stack(frames, 1)


# --------------------------------------------------------------------------- random

def _noise(images, x, p, q, keys):
    n, c, h, w = x.shape
    y = (x / 255.0)[:, None]
    shape, stream = (q["frames"] - 1, c, h, w), _STREAMS[p]
    if p == "gaussian_noise":
        z = y + rng.normal(keys, shape, stream, scale=q["sigma"], dtype=x.dtype)
    elif p == "shot_noise":
        lam = (x.to(torch.float64) / 255.0 * q["rate"])[:, None].expand(n, *shape)
        z = (rng.poisson(keys, lam, stream) / q["rate"]).to(x.dtype)
    else:
        z = y + y * rng.normal(keys, shape, stream, scale=q["sigma"], dtype=x.dtype)
    return torch.cat([images[:, None], _u8(_to_levels(z))], 1)


def _snow(x, q, params, keys):
    h, w = x.shape[-2:]
    layer = rng.normal(keys, (1, h, w), _STREAMS["snow"], loc=q["loc"], scale=q["scale"],
                       dtype=torch.float64)
    layer = ops.clipped_zoom(layer, q["zoom"], "center")
    layer = torch.where(layer < q["threshold"], torch.zeros_like(layer), layer)
    layer = (_to_levels(layer) / 255.0).to(x.dtype)  # the authors' 8-bit snow layer
    y = x / 255.0
    base = q["mix"] * y + (1 - q["mix"]) * torch.maximum(y, gray(y) * 1.5 + 0.5)
    out = []
    for angle in params:
        moving = _to_levels(_line_blur(layer, q["radius"], q["sigma"], angle)) / 255.0
        out.append(_u8(_to_levels(base + moving + torch.flip(moving, (-2, -1)))))
    return torch.stack(out, 1)


# --------------------------------------------------------------------------- entry points

def _check_name(perturbation: str) -> str:
    p = check_perturbation(perturbation)
    if p not in IMPLEMENTED:
        raise UsageError(f"the torch perturbation engine has no {p} (it needs OpenCV's edge and "
                         "distance transforms); use engine='reference'")
    return p


def perturb(images: torch.Tensor, perturbation: str, seed: int = 0, schedule: str = "auto",
            indices: Sequence[int] | None = None) -> torch.Tensor:
    """Sequences of uint8 (N, 3, H, W) images on their device: uint8 (N, frames, 3, H, W).

    ``indices``: each image's index in the whole set (default 0..N-1); with ``seed``,
    ``perturbation`` and the schedule it fixes the image's random numbers, so a set is the same
    whatever the batch size or chunking. ``schedule``: auto | cifar | tinyimagenet | imagenet.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[1] != 3 or len(images) == 0:
        what = (f"a {type(images).__name__}" if not isinstance(images, torch.Tensor)
                else f"{images.dtype} {tuple(images.shape)}")
        raise UsageError(f"images must be a non-empty uint8 tensor (N, 3, H, W); got {what}")
    n, _, h, w = images.shape
    if h < MIN_SIZE or w < MIN_SIZE:
        raise UsageError(f"images are {h}x{w} but must be at least {MIN_SIZE}x{MIN_SIZE}")
    p, seed = _check_name(perturbation), check_seed(seed)
    schedule = resolve_schedule(schedule, (h, w))
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(idx) != n:
        raise UsageError(f"{len(idx)} indices for {n} images; pass one index per image")
    q, params = PARAMS[schedule][p], frame_parameters(p, schedule)
    x = images.to(torch.float64 if p in _FLOAT64 else torch.float32,
                  memory_format=torch.contiguous_format)  # planes: see engine.corrupt
    if p in _NOISES or p == "snow":
        keys = rng.image_keys(seed, p, SCHEDULE_LEVEL[schedule], idx, images.device)
        return _noise(images, x, p, q, keys) if p in _NOISES else _snow(x, q, params, keys)
    if p == "translate":
        return _translate(images, params)
    if p in ("rotate", "scale", "shear", "tilt"):
        return _geometric(images, x, p, params)
    if p == "zoom_blur":
        return _zoom_blur(images, x, params)
    if p == "motion_blur":
        return _motion_blur(x, q, params)
    if p == "gaussian_blur":
        return _gaussian_blur(x, q, params)
    return _brightness(images, x, params)


def batch_size(h: int, w: int, frames: int) -> int:
    """Images per batch: about 8 M output pixels (a few hundred MB of float temporaries)."""
    return max(1, (8 << 20) // max(1, h * w * frames))


def perturb_numpy(images: np.ndarray, perturbation: str, seed: int, schedule: str, start: int = 0,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, frames, H, W, 3); image k has index start + k in the set."""
    n, h, w, _ = images.shape
    schedule = resolve_schedule(schedule, (h, w))
    frames = frame_count(_check_name(perturbation), schedule)
    out = np.empty((n, frames, h, w, 3), np.uint8)
    step = batch_size(h, w, frames)
    with torch.inference_mode():
        for s in range(0, n, step):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + step])).permute(0, 3, 1, 2)
            y = perturb(x.to(device), perturbation, seed, schedule,
                        indices=range(start + s, start + s + len(x)))
            out[s:s + step] = y.permute(0, 1, 3, 4, 2).cpu().numpy()
    return out
