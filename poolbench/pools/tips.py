"""Translation invariant polyphase sampling, TIPS (Saha and Gokhale, WACV 2025).

A learned soft mixing of the four polyphase components x_k = x[..., i::2, j::2] (k = 2i + j):

    psi = ReLU(depthwise kxk conv(x))                  (the intermediate feature map)
    tau = softmax_k(depthwise 1x1 conv(avgpool_2x2(psi)))   per sample and channel, 4 values
    y   = sum_k tau_k * x_k

where avgpool_2x2 is an adaptive average pool to a 2 x 2 grid, one cell per component (as in
the authors' public code). Two regularisers act in training, returned by ``auxiliary_losses()``
as LiftPool's are:

- ``tips_tau`` = mean over samples and channels of (1 - ||tau||_2), weight ``lambda_tau``: its
  minimum is a one-hot tau, i.e. a hard choice of one component;
- ``tips_shift`` = MSE(psi, T(x)) with T a random standard shift (zero fill) of the input by up to
  ``max_shift`` pixels per axis, weight ``lambda_shift``: the intermediate map learns to undo
  shifts.

The reference's training loss is L_tau + (1 - a) L_cls + a mean_layers(L_shift) with a = 0.35;
poolbench adds each layer's terms to an unweighted task loss, so the defaults are the
reference's weights relative to L_cls: 1 / (1 - a) and a / (1 - a). The reference also
switches the classification and shift terms off for the first epochs (t_eps); that schedule
belongs to a trainer and is not reproduced. Odd sizes drop their last row/column (the
reference reflect-pads them to even). The output is deterministic; only the shift drawn for
``tips_shift`` is random (the operator's own generator), so the operator is marked stochastic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import OwnRandomness, crop_even
from .polyphase import polyphase_components

SAHA_2025 = Paper("S. Saha, T. Gokhale", "Improving Shift Invariance in Convolutional Neural Networks "
                  "with Translation Invariant Polyphase Sampling", "WACV", 2025,
                  "https://arxiv.org/abs/2404.07410")
ALPHA = 0.35   # the reference's weight of the shift term against (1 - ALPHA) for classification


def standard_shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """Shift by (dy, dx) pixels, filling the uncovered rows/columns with zeros."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


class TIPS(OwnRandomness, nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, max_shift: int = 2,
                 lambda_tau: float = 1 / (1 - ALPHA), lambda_shift: float = ALPHA / (1 - ALPHA)):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.channels, self.kernel_size, self.max_shift = channels, kernel_size, max_shift
        self.lambda_tau, self.lambda_shift = float(lambda_tau), float(lambda_shift)
        self.feature = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                 groups=channels, bias=False)
        self.score = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        self._aux: dict[str, tuple[float, Tensor]] = {}

    def mixing(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(tau (N, C, 4), psi): the component weights and the intermediate feature map."""
        psi = torch.relu(self.feature(x))
        logits = self.score(F.adaptive_avg_pool2d(psi, 2))
        return torch.softmax(logits.flatten(2), dim=-1), psi

    def forward(self, x: Tensor) -> Tensor:
        x = crop_even(x)
        tau, psi = self.mixing(x)
        comps = polyphase_components(x)                           # (N, 4, C, h, w)
        y = torch.einsum("nck,nkchw->nchw", tau.to(comps.dtype), comps)
        if self.training:
            self._aux = {"tips_tau": (self.lambda_tau, (1 - tau.norm(dim=-1)).mean()),
                         "tips_shift": (self.lambda_shift, F.mse_loss(psi, self._shifted(x).detach()))}
        else:
            self._aux = {}
        return y

    def _shifted(self, x: Tensor) -> Tensor:
        m = self.max_shift
        dy, dx = torch.randint(-m, m + 1, (2,), generator=self.generator("cpu")).tolist()
        return standard_shift(x, dy, dx)

    def auxiliary_losses(self) -> dict[str, tuple[float, Tensor]]:
        """{"tips_tau": (lambda_tau, 1 - ||tau||), "tips_shift": (lambda_shift, MSE(psi, T(x)))}
        of the last training-mode forward; empty after an eval-mode forward."""
        return dict(self._aux)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, max_shift={self.max_shift}, "
                f"lambda_tau={self.lambda_tau:.4g}, lambda_shift={self.lambda_shift:.4g}")


@register_pool(
    "tips",
    display_name="TIPS",
    paper=SAHA_2025,
    stochastic=True,
    constant_gain=1.0,
    convex=True,
    notes="sum_k tau_k x_k over the 4 polyphase components, tau = softmax(dw-conv1x1(avgpool_2x2("
          "ReLU(dw-conv kxk(x))))) per sample and channel; training adds lambda_tau (1 - ||tau||_2) "
          "and lambda_shift MSE(psi, randomly shifted x) through auxiliary_losses(); "
          "C k^2 + C parameters",
)
def tips_pool(channels: int, kernel_size: int = 3, max_shift: int = 2,
              lambda_tau: float = 1 / (1 - ALPHA), lambda_shift: float = ALPHA / (1 - ALPHA)) -> TIPS:
    return TIPS(channels, kernel_size=kernel_size, max_shift=max_shift,
                lambda_tau=lambda_tau, lambda_shift=lambda_shift)
