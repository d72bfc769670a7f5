"""Haar wavelet downsampling, HWD (Xu, Zhang, Shen, Chen and Zhu, Pattern Recognition 2023).

One level of the orthonormal 2-D Haar transform splits the map into four half-size sub-bands,
which are concatenated along channels (4C) and mixed back to C channels by conv1x1-BN-ReLU.
With a window [[a, b], [c, d]]:

    LL = (a + b + c + d) / 2     LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2     HH = (a - b - c + d) / 2

so no pixel is discarded before the learned mixing (the transform is invertible). The signs of
the detail bands are a convention the 1x1 convolution absorbs. Odd sizes drop their last
row/column, as max pooling does (the authors' code zero-pads to the next even size instead).

>>> import torch
>>> haar_bands(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])).flatten().tolist()
[5.0, -2.0, -1.0, 0.0]
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import window_values

XU_2023 = Paper("G. Xu, W. Liao, X. Zhang, C. Li, X. He, X. Wu",
                "Haar wavelet downsampling: A simple but effective downsampling module for "
                "semantic segmentation", "Pattern Recognition", 2023,
                "https://doi.org/10.1016/j.patcog.2023.109819")

# rows: LL, LH, HL, HH; columns: the window's a, b, c, d (window_values order)
HAAR = torch.tensor([[1.0, 1.0, 1.0, 1.0],
                     [1.0, 1.0, -1.0, -1.0],
                     [1.0, -1.0, 1.0, -1.0],
                     [1.0, -1.0, -1.0, 1.0]], dtype=torch.float64) / 2


def haar_bands(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, 4C, H//2, W//2): the LL bands of all channels, then LH, HL, HH."""
    win = window_values(x)                                   # (N, C, h, w, 4)
    bands = torch.einsum("nchwk,bk->nbchw", win, HAAR.to(device=x.device, dtype=x.dtype))
    n, _, c, h, w = bands.shape
    return bands.reshape(n, 4 * c, h, w)


class HaarWaveletDownsampling(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.mix = nn.Conv2d(4 * channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.norm(self.mix(haar_bands(x))))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


@register_pool(
    "hwd",
    display_name="Haar wavelet downsampling",
    paper=XU_2023,
    notes="one-level orthonormal Haar DWT to LL, LH, HL, HH (4C channels), then conv1x1 (with bias) "
          "-> BatchNorm -> ReLU back to C channels; 4C^2 + 3C parameters; last odd row/column dropped",
)
def hwd_pool(channels: int) -> HaarWaveletDownsampling:
    return HaarWaveletDownsampling(channels)
