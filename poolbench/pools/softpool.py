"""SoftPool (Stergiou, Poppe and Kalliatakis, ICCV 2021): the softmax-weighted sum of each
2x2 window, sum_R softmax_R(x) * x.

>>> import torch
>>> softpool(torch.tensor([[[[0.0, 0.0], [0.0, 1000.0]]]]))
tensor([[[[1000.]]]])
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import window_values

STERGIOU_2021 = Paper("A. Stergiou, R. Poppe, G. Kalliatakis",
                      "Refining activation downsampling with SoftPool", "ICCV", 2021,
                      "https://arxiv.org/abs/2101.00440")


def softpool(x: Tensor) -> Tensor:
    """sum over each 2x2 window of softmax(x) * x; (N, C, H, W) -> (N, C, H//2, W//2).

    The softmax runs over the window alone (the public CPU fallback normalises over channels
    and exponentiates raw activations, which overflows above ~88 in float32); torch.softmax
    subtracts the window maximum first, so any finite input gives a finite output.
    """
    win = window_values(x)
    return (torch.softmax(win, dim=-1) * win).sum(-1)


class SoftPool2d(nn.Module):
    """Module form of :func:`softpool`; no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return softpool(x)


@register_pool(
    "softpool",
    display_name="SoftPool",
    paper=STERGIOU_2021,
    constant_gain=1.0,
    convex=True,
    notes="softmax-weighted window sum over each 2x2 window, numerically stable (max-subtraction "
          "inside the softmax); was the example plugin before it became a built-in",
)
def softpool_factory(channels: int) -> SoftPool2d:
    return SoftPool2d()
