"""Detail-preserving pooling, lite variant (Saeedan et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, check_choice, register_pool
from .base import crop_even


def _spread(t: Tensor) -> Tensor:
    """Nearest upsampling: each per-window value back to the 2x2 positions of its window."""
    return F.interpolate(t, scale_factor=2, mode="nearest")


def _window_mean(x: Tensor) -> Tensor:
    return _spread(F.avg_pool2d(x, 2, 2))


class DetailPreservingPool(nn.Module):
    """Weighted window mean; weights grow with the deviation from the window mean.

    ``t_lambda`` (detail exponent, lambda = exp(t_lambda)) and ``t_alpha`` (weight floor,
    alpha = exp(t_alpha)) are per channel and must be excluded from weight decay.
    """

    def __init__(self, channels: int, variant: str = "symmetric"):
        super().__init__()
        self.variant = check_choice("variant", variant, ("symmetric", "asymmetric"))
        self.t_lambda = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.t_alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def no_weight_decay(self) -> list[str]:
        return ["t_lambda", "t_alpha"]

    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        diff = x - _window_mean(x)
        if self.variant == "asymmetric":
            diff = F.relu(diff)
        dev = diff * diff + 1e-3
        dev = dev / _window_mean(dev)
        # w = dev^p + alpha, divided by each window's largest dev^p so that large exponents
        # cannot overflow; the output is a ratio and does not change
        p = torch.exp(self.t_lambda) / 2
        log_dev = torch.log(dev)
        top = _spread(F.max_pool2d(log_dev.detach(), 2, 2))
        w = torch.exp(p * (log_dev - top)) + torch.exp(self.t_alpha - p * top)
        return F.avg_pool2d(x * w, 2, 2) / F.avg_pool2d(w, 2, 2)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


@register_pool(
    "dpp",
    display_name="Detail-preserving pooling (lite)",
    paper=Paper("F. Saeedan, N. Weber, M. Goesele, S. Roth", "Detail-Preserving Pooling in Deep Networks",
                "CVPR", 2018,
                "https://openaccess.thecvf.com/content_cvpr_2018/html/"
                "Saeedan_Detail-Preserving_Pooling_in_CVPR_2018_paper.html"),
    constant_gain=1.0,
    convex=True,
    notes="lite DPP (2x2 mean as the smoothed image), variant=symmetric (default) or asymmetric; "
          "per-channel t_lambda, t_alpha (2C parameters), excluded from weight decay",
)
def dpp_pool(channels: int, variant: str = "symmetric") -> DetailPreservingPool:
    return DetailPreservingPool(channels, variant=variant)
