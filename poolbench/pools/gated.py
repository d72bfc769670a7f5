"""Gated max-average pooling (Lee et al. 2016)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_pool
from .mixed import LEE_2016, mix_max_avg


class GatedPool(nn.Module):
    """g * max + (1 - g) * avg, g = sigmoid(<w, window>): an inner product of each 2x2 window
    with a learned 2x2 mask, no bias; one mask shared by all channels unless per_channel."""

    def __init__(self, channels: int, per_channel: bool = False):
        super().__init__()
        self.channels = channels
        self.per_channel = per_channel
        self.mask = nn.Parameter(torch.empty(channels if per_channel else 1, 1, 2, 2))
        bound = 1.0 / math.sqrt(4)  # the default init of a conv with fan-in 4
        nn.init.uniform_(self.mask, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.mask.expand(self.channels, 1, 2, 2)
        return mix_max_avg(x, torch.sigmoid(F.conv2d(x, mask, stride=2, groups=self.channels)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, per_channel={self.per_channel}"


@register_pool(
    "gated",
    display_name="Gated max-average pooling",
    paper=LEE_2016,
    constant_gain=1.0,
    convex=True,
    notes="gate = sigmoid of a 2x2 mask's inner product with each window (no bias), the same mask "
          "for every channel (4 parameters; per_channel=true: 4C)",
)
def gated_pool(channels: int, per_channel: bool = False) -> GatedPool:
    return GatedPool(channels, per_channel=per_channel)
