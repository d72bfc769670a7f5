"""Non-local self-attentive pooling, NLP (Chen, Datta, Kundu and Beerel, WACV 2023).

The pooling weights of each 2x2 window come from a non-local view of the whole map:

1. patch embedding: a ``patch`` x ``patch`` convolution at stride ``patch`` (C -> d channels,
   d = round(C / (reduction * heads)) * heads, at least ``heads``), BatchNorm, ReLU: one token per
   patch;
2. self-attention: multi-head attention (``heads`` heads) over all tokens, with a fixed 2-D
   sinusoidal position code added to them;
3. restoration: upsampling of the attended tokens to the map's size (bilinear), conv1x1
   (d -> C), BatchNorm, sigmoid: one score s in (0, 1) per pixel and channel;
4. weighted pooling: y = sum_R e^s x / sum_R e^s over each 2x2 window R (a convex combination:
   a constant stays itself).

Steps 1-4 follow the authors' public code (their ``NLP_BASE`` and window-normalised ``Pool2d``),
with four choices of poolbench's, all options: the position code is their fixed sine option
(their default: a learned row/column embedding); ``reduction=4`` (theirs: 1, d = C); a 2x2
patch (theirs: 1 pixel), because attention over every pixel of a 32x32 map costs about 4 s per
training step of batch 32 on this project's CPU (16x fewer attention entries at patch 2); and
bilinear instead of nearest restoration, because with nearest upsampling a 2x2 patch gives the
four pixels of a window one weight, which is average pooling. At ``patch=1`` both restorations
are the identity, and the operator is the authors' up to the position code and the reduction.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import crop_even, window_values

CHEN_2023 = Paper("F. Chen, G. Datta, S. Kundu, P. A. Beerel", "Self-Attentive Pooling for Efficient "
                  "Deep Learning", "WACV", 2023, "https://arxiv.org/abs/2209.07659")


def sinusoid_2d(h: int, w: int, dim: int, device, dtype) -> Tensor:
    """(h * w, dim) fixed 2-D position code: sin/cos of the row in the first half of the channels,
    of the column in the second, at geometric frequencies 10000^(-i/q), q = dim // 4."""
    quarter = max(dim // 4, 1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    rows = torch.arange(h, device=device, dtype=torch.float64)[:, None] * freqs
    cols = torch.arange(w, device=device, dtype=torch.float64)[:, None] * freqs
    row_code = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(h, w, -1)
    col_code = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(h, w, -1)
    code = torch.cat([row_code, col_code], dim=-1).reshape(h * w, -1)
    return F.pad(code, (0, dim - code.shape[1]))[:, :dim].to(dtype)


class NonLocalPool(nn.Module):
    def __init__(self, channels: int, patch: int = 2, reduction: int = 4, heads: int = 2):
        super().__init__()
        if patch < 1 or reduction < 1 or heads < 1:
            raise ValueError(f"patch, reduction and heads must be >= 1, got {patch}, {reduction}, {heads}")
        dim = max(round(channels / (reduction * heads)), 1) * heads
        self.channels, self.patch, self.reduction, self.heads, self.dim = channels, patch, reduction, heads, dim
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.embed_norm = nn.BatchNorm2d(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.restore = nn.Conv2d(dim, channels, 1)
        self.restore_norm = nn.BatchNorm2d(channels)

    def scores(self, x: Tensor) -> Tensor:
        """(N, C, H, W) scores in (0, 1) for an even-sized map."""
        h, w = x.shape[-2:]
        p = self.patch
        # a side that is not a multiple of the patch: replicate-pad it to one (tokens cover all)
        pad_h, pad_w = (-h) % p, (-w) % p
        src = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        tokens = torch.relu(self.embed_norm(self.embed(src)))
        n, d, th, tw = tokens.shape
        seq = tokens.flatten(2).transpose(1, 2) + sinusoid_2d(th, tw, d, x.device, tokens.dtype)
        attended = self.attention(seq, seq, seq, need_weights=False)[0]
        grid = attended.transpose(1, 2).reshape(n, d, th, tw)
        grid = F.interpolate(grid, size=(th * p, tw * p), mode="bilinear", align_corners=False)[..., :h, :w]
        return torch.sigmoid(self.restore_norm(self.restore(grid)))

    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        # e^s / sum e^s over the window: the authors' avg(x e^s) / avg(e^s), as a softmax
        weights = torch.softmax(window_values(self.scores(x)), dim=-1)
        return (weights.to(x.dtype) * window_values(x)).sum(-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, patch={self.patch}, dim={self.dim}, heads={self.heads}"


@register_pool(
    "nlp",
    display_name="Non-local self-attentive pooling",
    paper=CHEN_2023,
    constant_gain=1.0,
    convex=True,
    notes="patch embedding (conv patch x patch at stride patch, C -> d = C/reduction, BN, ReLU), "
          "multi-head self-attention with a sinusoidal 2-D position code, bilinear restoration + "
          "conv1x1 -> BN -> sigmoid to scores s, then sum_R e^s x / sum_R e^s over each 2x2 window",
)
def nlp_pool(channels: int, patch: int = 2, reduction: int = 4, heads: int = 2) -> NonLocalPool:
    return NonLocalPool(channels, patch=patch, reduction=reduction, heads=heads)
