"""Weather corruptions (torch engine): snow, frost and fog. Spatter has no torch version (its
water branch needs OpenCV's Canny edges, distance transform and histogram equalisation): the
engine leaves it to the reference.

Each random corruption is a draw (``draw_*``: the random state, from ``rng.py``) and a
deterministic application; the tests feed the reference's own draws to the application to
check it per pixel. Inputs/outputs float (N, 3, H, W) in 0..255.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .. import corruption_reference as reference
from ..corruption_params import VARIANTS
from . import ops, rng


def gray(x):
    # cv2.COLOR_RGB2GRAY's weights
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def draw_snow(ctx, c):
    layer = rng.normal(ctx.keys, (1, ctx.h, ctx.w), 30, loc=c[0], scale=c[1], dtype=ctx.dtype)
    return {"layer": layer, "angle": rng.uniform(ctx.keys, (), 31, -135.0, -45.0, torch.float64)}


def snow(x, c, ctx):
    d = ctx.draw("snow", draw_snow, c)
    h, w = ctx.h, ctx.w
    y = x / 255.
    trim = VARIANTS["zoom_trim"][ctx.params]
    if trim == "topleft":  # blurred whole, cropped after (as imagecorruptions)
        keep = (ops.zoom_size(h, c[2]), ops.zoom_size(w, c[2]))
        layer = ops.clipped_zoom(d["layer"], c[2], trim, keep)
    else:
        layer = ops.clipped_zoom(d["layer"], c[2], trim)
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
    if VARIANTS["snow_quantise_first"][ctx.params]:
        layer = torch.floor(layer * 255) / 255.
    layer = ops.motion_blur(layer, c[4], c[5], d["angle"])
    layer = (torch.round(layer * 255) / 255.)[..., :h, :w]
    y = c[6] * y + (1 - c[6]) * torch.maximum(y, gray(y) * 1.5 + 0.5)
    return torch.clamp(y + layer + torch.flip(layer, (-2, -1)), 0, 1) * 255


@lru_cache(maxsize=64)
def _frost_sources(params: str, h: int, w: int) -> tuple[torch.Tensor, ...]:
    # the photographs shipped with imagecorruptions, resized for this image size as the
    # reference does (once per size), RGB float (3, H', W')
    count = int(VARIANTS["frost_files"][params])
    return tuple(torch.from_numpy(reference.frost_source(params, h, w, i)[..., ::-1].copy())
                 .permute(2, 0, 1).float() for i in range(count))


def draw_frost(ctx, c):
    sources = _frost_sources(ctx.params, ctx.h, ctx.w)
    index = rng.randint(ctx.keys, (), 40, len(sources))
    rows = torch.tensor([s.shape[1] - ctx.h for s in sources], device=ctx.keys.device)[index]
    cols = torch.tensor([s.shape[2] - ctx.w for s in sources], device=ctx.keys.device)[index]
    return {"index": index, "x0": rng.randint(ctx.keys, (), 41, rows),
            "y0": rng.randint(ctx.keys, (), 42, cols)}


def frost(x, c, ctx):
    d = ctx.draw("frost", draw_frost, c)
    sources = _frost_sources(ctx.params, ctx.h, ctx.w)
    h, w = ctx.h, ctx.w
    crops = [sources[int(i)][:, int(r):int(r) + h, int(q):int(q) + w]
             for i, r, q in zip(d["index"].tolist(), d["x0"].tolist(), d["y0"].tolist())]
    layer = torch.stack(crops).to(device=x.device, dtype=x.dtype)
    return torch.clamp(c[0] * x + c[1] * layer, 0, 255)


def plasma_fractal(ctx, mapsize: int, decay: float, stream: int = 50) -> torch.Tensor:
    """The reference's diamond-square height map, (N, mapsize, mapsize) in [0, 1]."""
    n = len(ctx.keys)
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float32, device=ctx.keys.device)
    step, wibble, draw = mapsize, 100.0, 0

    def wibbled(a):
        nonlocal draw
        draw += 1
        u = rng.uniform(ctx.keys, a.shape[1:], stream + draw, -wibble, wibble, torch.float64)
        return (a / 4 + wibble * u).to(m.dtype)

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, half::step, half::step] = wibbled(sq)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2))
        m[:, half::step, 0::step] = wibbled(dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1))
        step //= 2
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def draw_fog(ctx, c):
    size = 1 << (max(ctx.h, ctx.w) - 1).bit_length()
    return {"fractal": plasma_fractal(ctx, size, c[1])}


def fog(x, c, ctx):
    fractal = ctx.draw("fog", draw_fog, c)["fractal"][:, None, :ctx.h, :ctx.w]
    y = x / 255.
    peak = y.amax((1, 2, 3), keepdim=True)
    y = y + c[0] * fractal.to(y.dtype)
    return torch.clamp(y * peak / (peak + c[0]), 0, 1) * 255
