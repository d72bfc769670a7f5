"""S3Pool (Zhai et al. 2017): max at stride 1, then stochastic spatial sampling of rows and
columns in training, a fixed 2x downsample in eval."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import OwnRandomness, crop_even


def sample_positions(length: int, grid_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Sorted positions to keep along an axis of ``length`` = H - 1 stride-1 max outputs.

    The H // 2 outputs are split into grids of ``grid_size // 2`` kept rows, each drawn without
    replacement from the grid's ``grid_size`` positions (the last grid is one position short
    and may keep fewer rows). ``grid_size`` 0 means half the axis (2 grids), the authors'
    CIFAR setting; an odd grid size is rounded up to even.
    """
    out = (length + 1) // 2
    keep_per_grid = (out + 1) // 2 if grid_size <= 0 else max(1, (grid_size + 1) // 2)
    picks = []
    start = 0
    while start < out:
        keep = min(keep_per_grid, out - start)
        span = min(2 * keep, length - 2 * start)
        picks.append(2 * start + torch.randperm(span, generator=generator)[:keep].sort().values)
        start += keep
    return torch.cat(picks)


class S3Pool(OwnRandomness, nn.Module):
    def __init__(self, channels: int, grid_size: int = 0):
        super().__init__()
        if grid_size < 0:
            raise ValueError(f"grid_size must be >= 0 (0: half the map), got {grid_size}")
        self.grid_size = grid_size

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(crop_even(x), 2, 1)
        if not self.training:
            return F.avg_pool2d(x, 2, 2, padding=1, count_include_pad=False)
        # one draw per forward pass, shared by the batch and the channels
        rows = sample_positions(x.shape[-2], self.grid_size, self.generator("cpu")).to(x.device)
        cols = sample_positions(x.shape[-1], self.grid_size, self.generator("cpu")).to(x.device)
        return x.index_select(-2, rows).index_select(-1, cols)

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}"


@register_pool(
    "s3",
    display_name="S3Pool",
    paper=Paper("S. Zhai, H. Wu, A. Kumar, Y. Cheng, Y. Lu, Z. Zhang, R. Feris",
                "S3Pool: Pooling with Stochastic Spatial Sampling", "CVPR", 2017,
                "https://openaccess.thecvf.com/content_cvpr_2017/html/"
                "Zhai_S3Pool_Pooling_With_CVPR_2017_paper.html"),
    stochastic=True,
    constant_gain=1.0,
    notes="max 2x2 at stride 1 on the even-cropped map; training keeps grid_size/2 random rows and "
          "columns per grid (grid_size=0: half the map, 2 grids per axis), one draw per forward "
          "shared by batch and channels; eval: avg_pool2d(2, 2, padding=1, count_include_pad=False)",
)
def s3_pool(channels: int, grid_size: int = 0) -> S3Pool:
    return S3Pool(channels, grid_size=grid_size)
