"""Building blocks of LiftPool shared by the reference and the fast implementation.

Everything here is plain PyTorch: padding along one axis (well defined for every length),
the learned predictor/updater ``LiftingBranch``, polyphase split and interleave, and the
lifting distances of the regularisation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDING_MODES = ("reflect", "replicate", "zeros", "circular")


def kernel_padding(kernel_size: int) -> tuple[int, int]:
    """Padding (before, after) of a K-tap kernel so that the output keeps the input's length:
    K//2 on both sides for odd K; for even K the extra tap looks ahead (floor((K-1)/2) before,
    ceil((K-1)/2) after), so that K=2 predicts x_o[k] from x_e[k] and x_e[k+1]."""
    return (kernel_size - 1) // 2, kernel_size // 2


def _pad_index(n: int, before: int, after: int, mode: str, device) -> Tensor:
    """Source index of every position of the padded axis (for reflect/circular maps too short
    for torch's padding kernels). reflect is numpy's "reflect" (mirror without repeating the
    edge, periodic with period 2(n-1)); a length-1 axis reflects onto itself."""
    idx = torch.arange(-before, n + after, device=device)
    if mode == "circular":
        return idx.remainder(n)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(idx)
        period = 2 * (n - 1)
        m = idx.remainder(period)
        return torch.where(m < n, m, period - m)
    return idx.clamp(0, n - 1)  # replicate


def pad_axis(x: Tensor, before: int, after: int, mode: str, dim: int) -> Tensor:
    """Pad ``x`` along ``dim`` (-1 or -2 of a 4-D tensor, or -1 of a 3-D one) by
    ``before``/``after`` positions in ``mode`` (reflect, replicate, zeros, circular).

    Unlike F.pad, reflect and circular are defined for every length (the index is folded
    as many times as needed), so tiny maps never fail."""
    if before == 0 and after == 0:
        return x
    dim = dim % x.dim()
    last = dim == x.dim() - 1
    if x.dim() not in (3, 4) or (x.dim() == 3 and not last) or dim < x.dim() - 2:
        raise ValueError(f"pad_axis pads dim -1 of a 3-D or -1/-2 of a 4-D tensor, got dim {dim} "
                         f"of shape {tuple(x.shape)}")
    if x.dim() == 3:
        pads = (before, after)
    else:
        pads = (before, after, 0, 0) if last else (0, 0, before, after)
    if mode == "zeros":
        return F.pad(x, pads)
    n = x.shape[dim]
    if mode == "replicate" or (mode == "reflect" and max(before, after) < n) or (
        mode == "circular" and max(before, after) <= n
    ):
        return F.pad(x, pads, mode=mode)
    return x.index_select(dim, _pad_index(n, before, after, mode, x.device))


class LiftingBranch(nn.Module):
    """The learned predictor P or updater U of docs/liftpool.md (Eq. 4-5):
    ``Tanh o Conv(k=1, groups=g2) o ReLU o Conv(K taps along the lifted axis, groups=g1)``,
    C -> C channels, the K-tap conv preceded by padding (``padding_mode``) on that axis.

    ``weight_k`` has shape (C, C/g1, K): the same taps run along W for the horizontal lifting
    and along H for the vertical ones. ``weight_1`` has shape (C, C/g2). No biases by default
    (the paper counts C*K + C weights per branch); ``bias=True`` adds them.

    Called as a plain function, the branch acts along the LAST dimension of a 3-D (N, C, L)
    or 4-D (N, C, M, L) tensor, the interface injected predictors/updaters follow too.
    """

    def __init__(self, channels: int, kernel_size: int = 5, g1: int | None = None,
                 g2: int | None = None, padding_mode: str = "reflect", bias: bool = False):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.g1 = channels if g1 is None else g1
        self.g2 = channels if g2 is None else g2
        self.padding_mode = padding_mode
        self.padding = kernel_padding(kernel_size)
        self.weight_k = nn.Parameter(torch.empty(channels, channels // self.g1, kernel_size))
        self.weight_1 = nn.Parameter(torch.empty(channels, channels // self.g2))
        if bias:
            self.bias_k = nn.Parameter(torch.empty(channels))
            self.bias_1 = nn.Parameter(torch.empty(channels))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_1", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's default initialisation (kaiming-uniform, a=sqrt(5))."""
        for w, b in ((self.weight_k, self.bias_k), (self.weight_1, self.bias_1)):
            fan_in = w[0].numel()
            nn.init.kaiming_uniform_(w.view(w.shape[0], -1), a=math.sqrt(5))
            if b is not None:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(b, -bound, bound)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, g1={self.g1}, "
                f"g2={self.g2}, padding_mode={self.padding_mode!r}, bias={self.bias_k is not None}")

    def kernel(self, dim: int) -> Tensor:
        """The K-tap weight as a conv2d kernel running along ``dim`` (-1: W, -2: H)."""
        w = self.weight_k.unsqueeze(2)  # (C, C/g1, 1, K)
        return w if dim % 4 == 3 else w.transpose(2, 3)

    def along(self, x: Tensor, dim: int) -> Tensor:
        """Apply the branch to the 4-D tensor ``x`` along ``dim`` (-1 or -2): the plain
        definition, four ops (pad, conv, ReLU, 1x1 conv, tanh)."""
        x = pad_axis(x, *self.padding, self.padding_mode, dim)
        z = F.relu(F.conv2d(x, self.kernel(dim), self.bias_k, groups=self.g1))
        z = F.conv2d(z, self.weight_1[:, :, None, None], self.bias_1, groups=self.g2)
        return torch.tanh(z)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            return self.along(x.unsqueeze(2), -1).squeeze(2)
        if x.dim() != 4:
            raise ValueError(f"a lifting branch takes (N, C, L) or (N, C, M, L), got "
                             f"{tuple(x.shape)}")
        return self.along(x, -1)


def split(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Polyphase split along ``dim`` (-1 or -2): (x[0::2], x[1::2]), views."""
    if dim % x.dim() == x.dim() - 1:
        return x[..., 0::2], x[..., 1::2]
    return x[..., 0::2, :], x[..., 1::2, :]


def interleave(even: Tensor, odd: Tensor, dim: int) -> Tensor:
    """Inverse of ``split``: even samples at 0, 2, ..., odd ones at 1, 3, ..."""
    if dim % even.dim() == even.dim() - 1:
        return torch.stack((even, odd), dim=-1).flatten(-2)
    return torch.stack((even, odd), dim=-2).flatten(-3, -2)


def distance(a: Tensor, b: Tensor | None, kind: str) -> Tensor:
    """dist(a, b) of the regularisation: mean squared error ("mse") or the plain L2 norm
    ("l2") of a - b (b=None means 0)."""
    diff = a if b is None else a - b
    if kind == "mse":
        return diff.pow(2).mean()
    return torch.linalg.vector_norm(diff)
