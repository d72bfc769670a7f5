"""Shared pieces of pooling operators: odd-size handling, the up-pooling protocol and the
auxiliary-loss hook.

Up-pooling protocol: an invertible operator implements ``down(x) -> (y, state)`` and
``up(y, state) -> x_hat``; ``forward(x)`` equals ``down(x)[0]``.

Auxiliary losses: an operator that contributes a training loss implements
``auxiliary_losses() -> dict[str, tuple[float, Tensor]]`` (term name -> (weight, value)),
holding the terms of its last training-mode forward and nothing after an eval-mode forward.
``poolbench.auxiliary_loss(model)`` collects them, so trainers need no per-operator code.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(learnable parameters, buffer elements) of a module, counted, not declared."""
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return params, buffers


def crop_even(x: Tensor) -> Tensor:
    """Drop the last row/column of odd-sized maps, as nn.MaxPool2d(2, 2) ignores them."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = x[..., : h - h % 2, : w - w % 2]
    return x


def window_values(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, H//2, W//2, 4): the values of each 2x2 stride-2 window, last
    odd row/column dropped. ``reshape`` (not ``view``) so channels_last input works too.

    >>> window_values(torch.arange(16.).view(1, 1, 4, 4))[0, 0, 0, 0]
    tensor([0., 1., 4., 5.])
    """
    x = crop_even(x)
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


def binomial_filter(k: int) -> Tensor:
    """Normalised 2-D binomial filter of size k (1..7): outer product of Pascal rows."""
    if not 1 <= k <= 7:
        raise ValueError(f"filter size must be in 1..7, got {k}")
    row = torch.tensor([1.0])
    for _ in range(k - 1):
        row = torch.cat([row, torch.zeros(1)]) + torch.cat([torch.zeros(1), row])
    f = torch.outer(row, row)
    return f / f.sum()


class InvertiblePool(nn.Module):
    """Base for operators with an up-pooling partner."""

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x)[0]

    def down(self, x: Tensor):
        raise NotImplementedError

    def up(self, y: Tensor, state) -> Tensor:
        raise NotImplementedError


def no_weight_decay_parameters(module: nn.Module) -> list[str]:
    """Qualified names of parameters that must be excluded from weight decay.

    Operators declare them with a ``no_weight_decay()`` method returning local names.
    """
    names = []
    for prefix, sub in module.named_modules():
        fn = getattr(sub, "no_weight_decay", None)
        if callable(fn):
            names += [f"{prefix}.{n}" if prefix else n for n in fn()]
    return names
