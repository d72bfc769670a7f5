"""Spectral pooling (Rippel et al. 2015): keep the lowest H/2 x W/2 DFT frequencies."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import OwnRandomness


def _crop_axis(y: Tensor, out: int, dim: int) -> Tensor:
    """Keep the ceil(out/2) lowest non-negative and floor(out/2) negative frequencies of ``dim``."""
    n = y.shape[dim]
    lo, hi = (out + 1) // 2, out // 2
    return torch.cat([y.narrow(dim, 0, lo), y.narrow(dim, n - hi, hi)], dim=dim)


def fourier_downsample(x: Tensor, band: Callable[[Tensor, int, int], Tensor] | None = None) -> Tensor:
    """``x`` (..., H, W) to (..., H//2, W//2) in the Fourier domain: the centred H//2 x W//2 band
    of its spectrum, reweighted by ``band(spectrum, H, W)`` where given, transformed back. Half
    precision runs in float32 (half-precision FFTs take only power-of-two sizes); the result has
    ``x``'s dtype."""
    dtype = x.dtype
    h, w = x.shape[-2:]
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = x if dtype in (torch.float32, torch.float64) else x.float()
        # norm="forward" divides by H*W on the way in and not on the way out,
        # so a constant map keeps its value after the crop
        y = _crop_axis(_crop_axis(torch.fft.fft2(z, norm="forward"), h // 2, -2), w // 2, -1)
        if band is not None:
            y = band(y, h, w)
        out = torch.fft.ifft2(y, norm="forward").real
    return out.to(dtype)


def _frequencies(out: int, device) -> Tensor:
    """Signed frequency of each index of a cropped axis of length ``out``."""
    idx = torch.arange(out, device=device)
    return torch.where(idx < (out + 1) // 2, idx, idx - out)


class SpectralPool(OwnRandomness, nn.Module):
    def __init__(self, channels: int, random_cutoff: bool = False, min_cutoff: float = 0.5):
        super().__init__()
        if not 0.0 < min_cutoff <= 1.0:
            raise ValueError(f"min_cutoff must be in (0, 1], got {min_cutoff}")
        self.random_cutoff = random_cutoff
        self.min_cutoff = min_cutoff

    def forward(self, x: Tensor) -> Tensor:
        return fourier_downsample(x, self._random_cutoff if self.training and self.random_cutoff else None)

    def _random_cutoff(self, y: Tensor, h: int, w: int) -> Tensor:
        return y * self._random_mask(h // 2, w // 2, y.device).to(y.real.dtype)

    def _random_mask(self, ho: int, wo: int, device) -> Tensor:
        # one cutoff per forward pass, a fraction in [min_cutoff, 1] of the kept band
        r = self.min_cutoff + (1.0 - self.min_cutoff) * float(torch.rand((), generator=self.generator("cpu")))
        keep_h = _frequencies(ho, device).abs() <= r * ho / 2
        keep_w = _frequencies(wo, device).abs() <= r * wo / 2
        return keep_h[:, None] & keep_w[None, :]

    def extra_repr(self) -> str:
        return f"random_cutoff={self.random_cutoff}, min_cutoff={self.min_cutoff}"


@register_pool(
    "spectral",
    display_name="Spectral pooling",
    paper=Paper("O. Rippel, J. Snoek, R. P. Adams",
                "Spectral Representations for Convolutional Neural Networks",
                "NeurIPS", 2015, "https://arxiv.org/abs/1506.03767"),
    constant_gain=1.0,
    notes="crop of fft2(x, norm='forward') to the lowest H//2 x W//2 frequencies, computed in "
          "float32 even under autocast; random_cutoff=true (off by default) zeroes, in training, "
          "frequencies above a random fraction in [min_cutoff, 1] of the kept band, and is then "
          "stochastic in training",
)
def spectral_pool(channels: int, random_cutoff: bool = False, min_cutoff: float = 0.5) -> SpectralPool:
    return SpectralPool(channels, random_cutoff=random_cutoff, min_cutoff=min_cutoff)
