"""DiffStride (Riad, Teboul, Grangier and Zeghidour, ICLR 2022): spectral pooling whose cut-off
is a learned, differentiable stride.

The paper multiplies the DFT of the map by a smooth box mask and crops to the mask's support:
along an axis of length N with stride S and smoothness R, frequency n keeps the weight
clip((R + c - |n|) / R, 0, 1), c = max(N / S, 2) / 2 (1 up to the cut-off c, then a linear ramp
of width R), and S gets gradients through the ramp. In the paper the output size, the support
of the mask, follows S.

poolbench's backbones (and ``swap_pools``) need every operator to map H x W to H//2 x W//2, so
here the crop is fixed at the H//2 x W//2 lowest frequencies (spectral pooling's band) and what
is learned is the cut-off inside it; the backbone copes without change. The paper's ramp starts
at c, which at S = 2 lies wholly outside that crop (every kept weight 1, no gradient for S), so
the ramp is centred on the cut-off instead:

    m(n) = clip((c - |n|) / R + 1/2, 0, 1),   c = max(N / S, 2) / 2

At S = 2 and R = 1 it keeps every frequency below the output's Nyquist frequency at weight 1
and that one at 1/2, and S has a gradient from the first step; a larger S narrows the band.
S is learned per axis (vertical, horizontal), initialised at 2 and clamped at the paper's lower
limit 1; at or below S = 2N / (N + 2) (1.78 on a 16-pixel side) the mask is all ones (spectral
pooling) and S gets no gradient there: a band wider than the output can represent is not
reachable at H//2 x W//2. R is limited to (0, 2], which keeps the DC weight 1 on every size
(c >= 1); the default R = 1 (the paper: 4, on maps of 32-224 pixels; ours are 4-32).

The spectrum is computed with ``fft2(norm="forward")`` as in ``spectral``, in float32 even under
autocast, so a constant keeps its value.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .spectral import _frequencies, fourier_downsample

RIAD_2022 = Paper("R. Riad, O. Teboul, D. Grangier, N. Zeghidour", "Learning Strides in "
                  "Convolutional Neural Networks", "ICLR", 2022, "https://arxiv.org/abs/2202.01653")
MIN_STRIDE = 1.0   # the paper's lower limit


def stride_mask(n_in: int, n_out: int, stride: Tensor, smoothness: float) -> Tensor:
    """m(n) for the signed frequencies of a cropped axis of length ``n_out`` (input length ``n_in``)."""
    freq = _frequencies(n_out, stride.device).abs().to(stride.dtype)
    cutoff = torch.clamp(n_in / stride, min=2.0) / 2
    return torch.clamp((cutoff - freq) / smoothness + 0.5, 0.0, 1.0)


class DiffStride(nn.Module):
    def __init__(self, channels: int, stride_init: float = 2.0, smoothness: float = 1.0):
        super().__init__()
        if stride_init < MIN_STRIDE:
            raise ValueError(f"stride_init must be >= {MIN_STRIDE}, got {stride_init}")
        if not 0 < smoothness <= 2:
            raise ValueError(f"smoothness must be in (0, 2] (above 2 the DC weight drops below 1 on "
                             f"small maps), got {smoothness}")
        self.smoothness = float(smoothness)
        self.strides = nn.Parameter(torch.full((2,), float(stride_init)))   # (vertical, horizontal)

    def effective_strides(self) -> Tensor:
        return torch.clamp(self.strides, min=MIN_STRIDE)

    def forward(self, x: Tensor) -> Tensor:
        return fourier_downsample(x, self._stride_band)

    def _stride_band(self, y: Tensor, h: int, w: int) -> Tensor:
        s = self.effective_strides().to(y.real.dtype)
        mask = (stride_mask(h, h // 2, s[0], self.smoothness)[:, None]
                * stride_mask(w, w // 2, s[1], self.smoothness)[None, :])
        return y * mask

    def no_weight_decay(self) -> list[str]:
        return ["strides"]   # decay would pull the strides towards 0, i.e. to the clamp

    def extra_repr(self) -> str:
        return f"smoothness={self.smoothness}"


@register_pool(
    "diffstride",
    display_name="DiffStride",
    paper=RIAD_2022,
    constant_gain=1.0,
    notes="fft2 crop to the H//2 x W//2 lowest frequencies (fixed output size), weighted by a "
          "ramp mask clip((c - |n|)/R + 1/2, 0, 1), c = max(N/S, 2)/2 (the paper's ramp, centred "
          "on the cut-off), learned strides (S_h, S_w) >= 1 (2 parameters, stride_init=2, "
          "smoothness R=1); the paper's output size follows S, here the band inside it does",
)
def diffstride_pool(channels: int, stride_init: float = 2.0, smoothness: float = 1.0) -> DiffStride:
    return DiffStride(channels, stride_init=stride_init, smoothness=smoothness)
