"""Power-average (Lp) pooling with a fixed order p: torch's ``LPPool2d(p, 2, 2)``,
``y = (sum over each 2x2 window of x^p)^(1/p)``.

The sum, not the mean: p = 1 is sum pooling (4 x average), p -> infinity max pooling, p = 2 the
window's l2 norm. This is the fixed-norm relative of the example plugin ``lppool_learned``
(Gulcehre et al. 2014), which learns p per channel and normalises by the window size.

Where it departs from torch's module, and why:

- an all-zero window (common after a ReLU) gives 0 with gradient 0, guarded explicitly rather
  than left to the derivative of pow(s, 1/p) at s = 0, which is infinite;
- a window whose sum of x^p is negative (odd integer p) gives the real root sign(s) |s|^(1/p),
  where torch returns NaN. Wherever torch's output is finite, this one is the same.

>>> import torch
>>> lp_pool(torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]]), 2.0)   # sqrt(9 + 16)
tensor([[[[5.]]]])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import crop_even

SERMANET_2012 = Paper("P. Sermanet, S. Chintala, Y. LeCun",
                      "Convolutional Neural Networks Applied to House Numbers Digit Classification",
                      "ICPR", 2012, "https://arxiv.org/abs/1204.3968")


def lp_pool(x: Tensor, p: float) -> Tensor:
    """(sum over each 2x2 window of x^p)^(1/p), as torch's lp_pool2d, finite where it is not."""
    s = F.avg_pool2d(crop_even(x).pow(p), 2, 2) * 4
    live = s != 0
    safe = torch.where(live, s.abs(), torch.ones_like(s))
    return torch.where(live, torch.sign(s) * safe.pow(1.0 / p), torch.zeros_like(s))


class LPPool(nn.Module):
    def __init__(self, channels: int, p: float = 2.0):
        super().__init__()
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return lp_pool(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@register_pool(
    "lppool",
    display_name="LPPool (fixed p)",
    paper=SERMANET_2012,
    notes="torch's LPPool2d(p, 2, 2): (sum_R x^p)^(1/p), p fixed (default 2: the window's l2 "
          "norm; 1: sum pooling); an all-zero window gives 0 with zero gradient (guarded), a "
          "negative sum (odd p) its real root (torch: NaN). The learned-p, window-normalised "
          "variant is the example plugin lppool_learned",
)
def lppool(channels: int, p: float = 2.0) -> LPPool:
    return LPPool(channels, p=p)
