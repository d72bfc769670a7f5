"""Noise corruptions (torch engine): gaussian, shot, impulse and speckle noise.

Same formulas as the reference (``reference.py``); the random numbers come from the engine's
counter-based generator (``rng.py``), so outputs equal the reference in distribution, not per
pixel. Inputs and outputs are float (N, 3, H, W) in 0..255.
"""
from __future__ import annotations

import torch

from . import rng


def gaussian_noise(x, c, ctx):
    z = rng.normal(ctx.keys, x.shape[1:], 1, scale=c, dtype=x.dtype)
    return torch.clamp(x / 255. + z, 0, 1) * 255


def shot_noise(x, c, ctx):
    k = rng.poisson(ctx.keys, x.to(torch.float64) / 255. * c, 2)
    return torch.clamp(k / float(c), 0, 1).to(x.dtype) * 255


def impulse_noise(x, c, ctx):
    # skimage's s&p: each element flips with probability ``amount``; a flipped one is salt
    # (1) or pepper (0) with probability one half
    flipped = rng.uniform(ctx.keys, x.shape[1:], 3) <= c
    salted = rng.uniform(ctx.keys, x.shape[1:], 4) <= 0.5
    y = torch.where(flipped & salted, torch.ones_like(x), x / 255.)
    return torch.where(flipped & ~salted, torch.zeros_like(x), y) * 255


def speckle_noise(x, c, ctx):
    z = rng.normal(ctx.keys, x.shape[1:], 5, scale=c, dtype=x.dtype)
    y = x / 255.
    return torch.clamp(y + y * z, 0, 1) * 255
