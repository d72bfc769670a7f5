"""Max pooling, with MaxUnpool as its up-pooling partner (SegNet's baseline)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..registry import Paper, check_choice, register_pool
from .base import InvertiblePool, binomial_filter


class MaxPool(InvertiblePool):
    """Max over 2x2 windows at stride 2; ``up`` scatters values back to their argmax positions
    (``up="unpool"``) and optionally blurs the sparse map (``up="unpool_blur"``)."""

    def __init__(self, channels: int, up: str = "unpool", blur_size: int = 3):
        super().__init__()
        self.channels = channels
        self.up_mode = check_choice("up", up, ("unpool", "unpool_blur"))
        if self.up_mode == "unpool_blur":
            self.register_buffer("up_filter", binomial_filter(blur_size)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2, 2)

    def down(self, x: Tensor):
        y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        return y, {"indices": idx, "size": tuple(x.shape[-2:])}

    def up(self, y: Tensor, state) -> Tensor:
        x = F.max_unpool2d(y, state["indices"], 2, 2, output_size=state["size"])
        if self.up_mode == "unpool_blur":
            k = self.up_filter.shape[-1]
            x = F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="replicate")
            x = F.conv2d(x, self.up_filter.to(x.dtype), groups=self.channels)
        return x


@register_pool(
    "max",
    display_name="MaxPool",
    paper=Paper("Y. LeCun, L. Bottou, Y. Bengio, P. Haffner",
                "Gradient-based learning applied to document recognition",
                "Proc. IEEE", 1998, "https://doi.org/10.1109/5.726791"),
    invertible=True,
    constant_gain=1.0,
    convex=True,
    notes="up-pooling: MaxUnpool with indices (up=unpool) or MaxUnpool + binomial blur (up=unpool_blur)",
)
def max_pool(channels: int, up: str = "unpool", blur_size: int = 3) -> MaxPool:
    return MaxPool(channels, up=up, blur_size=blur_size)
