"""The operator listing behind `poolbench pools`: metadata plus counts and a shift-consistency
fraction, all measured at C channels."""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

from .pools.base import count_parameters
from .registry import get_pool, get_spec, list_pools, plugin_failures

# the eight 1-pixel circular shifts, and the inputs they are measured on
ONE_PIXEL_SHIFTS = tuple(s for s in itertools.product((-1, 0, 1), repeat=2) if s != (0, 0))
SHIFT_INPUT = (12, 10)      # even sides: a polyphase-equivariant operator can be exact
SHIFT_TRIALS = 2            # random inputs per shift
SHIFT_CHANNELS = 4          # small: the measure needs only a few channels, and it is cheap there
_SHIFT_CACHE: dict[tuple, float] = {}   # (name, factory id, channels) -> fraction, per process


def all_circular_shifts(ref: Tensor) -> Tensor:
    """(h * w, ...) every roll of ``ref`` over its last two axes, in one gather."""
    h, w = ref.shape[-2:]
    i, j = torch.arange(h), torch.arange(w)
    a, b = torch.meshgrid(i, j, indexing="ij")
    rows = (i[None, :] - a.reshape(-1, 1)) % h                  # (h*w, h)
    cols = (j[None, :] - b.reshape(-1, 1)) % w                  # (h*w, w)
    return ref[..., rows[:, :, None], cols[:, None, :]].movedim(-3, 0)


def is_circular_shift_of(y: Tensor, ref: Tensor, rtol: float = 1e-9) -> bool:
    """True when ``y`` equals ``ref`` rolled by some (a, b) over its last two axes."""
    if y.shape != ref.shape:
        return False
    tol = rtol * max(1.0, float(ref.abs().max()))
    diff = (all_circular_shifts(ref) - y).abs().flatten(1).amax(1)
    return bool((diff <= tol).any())


def shift_consistency(name: str, channels: int = SHIFT_CHANNELS) -> float:
    """``measure_shift_consistency``, once per registered factory and process."""
    key = (name, id(get_spec(name).factory), channels)
    if key not in _SHIFT_CACHE:
        _SHIFT_CACHE[key] = measure_shift_consistency(name, channels)
    return _SHIFT_CACHE[key]


def measure_shift_consistency(name: str, channels: int = SHIFT_CHANNELS) -> float:
    """The fraction of 1-pixel circular input shifts whose output (eval mode, float64, the
    layer alone) is a circular shift of the unshifted output: 1.0 for an operator exactly
    equivariant in the polyphase sense (APS), near 0 for a fixed-phase one (max pooling).
    Measured over the 8 one-pixel shifts of ``SHIFT_TRIALS`` random maps of ``SHIFT_INPUT``;
    the shifted copies go through as one batch (in eval mode every operator is per-sample)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pool = get_pool(name, channels).to(torch.float64).eval()
        gen = torch.Generator().manual_seed(0)
        hits = total = 0
        with torch.no_grad():
            for _ in range(SHIFT_TRIALS):
                x = torch.randn(1, channels, *SHIFT_INPUT, generator=gen, dtype=torch.float64)
                batch = torch.cat([x] + [torch.roll(x, s, dims=(-2, -1)) for s in ONE_PIXEL_SHIFTS])
                out = pool(batch)
                hits += sum(is_circular_shift_of(out[k:k + 1], out[:1]) for k in range(1, len(batch)))
                total += len(ONE_PIXEL_SHIFTS)
    return hits / total


def pool_rows(pattern: str = "*", channels: int = 64) -> list[dict]:
    rows = []
    for name in list_pools(pattern):
        spec = get_spec(name)
        row = {
            "name": spec.name,
            "paper": spec.paper.short() if spec.paper else "",
            "year": spec.year,
            "licence": spec.licence,
            "params": None,
            "buffers": None,
            "stochastic": spec.stochastic,
            "invertible": spec.invertible,
            "shift_consistency": None,
            "source": spec.source,
            "version": spec.version,
            "status": "ok",
            "error": "",
        }
        try:
            with torch.random.fork_rng():
                row["params"], row["buffers"] = count_parameters(get_pool(name, channels))
            row["shift_consistency"] = shift_consistency(name)
        except Exception as exc:  # a plugin whose factory fails is shown, not fatal
            row["status"], row["error"] = "error", f"{type(exc).__name__}: {exc}"
        rows.append(row)
    for failure in plugin_failures():
        rows.append({
            "name": failure.name, "paper": "", "year": None, "licence": "", "params": None, "buffers": None,
            "stochastic": False, "invertible": False, "shift_consistency": None, "source": failure.source,
            "version": failure.version, "status": "broken", "error": failure.error,
        })
    return rows
