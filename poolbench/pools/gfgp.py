"""Global-feature-guided local pooling, GFGP (Kobayashi, ICCV 2019): a max-entropy pooling of
each 2x2 window whose temperature comes from the global average of the map.

    y = sum_R x e^(lam x) / sum_R e^(lam x),
    lam = sigmoid(BN(conv1x1_{C/2->C}(ReLU(BN(conv1x1_{C->C/2}(GAP x)))))),  N x C x 1 x 1

lam -> 0 gives the window mean, large lam the window max; the guide network decides per sample
and channel. Parameters: two 1x1 convs with bias and two affine BatchNorms, C^2 + 4.5C for even
C (4,384 at C = 64, as the paper states).

>>> import torch
>>> pool = GFGPPool(4).eval()
>>> pool(torch.randn(2, 4, 8, 8)).shape
torch.Size([2, 4, 4, 4])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..registry import Paper, register_pool
from .base import crop_even, window_values

KOBAYASHI_ICCV_2019 = Paper("T. Kobayashi", "Global Feature Guided Local Pooling", "ICCV", 2019,
                            "https://openaccess.thecvf.com/content_ICCV_2019/html/"
                            "Kobayashi_Global_Feature_Guided_Local_Pooling_ICCV_2019_paper.html")


def max_entropy_pool(x: Tensor, lam: Tensor) -> Tensor:
    """sum_R softmax_R(lam * x) * x over each 2x2 window; ``lam`` broadcasts to (N, C, 1, 1).

    The softmax subtracts each window's maximum of lam * x, so no exponent overflows.
    """
    win = window_values(x)
    weights = torch.softmax(lam.unsqueeze(-1) * win, dim=-1)
    return (weights * win).sum(-1)


class GFGPPool(nn.Module):
    """GFGP: :func:`max_entropy_pool` with lam predicted from the global average pool."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 2)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.reduce_bn = nn.BatchNorm2d(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.expand_bn = nn.BatchNorm2d(channels)

    def temperature(self, x: Tensor) -> Tensor:
        """lam of shape (N, C, 1, 1), in (0, 1)."""
        z = F.relu(self.reduce_bn(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return torch.sigmoid(self.expand_bn(self.expand(z)))

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            raise UsageError(
                "pool 'gfgp' cannot train with batch size 1: its BatchNorm layers act on N x C x 1 x 1 "
                "global features and need at least 2 samples; use a batch size >= 2 or eval mode"
            )
        # the last odd row/column is ignored by the guide too, as MaxPool2d ignores it
        x = crop_even(x)
        return max_entropy_pool(x, self.temperature(x))


@register_pool(
    "gfgp",
    display_name="Global-feature-guided pooling (GFGP)",
    paper=KOBAYASHI_ICCV_2019,
    constant_gain=1.0,
    convex=True,
    notes="max-entropy window pooling sum x e^(lam x) / sum e^(lam x), lam = sigmoid of a "
          "C -> C/2 -> C 1x1-conv/BN guide on the global average (C^2 + 4.5C parameters); "
          "training needs batch size >= 2 (BatchNorm on N x C x 1 x 1)",
)
def gfgp_pool(channels: int) -> GFGPPool:
    return GFGPPool(channels)
