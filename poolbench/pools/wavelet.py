"""Wavelet pooling (Williams & Li 2018): a 2-level fast wavelet transform, then one level of
inverse transform from the level-2 sub-bands only.

Reconstructing one level from all level-2 bands gives back the level-1 approximation LL1, so
the output is LL1; for the orthonormal Haar wavelet that is 2 x avg_pool2d (gain 2 on a
constant). The transform is computed as the paper defines it, with periodic extension, which
keeps the orthonormal transform exactly invertible on even lengths.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, check_choice, register_pool
from .base import crop_even

_SQ3 = math.sqrt(3.0)
LOWPASS = {
    "haar": [1 / math.sqrt(2), 1 / math.sqrt(2)],
    "db2": [(1 + _SQ3) / (4 * math.sqrt(2)), (3 + _SQ3) / (4 * math.sqrt(2)),
            (3 - _SQ3) / (4 * math.sqrt(2)), (1 - _SQ3) / (4 * math.sqrt(2))],
}


def _filter_bank(name: str) -> Tensor:
    """(2, L): orthonormal low-pass row and its quadrature-mirror high-pass row."""
    lo = torch.tensor(LOWPASS[name], dtype=torch.float64)
    n = lo.numel()
    hi = torch.tensor([(-1) ** k * lo[n - 1 - k].item() for k in range(n)], dtype=torch.float64)
    return torch.stack([lo, hi])


def _overhang(taps: int) -> tuple[int, int]:
    """Samples before and after each output's pair: PyWavelets' periodization centres the window
    of output o on input 2o + 1 (its C code sums filter[j] * x[F/2 + 2o - j]), so a 4-tap db2
    window starts one pixel before the pair (Haar: exactly the pair)."""
    before = taps // 2 - 1
    return before, taps - 2 - before


def _analysis(x: Tensor, bank: Tensor, dim: int) -> Tensor:
    """(B, 1, h, w) -> (B, len(bank), ...) filtered and halved along ``dim`` (-1 or -2), periodic,
    aligned as PyWavelets' ``mode="periodization"``."""
    nf, taps = bank.shape
    before, after = _overhang(taps)
    if taps > 2:
        x = F.pad(x, (before, after, 0, 0) if dim == -1 else (0, 0, before, after), mode="circular")
    if dim == -1:
        return F.conv2d(x, bank.view(nf, 1, 1, taps), stride=(1, 2))
    return F.conv2d(x, bank.view(nf, 1, taps, 1), stride=(2, 1))


def _synthesis(y: Tensor, bank: Tensor, dim: int) -> Tensor:
    """Adjoint (= inverse, the transform being orthonormal) of ``_analysis``: (B, 2, ...) -> (B, 1, ...)."""
    taps = bank.shape[1]
    n = 2 * y.shape[dim]
    if dim == -1:
        out = F.conv_transpose2d(y, bank.view(2, 1, 1, taps), stride=(1, 2))
    else:
        out = F.conv_transpose2d(y, bank.view(2, 1, taps, 1), stride=(2, 1))
    if taps > 2:  # fold the periodic overhang on both sides back onto the other end
        before, after = _overhang(taps)
        body = out.narrow(dim, before, n)
        head = out.narrow(dim, 0, before)           # wrapped from the end
        tail = out.narrow(dim, before + n, after)    # wrapped from the start
        body = torch.cat([body.narrow(dim, 0, after) + tail, body.narrow(dim, after, n - after)], dim=dim)
        if before:
            body = torch.cat([body.narrow(dim, 0, n - before), body.narrow(dim, n - before, before) + head],
                             dim=dim)
        out = body
    return out


def _dwt2(x: Tensor, bank: Tensor) -> Tensor:
    """(B, 1, h, w), h and w even -> (B, 4, h/2, w/2) bands ordered LL, LH, HL, HH."""
    b = x.shape[0]
    y = _analysis(x, bank, -1)
    y = _analysis(y.reshape(b * 2, 1, *y.shape[-2:]), bank, -2)
    return y.reshape(b, 4, *y.shape[-2:])


def _idwt2(bands: Tensor, bank: Tensor) -> Tensor:
    b = bands.shape[0]
    y = _synthesis(bands.reshape(b * 2, 2, *bands.shape[-2:]), bank, -2)
    return _synthesis(y.reshape(b, 2, *y.shape[-2:]), bank, -1)


class WaveletPool(nn.Module):
    def __init__(self, channels: int, wavelet: str = "haar"):
        super().__init__()
        self.wavelet = check_choice("wavelet", wavelet, tuple(LOWPASS))
        # float64 so that a float64 model gets exact coefficients; cast to the input's dtype
        self.register_buffer("bank", _filter_bank(wavelet))

    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        n, c, h, w = x.shape
        bank = self.bank.to(x.dtype)
        # level 1: only the approximation feeds level 2; the level-1 details are discarded
        ll1 = _analysis(_analysis(x.reshape(n * c, 1, h, w), bank[:1], -1), bank[:1], -2)
        h1, w1 = ll1.shape[-2:]
        # odd level-1 sizes: extend by one replicated row/column, cropped after reconstruction
        if h1 % 2 or w1 % 2:
            ll1 = F.pad(ll1, (0, w1 % 2, 0, h1 % 2), mode="replicate")
        out = _idwt2(_dwt2(ll1, bank), bank)[..., :h1, :w1]
        return out.reshape(n, c, h1, w1)

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}"


@register_pool(
    "wavelet",
    display_name="Wavelet pooling",
    paper=Paper("T. Williams, R. Li", "Wavelet Pooling for Convolutional Neural Networks",
                "ICLR", 2018, "https://openreview.net/forum?id=rkhlb8lCZ"),
    constant_gain=2.0,
    notes="2-level FWT, inverse FWT of one level from the level-2 bands (periodic extension); "
          "wavelet=haar (default) equals 2 x avg_pool2d, i.e. a scaled average; wavelet=db2 "
          "is Daubechies-2. Gain 2 on a constant, as in the paper",
)
def wavelet_pool(channels: int, wavelet: str = "haar") -> WaveletPool:
    return WaveletPool(channels, wavelet=wavelet)
