"""Per-channel input normalisation, the first module of every poolbench model.

Datasets hand models raw images in [0, 1]; the model itself subtracts the mean and divides by
the standard deviation, so robustness and shift suites can corrupt or shift raw images and
feed them straight in.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import UsageError


def _as_channel_tensor(values, channels: int, what: str) -> Tensor:
    if isinstance(values, (int, float)):
        values = [float(values)]
    try:
        t = torch.as_tensor(values, dtype=torch.float32).flatten()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} must be a number or a sequence of {channels} numbers: {exc}") from None
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels:
        raise UsageError(f"{what} has {t.numel()} values but the model takes {channels} input channels")
    if not torch.isfinite(t).all():
        raise UsageError(f"{what} must be finite, got {t.tolist()}")
    return t.view(1, channels, 1, 1)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers (saved with the model).

    ``mean=None`` means 0 and ``std=None`` means 1 (the identity).
    """

    def __init__(self, mean: Sequence[float] | float | None = None,
                 std: Sequence[float] | float | None = None, channels: int = 3):
        super().__init__()
        mean_t = _as_channel_tensor(0.0 if mean is None else mean, channels, "mean")
        std_t = _as_channel_tensor(1.0 if std is None else std, channels, "std")
        if (std_t <= 0).any():
            raise UsageError(f"std must be positive, got {std_t.flatten().tolist()}")
        self.channels = channels
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        fmt = lambda t: "(" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + ")"
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"
