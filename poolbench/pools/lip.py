"""Local importance-based pooling, LIP (Gao, Wang and Wu, ICCV 2019): a window mean weighted by
learned importance, sum_R e^(l) x / sum_R e^(l), with the logits l computed from the input.

The paper's simplified logit module is l = 12 * sigmoid(IN(conv3x3(x))) (a C -> C 3x3 conv
without bias, an affine InstanceNorm, a sigmoid scaled to (0, 12)). The conv starts at zero, so
every logit is equal and LIP starts as average pooling. As a drop-in for MaxPool2d(2, 2) the
window is 2x2 at stride 2 (the paper's 3x3 window at stride 2 with padding 1 gives ceil(H/2)).

>>> import torch
>>> x = torch.randn(2, 3, 6, 6)
>>> torch.allclose(LIPPool(3)(x), torch.nn.functional.avg_pool2d(x, 2))   # zero conv: avg
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import crop_even

GAO_2019 = Paper("Z. Gao, L. Wang, G. Wu", "LIP: Local Importance-based Pooling", "ICCV", 2019,
                 "https://arxiv.org/abs/1908.04156")
LOGIT_SCALE = 12.0


def lip_pool(x: Tensor, logits: Tensor) -> Tensor:
    """avgpool(x * e^l) / avgpool(e^l) over 2x2 windows at stride 2, for logits l <= LOGIT_SCALE
    of the shape of ``x`` (both cropped to even size)."""
    x, logits = crop_even(x), crop_even(logits)
    # e^(l - 12) is e^l scaled by a constant that cancels in the ratio; it keeps the weights
    # in (0, 1], so that float16 (largest value 65504 < e^12) cannot overflow
    w = torch.exp(logits - LOGIT_SCALE)
    return F.avg_pool2d(x * w, 2, 2) / F.avg_pool2d(w, 2, 2)


class LIPPool(nn.Module):
    """LIP with the paper's simplified logit module; 9C^2 + 2C parameters."""

    def __init__(self, channels: int):
        super().__init__()
        self.logit = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        nn.init.zeros_(self.logit.weight)

    def logits(self, x: Tensor) -> Tensor:
        return LOGIT_SCALE * torch.sigmoid(self.norm(self.logit(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        return lip_pool(x, self.logits(x))


@register_pool(
    "lip",
    display_name="Local importance-based pooling (LIP)",
    paper=GAO_2019,
    constant_gain=1.0,
    convex=True,
    notes="importance-weighted 2x2 mean, weights e^l with l = 12 sigmoid(IN(conv3x3(x))) (the "
          "paper's simplified logit module, conv zero-initialised: starts as avg); 2x2 stride-2 "
          "window as a MaxPool2d(2, 2) drop-in; 9C^2 + 2C parameters",
)
def lip_factory(channels: int) -> LIPPool:
    return LIPPool(channels)
