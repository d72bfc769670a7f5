"""Collect auxiliary training losses (LiftPool's c_u and c_p, or any operator's) from a model."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def auxiliary_loss(model: nn.Module, as_tensors: bool = False) -> tuple[Tensor, dict[str, float | Tensor]]:
    """Weighted sum of every contributing layer's auxiliary terms, and the unweighted terms.

    Returns ``(total, terms)``: ``total`` is a differentiable scalar to add to the task loss
    (zero when nothing contributes); ``terms`` maps a term name to its value summed over
    layers, for logging: floats, or detached tensors with ``as_tensors`` (no host
    synchronisation per term on an accelerator, for the training loop).
    """
    total = None
    terms: dict[str, float | Tensor] = {}
    for module in model.modules():
        fn = getattr(module, "auxiliary_losses", None)
        if not callable(fn):
            continue
        for name, (weight, value) in fn().items():
            contribution = weight * value
            total = contribution if total is None else total + contribution
            value = value.detach() if as_tensors else float(value.detach())
            terms[name] = terms.get(name, 0.0) + value
    if total is None:
        param = next(model.parameters(), None)
        total = torch.zeros((), device=param.device if param is not None else "cpu")
    return total, terms
