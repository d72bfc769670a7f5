"""Polyphase down-sampling that chooses its phase from the content, with up-pooling partners:
adaptive polyphase sampling, APS (Chaman and Dokmanic, CVPR 2021), and learnable polyphase
sampling, LPS (Rojas-Gomez et al., NeurIPS 2022).

A 2x2 stride-2 subsampling keeps one of the four polyphase components x[..., i::2, j::2]
(phase k = 2i + j). Keeping phase 0 always is what makes strided layers shift-variant: an odd
shift of the input hands them another component. Choosing the phase from the components
themselves, with a rule that a circular shift only permutes, makes the layer equivariant to
circular shifts up to a shift of its output; with circular padding in the convolutions and a
global average at the end, a network is then exactly invariant to circular shifts.

- ``aps``: keep the component of largest l2 norm, per sample (optionally after a binomial blur
  with circular padding, the paper's anti-aliased variant).
- ``lps``: score each component with a small fully convolutional network followed by a global
  mean (so a component's score does not move when it is shifted); Gumbel-softmax over the four
  scores in training (a convex combination of the components), argmax in eval.

Both take ``max_first=true``: a 2x2 max at stride 1 over the periodic extension first, the way
APS replaces a max-pooling layer (max at stride 1, then the subsampling, as in MaxBlurPool);
the default is the bare sampling layer of docs/pools.md. In the quick-preset convnet the bare layer
keeps one pixel in four and trains to about a third of max pooling's accuracy on `shapes`;
with ``max_first=true`` it matches max pooling (reports/quick-default/report.md, the
circular-padding shift table).

Both are invertible: ``up(y, state)`` puts ``y`` back at the chosen phase with zeros elsewhere
(LPS in training: each component weighted by its probability), optionally blurred.

>>> import torch
>>> pool = APSPool(1).eval()
>>> x = torch.randn(1, 1, 6, 6)
>>> y, state = pool.down(x)
>>> shifted = pool(torch.roll(x, (1, 1), dims=(2, 3)))   # the same values, only rolled
>>> any(torch.equal(shifted, torch.roll(y, (a, b), dims=(2, 3))) for a in range(3) for b in range(3))
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Paper, check_choice, register_pool
from .base import InvertiblePool, OwnRandomness, binomial_filter, crop_even

CHAMAN_2021 = Paper("A. Chaman, I. Dokmanic", "Truly shift-invariant convolutional neural networks",
                    "CVPR", 2021, "https://arxiv.org/abs/2011.14214")
ROJAS_GOMEZ_2022 = Paper("R. A. Rojas-Gomez, T.-Y. Lim, A. G. Schwing, M. N. Do, R. A. Yeh",
                         "Learnable Polyphase Sampling for Shift Invariant and Equivariant "
                         "Convolutional Networks", "NeurIPS", 2022, "https://arxiv.org/abs/2210.08001")
FILTER_SIZES = tuple(range(1, 8))


def polyphase_components(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, 4, C, H//2, W//2): component k = 2i + j is x[..., i::2, j::2]."""
    x = crop_even(x)
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4, c, h // 2, w // 2)


def place_components(y: Tensor, weights: Tensor) -> Tensor:
    """The inverse placement: weights[n, k] * y[n] at phase k of a (2h, 2w) map, zeros elsewhere."""
    n, c, h, w = y.shape
    comps = weights.to(y.dtype)[:, :, None, None, None] * y[:, None]
    return comps.reshape(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)


def circular_pad(x: Tensor, before: int, after: int) -> Tensor:
    """Periodic extension of both spatial axes; unlike F.pad(mode="circular") it may wrap more
    than once (a 7-tap filter on a 2x2 map)."""
    for dim in (-2, -1):
        n = x.shape[dim]
        idx = torch.arange(-before, n + after, device=x.device) % n
        x = x.index_select(dim, idx)
    return x


def circular_max(x: Tensor) -> Tensor:
    """2x2 max at stride 1 over the periodic extension: the same size, and it commutes with
    circular shifts (a zero- or crop-padded one would not at the last row/column)."""
    return F.max_pool2d(circular_pad(x, 0, 1), 2, 1)


def circular_blur(x: Tensor, filt: Tensor) -> Tensor:
    """Depthwise filtering with circular padding, so that the blur commutes with circular shifts."""
    k = filt.shape[-1]
    x = circular_pad(x, (k - 1) // 2, k // 2)
    return F.conv2d(x, filt.to(x.dtype).expand(x.shape[1], 1, k, k), groups=x.shape[1])


def aps_phase(comps: Tensor) -> Tensor:
    """Per-sample index of the component of largest l2 norm; (N, 4, C, h, w) -> (N,)."""
    return comps.detach().pow(2).sum(dim=(2, 3, 4)).argmax(dim=1)


def select(comps: Tensor, weights: Tensor) -> Tensor:
    """sum_k weights[n, k] * comps[n, k] (a one-hot weight picks one component exactly)."""
    return torch.einsum("nk,nkchw->nchw", weights.to(comps.dtype), comps)


class _PolyphasePool(InvertiblePool):
    """The shared down/up protocol; subclasses give the per-sample phase weights (N, 4)."""

    def __init__(self, channels: int, filter_size: int = 1, max_first: bool = False):
        super().__init__()
        self.channels = channels
        self.filter_size = check_choice("filter_size", filter_size, FILTER_SIZES)
        self.max_first = max_first
        # one 2-D filter, broadcast over channels at use; a buffer: fixed, moves with .to()
        self.register_buffer("filter", binomial_filter(filter_size)[None, None])

    def _blur(self, x: Tensor) -> Tensor:
        return circular_blur(x, self.filter) if self.filter_size > 1 else x

    def choose(self, comps: Tensor) -> tuple[Tensor, Tensor | None]:
        """(weights (N, 4), phase (N,) when the choice is one component, else None)."""
        raise NotImplementedError

    def down(self, x: Tensor):
        size = tuple(x.shape[-2:])
        x = crop_even(x)
        comps = polyphase_components(self._blur(circular_max(x) if self.max_first else x))
        weights, phase = self.choose(comps)
        if phase is None:
            y = select(comps, weights)
        else:  # indexing, not a one-hot sum: the output is the component bit for bit
            y = comps[torch.arange(comps.shape[0], device=comps.device), phase]
        return y, {"weights": weights, "size": size}

    def up(self, y: Tensor, state) -> Tensor:
        x = place_components(y, state["weights"])
        if self.filter_size > 1:
            # 3 of 4 positions are zeros: a gain of 4 keeps a constant (the filter interpolates)
            x = 4 * circular_blur(x, self.filter)
        # the last odd row/column that the down-sampling dropped comes back as zeros
        pad_h, pad_w = state["size"][0] - x.shape[-2], state["size"][1] - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter_size={self.filter_size}, max_first={self.max_first}"


class APSPool(_PolyphasePool):
    """Adaptive polyphase sampling: the component of largest l2 norm, per sample."""

    def choose(self, comps: Tensor) -> tuple[Tensor, Tensor]:
        phase = aps_phase(comps)
        return F.one_hot(phase, 4).to(comps.dtype), phase


class LPSPool(OwnRandomness, _PolyphasePool):
    """Learnable polyphase sampling. The scorer is conv3x3 (C -> hidden, circular padding), ReLU,
    conv1x1 (hidden -> 1), then the mean over space: a score that a circular shift of the
    component leaves unchanged, so a shift of the input only permutes the four scores."""

    def __init__(self, channels: int, hidden: int = 0, tau: float = 1.0, filter_size: int = 1,
                 max_first: bool = False):
        super().__init__(channels, filter_size, max_first)
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: as many as the channels), got {hidden}")
        if tau <= 0:
            raise ValueError(f"tau (the Gumbel-softmax temperature) must be > 0, got {tau}")
        self.hidden = hidden or channels
        self.tau = tau
        self.score = nn.Sequential(
            nn.Conv2d(channels, self.hidden, 3, padding=1, padding_mode="circular"),
            nn.ReLU(),
            nn.Conv2d(self.hidden, 1, 1),
        )

    def logits(self, comps: Tensor) -> Tensor:
        """(N, 4, C, h, w) -> (N, 4) scores, the same network for the four components."""
        n, k, c, h, w = comps.shape
        return self.score(comps.reshape(n * k, c, h, w)).mean(dim=(1, 2, 3)).view(n, k)

    def choose(self, comps: Tensor) -> tuple[Tensor, Tensor | None]:
        z = self.logits(comps)
        if not self.training:
            phase = z.argmax(dim=1)
            return F.one_hot(phase, 4).to(comps.dtype), phase
        # Gumbel noise (the pool's own generator once training seeds it): -log(E), E ~ Exp(1)
        gumbel = -torch.empty_like(z).exponential_(generator=self.generator(z.device)).log()
        return torch.softmax((z + gumbel) / self.tau, dim=1), None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}, tau={self.tau}"


@register_pool(
    "aps",
    display_name="Adaptive polyphase sampling (APS)",
    paper=CHAMAN_2021,
    invertible=True,
    constant_gain=1.0,
    convex=True,
    notes="keeps, per sample, the polyphase component x[i::2, j::2] of largest l2 norm "
          "(filter_size > 1: after a binomial blur with circular padding, and then not within the "
          "window's min/max); max_first=true: a circular 2x2 max at stride 1 first (how the paper "
          "replaces a max pool); exactly equivariant to circular shifts; up-pool: the component back "
          "at its phase, zeros elsewhere (blurred with gain 4 when filter_size > 1)",
)
def aps_pool(channels: int, filter_size: int = 1, max_first: bool = False) -> APSPool:
    return APSPool(channels, filter_size=filter_size, max_first=max_first)


@register_pool(
    "lps",
    display_name="Learnable polyphase sampling (LPS)",
    paper=ROJAS_GOMEZ_2022,
    stochastic=True,
    invertible=True,
    constant_gain=1.0,
    convex=True,
    notes="scores each polyphase component (conv3x3 C->hidden circular, ReLU, conv1x1 -> 1, global "
          "mean); training: Gumbel-softmax (temperature tau) mix of the components; eval: the "
          "argmax component, exactly equivariant to circular shifts; up-pool LPU places it back "
          "at its phase (in training each phase weighted by its probability); filter_size and "
          "max_first as for aps",
)
def lps_pool(channels: int, hidden: int = 0, tau: float = 1.0, filter_size: int = 1,
             max_first: bool = False) -> LPSPool:
    return LPSPool(channels, hidden=hidden, tau=tau, filter_size=filter_size, max_first=max_first)
