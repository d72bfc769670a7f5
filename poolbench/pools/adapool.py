"""AdaPool (Stergiou and Poppe, IEEE TIP 2023): a learned blend of two exponentially weighted
window averages, with its up-sampler adaUnPool as the up-pooling partner.

Over each 2x2 window R with values a_i and mean a_bar (per channel):

- eDSCW: weights softmax_i(DSC(a_i, a_bar)), with the Dice-Sorensen coefficient
  DSC(a, b) = 2 a b / (a^2 + b^2), the similarity of each value to the window mean;
- eM (SoftPool): weights softmax_i(a_i);
- AdaPool: y = beta * eDSCW + (1 - beta) * eM, beta clamped to [0, 1] and learned.

Both are convex combinations of the window, so a constant stays itself. The paper learns one
beta per output location, which fixes the input size at construction; poolbench's operators
take any size, so beta is one value per channel (C parameters, initialised at 0.5).

adaUnPool (``up``): each output goes back to its four input positions, split by the same
weights: x_hat_i = beta * y * w_eDSCW,i + (1 - beta) * y * w_eM,i, where w are the normalised
window weights recorded by ``down``; up(down(x)) keeps the window's weighted mass where the
pooling found it.

>>> import torch
>>> pool = AdaPool(1)
>>> pool(torch.full((1, 1, 2, 2), 3.0)).item()
3.0
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import InvertiblePool, window_values

STERGIOU_2023 = Paper("A. Stergiou, R. Poppe", "AdaPool: Exponential Adaptive Pooling for "
                      "Information-Retaining Downsampling", "IEEE TIP", 2023,
                      "https://arxiv.org/abs/2111.00772")


def dice_sorensen(a: Tensor, b: Tensor) -> Tensor:
    """2ab / (a^2 + b^2), taken as 1 where both are 0 (a value equal to a zero mean)."""
    den = a * a + b * b
    live = den > 0
    return torch.where(live, 2 * a * b / torch.where(live, den, torch.ones_like(den)), torch.ones_like(den))


def adapool_weights(win: Tensor) -> tuple[Tensor, Tensor]:
    """The eDSCW and eM weights of each window, (N, C, h, w, 4) each, summing to 1 over the window."""
    mean = win.mean(-1, keepdim=True)
    return torch.softmax(dice_sorensen(win, mean), dim=-1), torch.softmax(win, dim=-1)


def place_windows(values: Tensor) -> Tensor:
    """Inverse of ``window_values``: (N, C, h, w, 4) -> (N, C, 2h, 2w)."""
    n, c, h, w, _ = values.shape
    return values.reshape(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


class AdaPool(InvertiblePool):
    def __init__(self, channels: int, beta_init: float = 0.5):
        super().__init__()
        if not 0.0 <= beta_init <= 1.0:
            raise ValueError(f"beta_init must be in [0, 1], got {beta_init}")
        self.channels = channels
        self.beta = nn.Parameter(torch.full((channels,), float(beta_init)))

    def mix(self, dtype) -> Tensor:
        """beta clamped to [0, 1], shaped (1, C, 1, 1, 1) to broadcast over windows."""
        return self.beta.clamp(0.0, 1.0).to(dtype).view(1, -1, 1, 1, 1)

    def down(self, x: Tensor):
        size = tuple(x.shape[-2:])
        win = window_values(x)
        w_dsc, w_em = adapool_weights(win)
        beta = self.mix(win.dtype)
        y = (beta * w_dsc * win + (1 - beta) * w_em * win).sum(-1)
        return y, {"w_dsc": w_dsc, "w_em": w_em, "size": size}

    def up(self, y: Tensor, state) -> Tensor:
        """adaUnPool: y * (beta w_eDSCW + (1 - beta) w_eM) at each window position."""
        beta = self.mix(y.dtype)
        x = place_windows(y.unsqueeze(-1) * (beta * state["w_dsc"] + (1 - beta) * state["w_em"]))
        pad_h, pad_w = state["size"][0] - x.shape[-2], state["size"][1] - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def no_weight_decay(self) -> list[str]:
        return ["beta"]   # a mixing weight, not a filter: decay would pull it to eM

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


@register_pool(
    "adapool",
    display_name="AdaPool",
    paper=STERGIOU_2023,
    invertible=True,
    constant_gain=1.0,
    convex=True,
    notes="beta * eDSCW + (1 - beta) * eM (SoftPool) over each 2x2 window, beta in [0, 1] learned "
          "per channel (the paper: per output location, which needs a fixed input size); "
          "up-pooling: adaUnPool, the output split over the window by the recorded weights",
)
def adapool(channels: int, beta_init: float = 0.5) -> AdaPool:
    return AdaPool(channels, beta_init=beta_init)
