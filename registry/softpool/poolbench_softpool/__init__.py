"""SoftPool (Stergiou, Poppe and Kalliatakis, ICCV 2021) as a poolbench plugin.

Each output is the softmax-weighted sum of its 2x2 window: sum_i e^{x_i} x_i / sum_i e^{x_i}.
The window maximum is subtracted before exponentiating, so large activations do not overflow
(the public CPU fallback of the original code returns inf/nan for inputs above ~88 in float32).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from poolbench import Paper, register_pool
from poolbench.pools.base import crop_even


class SoftPool2d(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        n, c, h, w = x.shape
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2)
        peak = windows.amax(dim=(3, 5), keepdim=True).detach()
        weights = torch.exp(windows - peak)
        return (weights * windows).sum(dim=(3, 5)) / weights.sum(dim=(3, 5))


@register_pool(
    "softpool",
    display_name="SoftPool",
    paper=Paper(
        authors="A. Stergiou, R. Poppe, G. Kalliatakis",
        title="Refining activation downsampling with SoftPool",
        venue="ICCV", year=2021, url="https://arxiv.org/abs/2101.00440",
    ),
    constant_gain=1.0,
    convex=True,
    notes="softmax-weighted window sum, computed with max-subtraction",
)
def softpool(channels: int) -> SoftPool2d:
    return SoftPool2d()
