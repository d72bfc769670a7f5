"""Learned-norm Lp pooling (Gulcehre, Cho, Pascanu and Bengio, ECML PKDD 2014) as a poolbench plugin.

Each output is the normalised Lp norm of its 2x2 window, (mean_R |x|^p)^(1/p), with one learned
order per channel, p = 1 + softplus(rho) >= 1: p = 1 is the mean of |x|, p -> infinity the
largest |x|, so the layer learns where between average and max pooling each channel sits.

>>> import torch
>>> pool = LearnedNormPool(1, p_init=2.0)
>>> pool(torch.tensor([[[[3.0, -4.0], [0.0, 0.0]]]])).item()   # sqrt((9 + 16) / 4)
2.5
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from poolbench import Paper, register_pool
from poolbench.pools.base import window_values


def lp_window_norm(x: Tensor, p: Tensor) -> Tensor:
    """(mean over each 2x2 window of |x|^p)^(1/p); ``p`` broadcasts to (N, C, 1, 1)."""
    win = window_values(x).abs()
    # divide by the window's largest |x| first: (|x|/m)^p <= 1 cannot overflow for any p
    peak = win.amax(dim=-1, keepdim=True).detach()
    live = peak > 0
    ratio = win / torch.where(live, peak, torch.ones_like(peak))
    mean = ratio.pow(p.unsqueeze(-1)).mean(dim=-1, keepdim=True)
    # an all-zero window has norm 0; pow(0, 1/p) would give an infinite gradient, so it is kept out
    safe = torch.where(live, mean, torch.ones_like(mean))
    out = torch.where(live, peak * safe.pow(1 / p.unsqueeze(-1)), torch.zeros_like(peak))
    return out.squeeze(-1)


class LearnedNormPool(nn.Module):
    """Lp pooling with a learned order per channel, p = 1 + softplus(rho)."""

    def __init__(self, channels: int, p_init: float = 2.0):
        super().__init__()
        if p_init <= 1.0:
            raise ValueError(f"p_init must be > 1 (p = 1 + softplus(rho)), got {p_init}")
        # rho = softplus^-1(p_init - 1), so the layer starts at p_init
        rho = math.log(math.expm1(p_init - 1.0))
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), rho))

    @property
    def p(self) -> Tensor:
        return 1.0 + F.softplus(self.rho)

    def forward(self, x: Tensor) -> Tensor:
        return lp_window_norm(x, self.p.to(x.dtype))


@register_pool(
    "lppool_learned",
    display_name="Learned-norm Lp pooling",
    paper=Paper(
        authors="C. Gulcehre, K. Cho, R. Pascanu, Y. Bengio",
        title="Learned-Norm Pooling for Deep Feedforward and Recurrent Neural Networks",
        venue="ECML PKDD", year=2014, url="https://arxiv.org/abs/1311.1780",
    ),
    licence="MIT",
    notes="(mean_R |x|^p)^(1/p) over each 2x2 window, p = 1 + softplus(rho) learned per channel "
          "(C parameters), computed relative to the window's largest |x|; a constant c becomes |c|",
)
def lppool_learned(channels: int, p_init: float = 2.0) -> LearnedNormPool:
    return LearnedNormPool(channels, p_init=p_init)
