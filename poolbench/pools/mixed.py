"""Deterministic mixed max-average pooling (Lee et al. 2016)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool

LEE_2016 = Paper("C.-Y. Lee, P. W. Gallagher, Z. Tu",
                 "Generalizing Pooling Functions in Convolutional Neural Networks: Mixed, Gated, and Tree",
                 "AISTATS", 2016, "https://proceedings.mlr.press/v51/lee16a.html")


def mix_max_avg(x: Tensor, a: Tensor) -> Tensor:
    """a * max + (1 - a) * avg over 2x2 windows at stride 2, for a mixing weight ``a`` in [0, 1]
    that broadcasts to the pooled map."""
    mx = F.max_pool2d(x, 2, 2)
    avg = F.avg_pool2d(x, 2, 2)
    # avg + a*(max - avg) keeps constants exact and stays within [avg, max]
    return avg + a * (mx - avg)


class MixedPool(nn.Module):
    """a * max + (1 - a) * avg with a = sigmoid(theta), one theta per layer or per channel."""

    def __init__(self, channels: int, per_channel: bool = False):
        super().__init__()
        self.per_channel = per_channel
        # theta = 0 starts as an equal mix
        self.theta = nn.Parameter(torch.zeros(1, channels if per_channel else 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return mix_max_avg(x, torch.sigmoid(self.theta))

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}"


@register_pool(
    "mixed",
    display_name="Mixed max-average pooling",
    paper=LEE_2016,
    constant_gain=1.0,
    convex=True,
    notes="deterministic learned mix a*max + (1-a)*avg, a = sigmoid(theta); one theta per layer "
          "(per_channel=true: one per channel). Not Yu et al. 2014's random choice of max or avg",
)
def mixed_pool(channels: int, per_channel: bool = False) -> MixedPool:
    return MixedPool(channels, per_channel=per_channel)
