"""Aliasing- and spectral-artifact-free pooling, ASAP (Grabinski, Keuper and Keuper, 2023):
a frequency low cut after a Hamming window.

The frequency low cut, FLC (Grabinski et al., ECCV 2022), keeps the centre of the spectrum,
the lowest H/2 x W/2 frequencies: nothing above the output's Nyquist frequency is folded back,
so it does not alias. That is `spectral` pooling (Rippel et al. 2015), and the equality is
tested: FLC's fftshift-and-centre-crop keeps exactly `spectral`'s frequencies when H and W are
multiples of 4 (where H/2 is odd it keeps one more negative and one fewer positive frequency).
Its hard cut rings (the sinc of a box), and ASAP tapers the spectrum first with the square
root of the outer product of two Hamming windows, 0.54 + 0.46 cos(2 pi f / N) per axis for the
signed frequency f of an N-point transform: 1 at f = 0 (a constant keeps its value), 0.08 at
the input's Nyquist frequency, sqrt(0.54) ~ 0.73 on the output's band edge.

>>> import torch
>>> x = torch.full((1, 1, 8, 8), 2.5)
>>> asap(x)                      # a constant keeps its value
tensor([[[[2.5000, 2.5000, 2.5000, 2.5000],
          [2.5000, 2.5000, 2.5000, 2.5000],
          [2.5000, 2.5000, 2.5000, 2.5000],
          [2.5000, 2.5000, 2.5000, 2.5000]]]])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .spectral import _crop_axis, _frequencies

GRABINSKI_2023 = Paper("J. Grabinski, J. Keuper, M. Keuper",
                       "Fix your downsampling ASAP! Be natively more robust via Aliasing and Spectral "
                       "Artifact free Pooling", "arXiv", 2023, "https://arxiv.org/abs/2307.09804")


def hamming_response(n: int, device=None, dtype=torch.float64) -> Tensor:
    """0.54 + 0.46 cos(2 pi f / n) for the signed frequency f of each index of an n-point FFT."""
    f = _frequencies(n, device).to(dtype)
    return 0.54 + 0.46 * torch.cos(2 * math.pi * f / n)


def spectral_window(h: int, w: int, device=None, dtype=torch.float64) -> Tensor:
    """sqrt(outer(hamming_H, hamming_W)) in FFT index order (DC at [0, 0], where it is 1)."""
    return torch.sqrt(torch.outer(hamming_response(h, device, dtype), hamming_response(w, device, dtype)))


def asap(x: Tensor, window: bool = True) -> Tensor:
    """ASAP (``window=False``: the plain frequency low cut, FLC); (N, C, H, W) -> (N, C, H//2, W//2)."""
    dtype = x.dtype
    h, w = x.shape[-2:]
    # half-precision FFTs only take power-of-two sizes: compute in float32 (or float64)
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = x if dtype in (torch.float32, torch.float64) else x.float()
        # norm="forward": a constant keeps its value through the crop (as in `spectral`)
        y = torch.fft.fft2(z, norm="forward")
        if window:
            y = y * spectral_window(h, w, y.device, z.dtype)
        y = _crop_axis(_crop_axis(y, h // 2, -2), w // 2, -1)
        out = torch.fft.ifft2(y, norm="forward").real
    return out.to(dtype)


class ASAPPool(nn.Module):
    """Module form of :func:`asap`; no parameters (the window is recomputed per size)."""

    def __init__(self, channels: int, window: bool = True):
        super().__init__()
        self.window = window

    def forward(self, x: Tensor) -> Tensor:
        return asap(x, self.window)

    def extra_repr(self) -> str:
        return f"window={self.window}"


@register_pool(
    "asap",
    display_name="Aliasing-free pooling (ASAP)",
    paper=GRABINSKI_2023,
    constant_gain=1.0,
    notes="fft2 (norm='forward'), times sqrt(outer(Hamming, Hamming)) over the input's spectrum "
          "(1 at DC, 0.08 at Nyquist), then the lowest H//2 x W//2 frequencies as `spectral` keeps "
          "them; window=false is the frequency low cut (FLC, Grabinski et al. ECCV 2022), equal to "
          "`spectral`; computed in float32 even under autocast",
)
def asap_pool(channels: int, window: bool = True) -> ASAPPool:
    return ASAPPool(channels, window=window)
