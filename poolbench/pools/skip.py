"""Strided 3x3 convolution in place of pooling (the all-convolutional net)."""
from __future__ import annotations

from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import crop_even


class SkipPool(nn.Module):
    """3x3 convolution, stride 2, padding 1, C -> C with bias, on the input cropped to even size."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        # without the crop an odd size would give ceil(H/2), unlike MaxPool2d(2, 2)
        return self.conv(crop_even(x))


@register_pool(
    "skip",
    display_name="Strided convolution",
    paper=Paper("J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller",
                "Striving for Simplicity: The All Convolutional Net",
                "ICLR (workshop)", 2015, "https://arxiv.org/abs/1412.6806"),
    notes="learned 3x3 stride-2 convolution replacing the pooling layer; 9C^2 + C parameters",
)
def skip_pool(channels: int) -> SkipPool:
    return SkipPool(channels)
