"""Fractional max-pooling (Graham 2014) at ratio 1/2, through torch's ``F.fractional_max_pool2d``.

Each output row i pools the rows [a_i, a_i + k) of the input, with start positions drawn
pseudo-randomly per (sample, channel) from one number u in [0, 1):
``a_i = floor((i + u) * alpha) - floor(u * alpha)`` for i < n_out - 1 and ``a_{n_out-1} = n_in - k``,
``alpha = (n_in - k) / (n_out - 1)`` (torch's pseudo-random sequence; columns likewise with
their own u). At ratio exactly 1/2 with the disjoint kernel k = 2, alpha = 2 on even sizes and
every start is 2i whatever u is: the layer is max pooling. So the default is k = 3, the
overlapping form, where alpha = (n_in - 3) / (n_out - 1) < 2 and the starts do vary with u.

Training draws u from the operator's own generator; eval uses the fixed u = ``eval_sample``
(Graham averages several draws at test time; one fixed draw keeps eval deterministic).

>>> import torch
>>> pool = FractionalMaxPool(1, kernel_size=2).eval()
>>> x = torch.randn(2, 1, 8, 6)
>>> torch.equal(pool(x), torch.nn.functional.max_pool2d(x, 2))   # k = 2 at ratio 1/2: max pooling
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, register_pool
from .base import OwnRandomness

GRAHAM_2014 = Paper("B. Graham", "Fractional Max-Pooling", "arXiv", 2014,
                    "https://arxiv.org/abs/1412.6071")


class FractionalMaxPool(OwnRandomness, nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, eval_sample: float = 0.5):
        super().__init__()
        if kernel_size not in (2, 3):
            raise ValueError(f"kernel_size must be 2 (disjoint) or 3 (overlapping), got {kernel_size}")
        if not 0.0 <= eval_sample < 1.0:
            raise ValueError(f"eval_sample must be in [0, 1), got {eval_sample}")
        self.kernel_size = kernel_size
        self.eval_sample = eval_sample

    def samples(self, n: int, c: int, device, dtype) -> Tensor:
        """(N, C, 2) numbers u in [0, 1): random in training, ``eval_sample`` in eval."""
        if not self.training:
            return torch.full((n, c, 2), self.eval_sample, device=device, dtype=dtype)
        u = torch.rand((n, c, 2), generator=self.generator("cpu"), dtype=torch.float64)
        return u.to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        ho, wo = h // 2, w // 2
        k = self.kernel_size
        # torch needs n_out + k - 1 <= n_in: only a 2-pixel side with k = 3 falls short
        pad_h, pad_w = max(0, ho + k - 1 - h), max(0, wo + k - 1 - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        # autocast leaves this op's dtype alone; the samples must match the input's
        return F.fractional_max_pool2d(x, k, output_size=(ho, wo),
                                       _random_samples=self.samples(n, c, x.device, x.dtype))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, eval_sample={self.eval_sample}"


@register_pool(
    "fractional",
    display_name="Fractional max-pooling",
    paper=GRAHAM_2014,
    stochastic=True,
    constant_gain=1.0,
    notes="torch's F.fractional_max_pool2d at output H//2 x W//2; kernel_size=3 (default, "
          "overlapping: random starts) or 2 (disjoint: at ratio 1/2 on even sizes exactly max "
          "pooling); one draw u per sample, channel and axis in training, u = eval_sample in eval",
)
def fractional_pool(channels: int, kernel_size: int = 3, eval_sample: float = 0.5) -> FractionalMaxPool:
    return FractionalMaxPool(channels, kernel_size=kernel_size, eval_sample=eval_sample)
