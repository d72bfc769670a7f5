"""LiftPool (Zhao & Snoek, ICLR 2021): LiftDownPool-1D/-2D and its exact inverse LiftUpPool,
as specified in docs/liftpool.md.

One 1-D lifting along an axis:  x_e, x_o = x[0::2], x[1::2];  d = x_o - P(x_e);  s = x_e + U(d).
2-D: horizontal lifting x -> (s, d), then vertical liftings s -> (LL, LH) and d -> (HL, HH), all
three with the layer's single predictor P and updater U. The inverse runs the steps backwards:
x_e = s - U(d), x_o = d + P(x_e), interleave.

Usage::

    pool = get_pool("lift", 64)                  # or LiftDownPool2d(64, ...)
    y = pool(x)                                   # tensor -> tensor, like nn.MaxPool2d(2, 2)
    y, state = pool.down(x)                       # state: the detail bands and the input size
    x_rec = pool.up(y, state)                     # LiftUpPool with the same P and U: == x
    up = pool.up_pool()                           # the same as a module: up(y, state)
    total, terms = poolbench.auxiliary_loss(model)  # lambda_u * c_u + lambda_p * c_p (training)

Two implementations compute the same function: ``impl="reference"`` (the plain definition, 12
convolutions and autograd) and ``impl="fast"`` (default; see ``lift_fast.py`` for the design,
and ``lift_native.py`` for its CPU kernel).
Injected predictor/updater callables always run through the reference algorithm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PoolOptionError
from ..registry import Paper, check_choice, register_pool
from . import lift_fast
from .base import InvertiblePool
from .lift_ops import PADDING_MODES, LiftingBranch, distance, interleave, split

BANDS_2D = ("LL", "LH", "HL", "HH")
BANDS_1D = ("L", "H")
MAX_KERNEL = 64   # the widest lifting kernel accepted (kernel_size)

PAPER = Paper(
    "J. Zhao, C. G. M. Snoek",
    "LiftPool: Bidirectional ConvNet Pooling",
    "ICLR", 2021, "https://openreview.net/forum?id=kE3vd639uRW",
)


def parse_bands(bands: str, names: tuple[str, ...] = BANDS_2D) -> tuple[str, tuple[str, ...]]:
    """``"sum"`` -> ("sum", all bands); ``"concat"`` -> ("concat", all bands); ``"LL"`` or
    ``"LL+HL"`` -> ("sum", the named bands in canonical order). Case-insensitive."""
    accepted = (f"'sum', 'concat', one of {', '.join(repr(n) for n in names)}, "
                f"or a '+'-joined sum of distinct bands such as '{names[0]}+{names[-1]}'")
    if not isinstance(bands, str) or not bands.strip():
        raise PoolOptionError(f"option bands={bands!r} is not accepted; choose {accepted}")
    key = bands.strip()
    if key.lower() in ("sum", "concat"):
        return key.lower(), names
    parts = [p.strip().upper() for p in key.split("+")]
    if not all(p in names for p in parts) or len(set(parts)) != len(parts):
        raise PoolOptionError(f"option bands={bands!r} is not accepted; choose {accepted}")
    return "sum", tuple(n for n in names if n in parts)


def _check_groups(name: str, value, channels: int) -> int:
    if value is None:
        return channels
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or channels % value:
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise PoolOptionError(
            f"option {name}={value!r} is not accepted for {channels} channels; choose None "
            f"(= channels, channel-wise) or a divisor of the channels: {shown}")
    return value


@dataclass
class LiftState:
    """What ``up`` needs besides ``y``: the bands that ``y`` does not carry, and the spatial size
    of the input before odd-size handling."""

    details: dict[str, Tensor]
    size: tuple[int, ...]
    odd: str


def _ran_reference() -> None:
    # counted outside compiled graphs only: dynamo would trace the Python counter
    if not torch.compiler.is_compiling():
        lift_fast.ran("reference")


class _LiftPoolBase(InvertiblePool):
    """Options and shared machinery of the 1-D and 2-D LiftDownPool."""

    band_names: tuple[str, ...] = BANDS_2D
    spatial_dims: int = 2

    def __init__(self, channels: int, kernel_size: int = 5, g1: int | None = None,
                 g2: int | None = None, padding_mode: str = "reflect", bands: str = "sum",
                 odd: str = "crop", loss: str = "mse", loss_on: str = "all",
                 lambda_u: float = 0.01, lambda_p: float = 0.1, impl: str = "fast",
                 predictor: Callable | None = None, updater: Callable | None = None,
                 bias: bool = False):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise PoolOptionError(f"channels must be a positive integer, got {channels!r}")
        # at most MAX_KERNEL taps: wider than the largest map a backbone pools (112 px at 224 px
        # input, split into halves of 56) it only convolves padding, and 10^5 taps allocate GBs
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or not 1 <= kernel_size <= MAX_KERNEL:
            raise PoolOptionError(
                f"option kernel_size={kernel_size!r} is not accepted; choose a positive integer up to "
                f"{MAX_KERNEL} (the paper uses 2, 3, 4, 5 or 7; default 5)")
        self.channels = channels
        self.kernel_size = kernel_size
        self.g1 = _check_groups("g1", g1, channels)
        self.g2 = _check_groups("g2", g2, channels)
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.bands = bands
        self.band_mode, self.band_selection = parse_bands(bands, self.band_names)
        self.odd = check_choice("odd", odd, ("crop", "pad"))
        self.loss = check_choice("loss", loss, ("mse", "l2"))
        self.loss_on = check_choice("loss_on", loss_on, ("all", "first"))
        self.impl = check_choice("impl", impl, ("fast", "reference"))
        for name, value in (("lambda_u", lambda_u), ("lambda_p", lambda_p)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise PoolOptionError(f"option {name}={value!r} is not accepted; choose a finite "
                                      "number >= 0")
        self.lambda_u, self.lambda_p = float(lambda_u), float(lambda_p)
        if not isinstance(bias, bool):
            raise PoolOptionError(f"option bias={bias!r} is not accepted; choose True or False")
        for name, value in (("predictor", predictor), ("updater", updater)):
            if value is not None and not callable(value):
                raise PoolOptionError(f"option {name}={value!r} is not accepted; choose None (the "
                                      "learned branch) or a callable acting along the last dim")
        branch = dict(channels=channels, kernel_size=kernel_size, g1=self.g1, g2=self.g2,
                      padding_mode=self.padding_mode, bias=bias)
        self.bias = bias
        self.predictor = LiftingBranch(**branch) if predictor is None else predictor
        self.updater = LiftingBranch(**branch) if updater is None else updater
        self._aux: dict[str, tuple[float, Tensor]] = {}

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, g1={self.g1}, "
                f"g2={self.g2}, padding_mode={self.padding_mode!r}, bands={self.bands!r}, "
                f"odd={self.odd!r}, loss={self.loss!r}, loss_on={self.loss_on!r}, "
                f"lambda_u={self.lambda_u}, lambda_p={self.lambda_p}, impl={self.impl!r}, "
                f"bias={self.bias}")

    # --- auxiliary losses -----------------------------------------------------------------

    def auxiliary_losses(self) -> dict[str, tuple[float, Tensor]]:
        """{"lift_u": (lambda_u, c_u), "lift_p": (lambda_p, c_p)} of the last training-mode
        forward; empty after an eval-mode forward (or before any)."""
        return dict(self._aux)

    def _store_losses(self, c_u, c_p) -> None:
        self._aux = {} if c_u is None else {"lift_u": (self.lambda_u, c_u),
                                            "lift_p": (self.lambda_p, c_p)}

    # --- branches -------------------------------------------------------------------------

    @property
    def uses_fast_path(self) -> bool:
        return (self.impl == "fast" and isinstance(self.predictor, LiftingBranch)
                and isinstance(self.updater, LiftingBranch))

    def _fast(self, x: Tensor) -> bool:
        return self.uses_fast_path and x.numel() > 0  # an empty batch: the reference handles it

    def _run_branch(self, branch, t: Tensor, dim: int) -> Tensor:
        """P or U applied along ``dim``; injected callables get that axis as the last one."""
        if isinstance(branch, LiftingBranch):
            return branch.along(t, dim)
        last = dim % t.dim() == t.dim() - 1
        moved = t if last else t.transpose(dim, -1)
        out = branch(moved)
        if not isinstance(out, Tensor) or out.shape != moved.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"an injected predictor/updater must return a tensor of its input's "
                             f"shape {tuple(t.shape)}, got {got}")
        return out if last else out.transpose(dim, -1)

    def _lift(self, x: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """Reference 1-D lifting: (s, d, x_o)."""
        e, o = split(x, dim)
        d = o - self._run_branch(self.predictor, e, dim)
        s = e + self._run_branch(self.updater, d, dim)
        return s, d, o

    def _unlift(self, s: Tensor, d: Tensor, dim: int) -> Tensor:
        """Reference inverse 1-D lifting."""
        e = s - self._run_branch(self.updater, d, dim)
        o = d + self._run_branch(self.predictor, e, dim)
        return interleave(e, o, dim)

    # --- odd sizes --------------------------------------------------------------------------

    def _make_even(self, x: Tensor) -> Tensor:
        sizes = x.shape[-self.spatial_dims:]
        if self.odd == "crop":
            if min(sizes) < 2:
                raise ValueError(f"LiftDownPool with odd='crop' needs spatial sizes >= 2, got "
                                 f"{tuple(sizes)}")
            if any(n % 2 for n in sizes):
                idx = (Ellipsis,) + tuple(slice(0, n - n % 2) for n in sizes)
                x = x[idx]
            return x
        if any(n % 2 for n in sizes):
            pads = []
            for n in reversed(sizes):
                pads += [0, n % 2]
            x = F.pad(x, pads, mode="replicate")
        return x

    def _restore_size(self, x: Tensor, size: tuple[int, ...]) -> Tensor:
        """Undo ``_make_even``: crop the replicated row/column (odd="pad"), or put back the
        dropped one as zeros (odd="crop", like MaxUnpool2d with output_size)."""
        cur = tuple(x.shape[-self.spatial_dims:])
        if cur == tuple(size):
            return x
        if self.odd == "pad":
            idx = (Ellipsis,) + tuple(slice(0, n) for n in size)
            return x[idx]
        pads = []
        for n, c in zip(reversed(size), reversed(cur)):
            pads += [0, n - c]
        return F.pad(x, pads)

    # --- bands ----------------------------------------------------------------------------

    def _combine(self, bands: dict[str, Tensor]) -> Tensor:
        if self.band_mode == "concat":
            return torch.cat([bands[n] for n in self.band_names], dim=1)
        y = bands[self.band_selection[0]]
        for n in self.band_selection[1:]:
            y = y + bands[n]
        return y

    def _selected_names(self) -> tuple[str, ...]:
        return self.band_names if self.band_mode == "concat" else self.band_selection

    def _state(self, bands: dict[str, Tensor], size) -> LiftState:
        keep = () if self.band_mode == "concat" else tuple(
            n for n in self.band_names if n != self.band_selection[0])
        return LiftState({n: bands[n] for n in keep}, tuple(size), self.odd)

    def _bands_from(self, y: Tensor, state: LiftState) -> dict[str, Tensor]:
        """All bands, with ``y`` in the place of the selected ones (``y`` is their sum: the
        first selected band, the carrier, is y minus the others, taken from the state)."""
        c = self.channels
        if self.band_mode == "concat":
            if y.shape[1] != len(self.band_names) * c:
                raise ValueError(f"up-pooling with bands='concat' expects "
                                 f"{len(self.band_names) * c} channels, got {y.shape[1]}")
            return dict(zip(self.band_names, y.split(c, dim=1)))
        if y.shape[1] != c:
            raise ValueError(f"up-pooling expects {c} channels, got {y.shape[1]}")
        bands = dict(state.details)
        carrier, others = self.band_selection[0], self.band_selection[1:]
        if others:
            rest = bands[others[0]]
            for n in others[1:]:
                rest = rest + bands[n]
            y = y - rest
        bands[carrier] = y
        return bands

    # --- protocol ---------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x)[0]

    def up_pool(self) -> "LiftUpPool":
        """LiftUpPool sharing this layer's P and U (a module: ``up(y, state)``)."""
        return LiftUpPool(self)

    def _check_input(self, x: Tensor) -> None:
        want = self.spatial_dims + 2
        if x.dim() != want or x.shape[1] != self.channels:
            shape = "(N, C, H, W)" if self.spatial_dims == 2 else "(N, C, L)"
            raise ValueError(f"{type(self).__name__}({self.channels}) expects {shape} with "
                             f"C={self.channels}, got {tuple(x.shape)}")


class LiftDownPool2d(_LiftPoolBase):
    """LiftDownPool-2D: a drop-in for nn.MaxPool2d(2, 2) with an exact inverse (``up``)."""

    band_names = BANDS_2D
    spatial_dims = 2

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x, keep_state=False)[0]

    def down(self, x: Tensor, keep_state: bool = True) -> tuple[Tensor, LiftState | None]:
        """(y, state); ``keep_state=False`` (a plain forward): state None, and summed bands
        need not be materialised."""
        self._check_input(x)
        size = tuple(x.shape[-2:])
        was_cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = self._make_even(x)
        loss = self.loss if self.training else None
        loss2 = loss if self.loss_on == "all" else None
        if self._fast(x):
            x = x.contiguous(memory_format=torch.channels_last if was_cl else
                             torch.contiguous_format)
            if not keep_state and self.band_mode != "concat":
                sel = sum(1 << BANDS_2D.index(b) for b in self.band_selection)
                out = lift_fast.lift_sum(x, self.predictor, self.updater, loss,
                                         loss2 is not None, sel, was_cl)
                if out is not None:
                    self._store_losses(out[1], out[2])
                    return out[0], None
            bands_cl, c_u, c_p = lift_fast.lift_down(x, self.predictor, self.updater, loss,
                                                     loss2 is not None)
            bands = dict(zip(BANDS_2D, bands_cl))
            y = lift_fast.combine([bands[b] for b in self._selected_names()],
                                  self.band_mode == "concat", was_cl)
        else:
            _ran_reference()
            s, d, xo = self._lift(x, -1)
            ll, lh, so = self._lift(s, -2)
            hl, hh, do = self._lift(d, -2)
            bands = dict(zip(BANDS_2D, (ll, lh, hl, hh)))
            c_u = c_p = None
            if loss is not None:
                c_u, c_p = distance(s, xo, loss), distance(d, None, loss)
                if loss2 is not None:
                    c_u = c_u + distance(ll, so, loss) + distance(hl, do, loss)
                    c_p = c_p + distance(lh, None, loss) + distance(hh, None, loss)
            y = self._combine(bands)
        self._store_losses(c_u, c_p)
        return y, self._state(bands, size)

    def up(self, y: Tensor, state: LiftState) -> Tensor:
        """LiftUpPool: the exact inverse of ``down`` with this layer's P and U. ``y`` takes the
        place of the pooled output: with bands="sum", LL = y - (LH + HL + HH); with bands="LL"
        (SegNet), y is LL; with "concat", y holds the four bands."""
        b = self._bands_from(y, state)
        if self._fast(y):
            P, U = self.predictor, self.updater
            s = lift_fast.unlift(b["LL"], b["LH"], 2, P, U)
            d = lift_fast.unlift(b["HL"], b["HH"], 2, P, U)
            x = lift_fast.unlift(s, d, 3, P, U)
            if not (y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()):
                x = x.contiguous()
        else:
            s = self._unlift(b["LL"], b["LH"], -2)
            d = self._unlift(b["HL"], b["HH"], -2)
            x = self._unlift(s, d, -1)
        return self._restore_size(x, state.size)


class LiftDownPool1d(_LiftPoolBase):
    """LiftDownPool-1D on (N, C, L): bands "L" (s, the approximation) and "H" (d, the detail);
    bands="sum" outputs s + d. Not a registry entry (the registry's operators are 2-D)."""

    band_names = BANDS_1D
    spatial_dims = 1

    def down(self, x: Tensor) -> tuple[Tensor, LiftState]:
        self._check_input(x)
        size = tuple(x.shape[-1:])
        x = self._make_even(x)
        loss = self.loss if self.training else None
        if self._fast(x):
            (s, d), c_u, c_p = lift_fast.lift_down(x.contiguous().unsqueeze(2), self.predictor,
                                                   self.updater, loss, two_d=False)
            bands = {"L": s, "H": d}
            y = lift_fast.combine([bands[b] for b in self._selected_names()],
                                  self.band_mode == "concat", False).squeeze(2)
            s, d = s.squeeze(2), d.squeeze(2)
        else:
            _ran_reference()
            s, d, xo = self._lift(x.unsqueeze(2), -1)
            s, d, xo = s.squeeze(2), d.squeeze(2), xo.squeeze(2)
            c_u = c_p = None
            if loss is not None:
                c_u, c_p = distance(s, xo, loss), distance(d, None, loss)
            y = self._combine({"L": s, "H": d})
        self._store_losses(c_u, c_p)
        return y, self._state({"L": s, "H": d}, size)

    def up(self, y: Tensor, state: LiftState) -> Tensor:
        b = self._bands_from(y, state)
        if self._fast(y):
            x = lift_fast.unlift(b["L"].unsqueeze(2), b["H"].unsqueeze(2), 3,
                                 self.predictor, self.updater).squeeze(2).contiguous()
        else:
            x = self._unlift(b["L"].unsqueeze(2), b["H"].unsqueeze(2), -1).squeeze(2)
        return self._restore_size(x, state.size)


class LiftUpPool(nn.Module):
    """LiftUpPool: ``forward(y, state)`` is ``down_pool.up(y, state)``, with the paired
    LiftDownPool's P and U (shared parameters, counted once)."""

    def __init__(self, down_pool: _LiftPoolBase):
        super().__init__()
        self.down_pool = down_pool

    def forward(self, y: Tensor, state: LiftState) -> Tensor:
        return self.down_pool.up(y, state)


@register_pool(
    "lift",
    display_name="LiftDownPool",
    paper=PAPER,
    invertible=True,
    notes=(
        "LiftDownPool-2D: horizontal lifting, then vertical liftings of s and d, one learned P "
        "and U per layer (Tanh o Conv1x1(groups=g2) o ReLU o ConvK(groups=g1), no bias unless "
        "bias=true); defaults kernel_size=5 (even K: floor/ceil padding, the extra tap ahead), "
        "g1=g2=C, reflect padding (folded for maps shorter than the padding), bands=sum "
        "(LL+LH+HL+HH; single bands, '+' sums, concat=4C), odd=crop (odd=pad: replicate-pad, "
        "output ceil(H/2), exact inverse; crop: up() puts the dropped row/column back as "
        "zeros); training adds lambda_u*c_u + lambda_p*c_p through auxiliary_losses() (mse, all "
        "three liftings; loss=l2, loss_on=first); up-pooling: pool.up(y, state) or "
        "pool.up_pool() (LiftUpPool, exact inverse, same P and U; y=LL with bands=LL as in "
        "SegNet); impl=fast (default, first-order gradients) equals impl=reference to float "
        "tolerance; injected predictor/updater act along the last dim (reference algorithm)"
    ),
)
def lift_pool(channels: int, kernel_size: int = 5, g1: int | None = None, g2: int | None = None,
              padding_mode: str = "reflect", bands: str = "sum", odd: str = "crop",
              loss: str = "mse", loss_on: str = "all", lambda_u: float = 0.01,
              lambda_p: float = 0.1, impl: str = "fast", predictor: Callable | None = None,
              updater: Callable | None = None, bias: bool = False) -> LiftDownPool2d:
    return LiftDownPool2d(channels, kernel_size=kernel_size, g1=g1, g2=g2,
                          padding_mode=padding_mode, bands=bands, odd=odd, loss=loss,
                          loss_on=loss_on, lambda_u=lambda_u, lambda_p=lambda_p, impl=impl,
                          predictor=predictor, updater=updater, bias=bias)
