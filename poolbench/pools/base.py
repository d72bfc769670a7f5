"""Shared pieces of pooling operators: odd-size handling, the up-pooling protocol and the
auxiliary-loss hook.

Up-pooling protocol: an invertible operator implements ``down(x) -> (y, state)`` and
``up(y, state) -> x_hat``; ``forward(x)`` equals ``down(x)[0]``.

Auxiliary losses: an operator that contributes a training loss implements
``auxiliary_losses() -> dict[str, tuple[float, Tensor]]`` (term name -> (weight, value)),
holding the terms of its last training-mode forward and nothing after an eval-mode forward.
``poolbench.auxiliary_loss(model)`` collects them, so trainers need no per-operator code.

Random draws: a stochastic operator subclasses :class:`OwnRandomness` and draws through
``self.generator(device)``. Once the training loop seeds it (``seed_stochastic``), its draws come
from its own generator and leave torch's global one to the data augmentation, so that every pool
trained at one seed sees the same crops and flips as its reference (paired training); unseeded
(a pool used on its own), it draws from the global generator as any torch module does.
"""
from __future__ import annotations

import numpy as np
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


class OwnRandomness:
    """Mixin of a stochastic operator: its own random generators, one per device, seeded by the
    training loop."""

    _seed: int | None = None

    def reseed(self, seed: int) -> None:
        self._seed, self._generators = int(seed), {}

    def generator(self, device) -> torch.Generator | None:
        """The generator of this operator on ``device`` (None while unseeded: the global one)."""
        if self._seed is None:
            return None
        key = str(torch.device(device))
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=key).manual_seed(self._seed)
        return self._generators[key]

    def random_states(self) -> dict[str, Tensor]:
        return {k: g.get_state() for k, g in getattr(self, "_generators", {}).items()}

    def set_random_states(self, states: dict[str, Tensor]) -> None:
        for key, state in states.items():
            self.generator(key).set_state(state)


def stochastic_modules(model: nn.Module) -> list[OwnRandomness]:
    return [m for m in model.modules() if isinstance(m, OwnRandomness)]


def seed_stochastic(model: nn.Module, seed: int) -> None:
    """Give every stochastic operator of ``model`` its own generator, seeded from ``seed`` and
    its position in the model (``SeedSequence([seed, i])``): its draws no longer move the
    global generator that the data augmentation draws from."""
    for i, module in enumerate(stochastic_modules(model)):
        module.reseed(int(np.random.SeedSequence([int(seed), i]).generate_state(1, np.uint32)[0]))


def stochastic_states(model: nn.Module) -> list[dict[str, Tensor]]:
    """The generator states of ``model``'s stochastic operators, in model order (a resume
    checkpoint keeps them)."""
    return [m.random_states() for m in stochastic_modules(model)]


def set_stochastic_states(model: nn.Module, states: list[dict[str, Tensor]] | None) -> None:
    for module, state in zip(stochastic_modules(model), states or []):
        module.set_random_states(state)


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
