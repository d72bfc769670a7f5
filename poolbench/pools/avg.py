"""Average pooling."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool


class AvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2, 2)


@register_pool(
    "avg",
    display_name="AveragePool",
    paper=Paper("Y. LeCun, B. Boser, J. S. Denker, D. Henderson, R. E. Howard, W. Hubbard, L. D. Jackel",
                "Backpropagation applied to handwritten zip code recognition",
                "Neural Computation", 1989, "https://doi.org/10.1162/neco.1989.1.4.541"),
    constant_gain=1.0,
    convex=True,
)
def avg_pool(channels: int) -> AvgPool:
    return AvgPool()
