"""Pixel-adaptive smoothing before subsampling, PASA (Zou, Xiao, Yu and Lee, BMVC 2020).

Anti-aliasing with a low-pass filter that is predicted per location and channel group instead
of fixed (MaxBlurPool's binomial filter): a k x k convolution (C -> G k^2, no bias), BatchNorm
and a softmax over each group's k^2 taps give, at every pixel, G normalised k x k filters;
the channels of group g are filtered with filter g (reflect padding), then every other row and
column is kept. As for MaxBlurPool, the layer replacing a max pool takes a 2x2 max at stride 1
first (``max_first``, default true); without it the layer replaces a bare subsampling.

The paper normalises each predicted filter (softmax over its own k^2 taps), so a constant map
stays constant; the authors' public code applies one softmax over all G k^2 outputs, which does
not. Channels are split into G contiguous groups (the first C mod G groups one channel larger
when G does not divide C, where the public code refuses).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import crop_even

ZOU_2020 = Paper("X. Zou, F. Xiao, Z. Yu, Y. J. Lee", "Delving Deeper into Anti-aliasing in ConvNets",
                 "BMVC", 2020, "https://arxiv.org/abs/2008.09604")


def pad_reflect(x: Tensor, pad: int) -> Tensor:
    """Reflect-pad both spatial axes by ``pad``; replicate along an axis too short to reflect."""
    if pad == 0:
        return x
    for dim in (-2, -1):
        mode = "reflect" if pad < x.shape[dim] else "replicate"
        x = F.pad(x, (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad), mode=mode)
    return x


def group_of_channels(channels: int, groups: int) -> Tensor:
    """Group index of each channel: contiguous groups of (nearly) equal size."""
    return torch.arange(channels) * groups // channels


class PASA(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, groups: int = 2, max_first: bool = True):
        super().__init__()
        if kernel_size not in (3, 5, 7):
            raise ValueError(f"kernel_size must be 3, 5 or 7, got {kernel_size}")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.channels, self.kernel_size, self.groups, self.max_first = channels, kernel_size, groups, max_first
        self.predict = nn.Conv2d(channels, groups * kernel_size ** 2, kernel_size, bias=False)
        nn.init.kaiming_normal_(self.predict.weight, mode="fan_out", nonlinearity="relu")
        self.norm = nn.BatchNorm2d(groups * kernel_size ** 2)
        self.register_buffer("group_index", group_of_channels(channels, groups), persistent=False)

    def filters(self, padded: Tensor) -> Tensor:
        """(N, G, k^2, H, W): each group's filter at each pixel, summing to 1 over its taps."""
        n, _, hp, wp = padded.shape
        k = self.kernel_size
        logits = self.norm(self.predict(padded))
        return torch.softmax(logits.reshape(n, self.groups, k * k, hp - k + 1, wp - k + 1), dim=2)

    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        if self.max_first:
            x = F.max_pool2d(x, 2, 1)           # H - 1 rows: every other one is H // 2 of them
        n, c, h, w = x.shape
        k = self.kernel_size
        padded = pad_reflect(x, k // 2)
        weights = self.filters(padded)[:, self.group_index]           # (N, C, k^2, H, W)
        taps = F.unfold(padded, k).reshape(n, c, k * k, h, w)
        y = (weights.to(taps.dtype) * taps).sum(2)
        return y[..., ::2, ::2]

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
                f"max_first={self.max_first}")


@register_pool(
    "pasa",
    display_name="PASA (pixel-adaptive smoothing)",
    paper=ZOU_2020,
    constant_gain=1.0,
    notes="2x2 max at stride 1 (max_first=true), then per pixel and channel group (groups=2) a "
          "k x k filter (kernel_size=3) predicted by conv(C -> G k^2, no bias) -> BatchNorm -> "
          "softmax over each group's taps, applied with reflect padding, then every other "
          "row/column; C G k^4 + 2 G k^2 parameters",
)
def pasa_pool(channels: int, kernel_size: int = 3, groups: int = 2, max_first: bool = True) -> PASA:
    return PASA(channels, kernel_size=kernel_size, groups=groups, max_first=max_first)
