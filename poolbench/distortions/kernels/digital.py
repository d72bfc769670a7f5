"""Digital corruptions (torch engine): brightness, contrast, saturate, JPEG, pixelate, elastic.

Brightness and saturate follow skimage's HSV conversion; pixelate builds Pillow's BOX and
NEAREST resampling weights (PIL rounds to 8 bits between its horizontal and vertical passes,
and so does this); JPEG goes through ``torchvision.io`` (libjpeg-turbo, like Pillow, quality
and 4:2:0 chroma subsampling as Pillow's defaults); elastic reproduces the reference's
displacement (random fields from ``rng.py``) and its bilinear sampling, with OpenCV's 1/32-pixel
coordinate grid for the small sets' affine step. Inputs/outputs float (N, 3, H, W) in 0..255.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch

from ..corruption_params import VARIANTS
from . import ops, rng


def contrast(x, c, ctx):
    y = x / 255.
    means = y.mean((2, 3), keepdim=True)
    return torch.clamp((y - means) * c + means, 0, 1) * 255


def brightness(x, c, ctx):
    hsv = ops.rgb2hsv(x / 255.)
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], torch.clamp(hsv[:, 2] + c, 0, 1)], 1)
    return torch.clamp(ops.hsv2rgb(hsv), 0, 1) * 255


def saturate(x, c, ctx):
    hsv = ops.rgb2hsv(x / 255.)
    hsv = torch.stack([hsv[:, 0], torch.clamp(hsv[:, 1] * c[0] + c[1], 0, 1), hsv[:, 2]], 1)
    return torch.clamp(ops.hsv2rgb(hsv), 0, 1) * 255


def jpeg_compression(x, c, ctx):
    # imported on first use: torchvision (and the torch._dynamo it loads) would add about 2.5 s
    # to every command's start, worker processes included
    import torchvision.io as tvio  # noqa: PLC0415

    images = x.round().clamp(0, 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():  # torchvision 0.29 announces a move to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        out = [tvio.decode_jpeg(tvio.encode_jpeg(im, quality=int(c))) for im in images]
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


@lru_cache(maxsize=64)
def _pil_weights(n_in: int, n_out: int, kind: str) -> torch.Tensor:
    """(n_out, n_in) resampling matrix of Pillow's BOX filter (precompute_coeffs) or NEAREST."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = n_in / n_out
    if kind == "nearest":
        for j in range(n_out):
            m[j, min(int((j + 0.5) * scale), n_in - 1)] = 1.0
        return m
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - centre + 0.5) / filterscale
            m[j, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        total = m[j].sum()
        if total:
            m[j] /= total
    return m


def _resize(x, h_out, w_out, kind):
    # Pillow: horizontal pass, 8-bit rounding, vertical pass, 8-bit rounding
    h, w = x.shape[-2:]
    mw = _pil_weights(w, w_out, kind).to(device=x.device, dtype=x.dtype)
    mh = _pil_weights(h, h_out, kind).to(device=x.device, dtype=x.dtype)
    y = torch.round(x @ mw.T) if w_out != w else x
    return torch.round(mh @ y) if h_out != h else y


def pixelate(x, c, ctx):
    h, w = ctx.h, ctx.w
    small = _resize(x, int(h * c), int(w * c), "box")
    return _resize(small, h, w, VARIANTS["pixelate_up"][ctx.params]).clamp(0, 255)


def draw_elastic_transform(ctx, c):
    h, w, keys = ctx.h, ctx.w, ctx.keys
    if VARIANTS["elastic"][ctx.params] == "plain":
        dmax = h * c[2]
        u = rng.uniform(keys, (2, h, w), 60, -dmax, dmax, torch.float64)
        f = ops.gaussian(u, (h * c[1], w * c[1]), "reflect", truncate=3) * c[0]
        return {"matrix": None, "dx": f[:, 0].float(), "dy": f[:, 1].float()}
    size = min(h, w)
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64)
    half = size // 3
    pts1 = torch.stack([centre + half, torch.tensor([centre[0] + half, centre[1] - half]),
                        centre - half])
    pts2 = pts1 + rng.uniform(keys, (3, 2), 61, -c[2] * size, c[2] * size, torch.float64).cpu()
    u = rng.uniform(keys, (2, h, w), 62, -1.0, 1.0, torch.float64)
    f = ops.gaussian(u, c[1] * size, "reflect", truncate=3) * (c[0] * size)
    return {"matrix": affine_from_points(pts1, pts2), "dx": f[:, 0].float(), "dy": f[:, 1].float()}


def affine_from_points(pts1: torch.Tensor, pts2: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) maps taking the three (x, y) points pts1 (3, 2) to pts2 (N, 3, 2)."""
    a = torch.cat([pts1, torch.ones(3, 1, dtype=pts1.dtype)], 1)  # (3, 3)
    sol = torch.linalg.solve(a[None], pts2)  # (N, 3, 2): a @ sol = pts2
    return sol.transpose(1, 2)


def elastic_transform(x, c, ctx):
    d = ctx.draw("elastic_transform", draw_elastic_transform, c)
    h, w = ctx.h, ctx.w
    y = (x / 255.).to(torch.float32)
    yy, xx = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float64),
                            torch.arange(w, device=x.device, dtype=torch.float64), indexing="ij")
    if d["matrix"] is not None:
        # cv2.warpAffine: the inverse map sampled on OpenCV's 1/32-pixel grid, reflect-101
        m = d["matrix"].to(torch.float64)
        full = torch.cat([m, torch.tensor([[[0, 0, 1.0]]], dtype=m.dtype).expand(len(m), 1, 3)], 1)
        inv = torch.linalg.inv(full)[:, :2].to(x.device)
        sx = inv[:, 0, 0, None, None] * xx + inv[:, 0, 1, None, None] * yy + inv[:, 0, 2, None, None]
        sy = inv[:, 1, 0, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 1, 2, None, None]
        sx, sy = torch.floor(sx * 32 + 0.5) / 32, torch.floor(sy * 32 + 0.5) / 32
        y = ops.sample_bilinear(y, sy, sx, "reflect101")
    dx, dy = d["dx"].to(x.device, torch.float64), d["dy"].to(x.device, torch.float64)
    out = ops.sample_bilinear(y, yy + dy, xx + dx, "reflect")
    return torch.clamp(out, 0, 1) * 255
