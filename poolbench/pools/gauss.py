"""Gaussian-based pooling (Kobayashi 2019): window mean plus eta times window deviation, with
eta predicted from the global average and sampled in training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..registry import Paper, register_pool
from .base import OwnRandomness, crop_even


class GaussPool(OwnRandomness, nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 2)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.reduce_bn = nn.BatchNorm2d(hidden)
        self.mean = nn.Conv2d(hidden, channels, 1)
        self.mean_bn = nn.BatchNorm2d(channels)
        self.scale = nn.Conv2d(hidden, channels, 1)
        self.scale_bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            raise UsageError(
                "pool 'gauss' cannot train with batch size 1: its BatchNorm layers act on N x C x 1 x 1 "
                "global features and need at least 2 samples; use a batch size >= 2 or eval mode"
            )
        x = crop_even(x)
        mu = F.avg_pool2d(x, 2, 2)
        sigma = torch.sqrt(torch.clamp(F.avg_pool2d(x * x, 2, 2) - mu * mu, min=1e-6))
        z = F.relu(self.reduce_bn(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        m = self.mean_bn(self.mean(z))
        if self.training:
            s = torch.sigmoid(self.scale_bn(self.scale(z)))
            noise = torch.randn(m.shape, generator=self.generator(m.device), dtype=m.dtype, device=m.device)
            eta = F.softplus(m + s * noise)
        else:
            eta = F.softplus(m)
        return mu + eta * sigma


@register_pool(
    "gauss",
    display_name="Gaussian-based pooling",
    paper=Paper("T. Kobayashi", "Gaussian-Based Pooling for Convolutional Neural Networks",
                "NeurIPS", 2019,
                "https://papers.nips.cc/paper/2019/hash/cca289d2a4acd14c1cd9a84ffb41dd29-Abstract.html"),
    stochastic=True,
    notes="mu + eta*sigma of each window; eta = softplus(M + S*eps) from the global average "
          "(eval: softplus(M)); can exceed the window max; training needs batch size >= 2",
)
def gauss_pool(channels: int) -> GaussPool:
    return GaussPool(channels)
