"""MaxBlurPool: max at stride 1, then a binomial low-pass filter at stride 2 (Zhang 2019)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, check_choice, register_pool
from .base import binomial_filter


def _pad_axis(x: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Reflect-pad one spatial axis; replicate where the axis is too short to reflect."""
    if before == 0 and after == 0:
        return x
    mode = "reflect" if max(before, after) < x.shape[dim] else "replicate"
    pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
    return F.pad(x, pad, mode=mode)


class MaxBlurPool(nn.Module):
    def __init__(self, channels: int, filter_size: int = 4):
        super().__init__()
        check_choice("filter_size", filter_size, tuple(range(1, 8)))
        self.channels = channels
        self.filter_size = filter_size
        self.register_buffer("filter", binomial_filter(filter_size)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # max at stride 1 first: blurring after a strided max would not be anti-aliased
        x = F.max_pool2d(x, 2, 1)
        k = self.filter_size
        before, after = (k - 1) // 2, k // 2
        # H-1 rows + k-1 padding, filtered at stride 2, gives H//2 for every H >= 2
        if 0 < after < min(x.shape[-2:]):
            x = F.pad(x, (before, after, before, after), mode="reflect")
        else:
            x = _pad_axis(_pad_axis(x, before, after, -2), before, after, -1)
        return F.conv2d(x, self.filter.to(x.dtype), stride=2, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter_size={self.filter_size}"


@register_pool(
    "blur",
    display_name="MaxBlurPool",
    paper=Paper("R. Zhang", "Making Convolutional Networks Shift-Invariant Again",
                "ICML", 2019, "https://arxiv.org/abs/1904.11486"),
    constant_gain=1.0,
    notes="max 2x2 at stride 1, then a binomial filter (filter_size 1..7) at stride 2 with "
          "reflect padding (replicate on maps too small to reflect); the filter is a buffer",
)
def blur_pool(channels: int, filter_size: int = 4) -> MaxBlurPool:
    return MaxBlurPool(channels, filter_size=filter_size)
