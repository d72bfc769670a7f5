"""Pool surgery: put a registered pooling operator at every pooling point of a backbone.

Policies
--------
``maxpool``
    Every ``nn.MaxPool2d`` with stride 2 (any kernel: VGG's 2x2/2, ResNet's 3x3/2 pad-1 stem
    pool) becomes the operator. Its channel count is read from a shape-tracing forward pass
    (a tiny probe input, forward pre-hooks), so it works for any model whose pools are modules.
``downsampling``
    Every spatial downsampling layer gets the operator: each stride-2 ``nn.Conv2d`` becomes
    stride 1 followed by the operator (conv -> op -> BN -> ...); a 1x1 stride-2 conv without
    padding (a ResNet shortcut) gets the operator BEFORE it instead (op -> 1x1 conv at stride 1),
    as anti-aliased ResNets do; MobileNetV2's stride-2 depthwise convs become stride 1 + op.
    Max pools are swapped as under ``maxpool`` too, so no baseline max pool is left behind.
    This raises FLOPs (the conv runs at full resolution) and the efficiency suite reports it.

Output sizes
------------
Every operator maps H to H//2 (docs/pools.md). The layers it replaces may not: a 3x3/2 pad-1 conv
or max pool gives ceil(H/2). Each operator therefore sits in a ``PoolSite`` that knows the
replaced layer's output-size rule and, only where the two differ (odd sizes), pads the input
by replicating its last row/column (or crops it) so the output has exactly the baseline's
size. For the standard input sizes (32, 64, 224) every pooling point of the built-in models
sees even sizes, so no padding or cropping ever happens there; odd sizes still match the
baseline's shapes instead of failing later at a residual addition.

Modules that already are ``PoolSite`` are swapped again (their operator is replaced), so a
model can go from one operator to another; modules inside an operator are never touched.
Pools called as functions (``F.max_pool2d`` in ``forward``) are invisible to surgery.
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..registry import format_spec, get_pool, get_spec, parse_spec

POLICIES = ("maxpool", "downsampling")
DEFAULT_PROBE_SIZE = 32


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PoolSite(nn.Module):
    """A pooling operator (``self.op``) at a model's pooling point, giving the output size the
    replaced stride-2 layer gave: ``floor_or_ceil((H + 2p - d(k-1) - 1) / 2) + 1`` per dim with
    that layer's kernel k, padding p, dilation d and ceil_mode (k=1, p=0, i.e. ceil(H/2), for
    an operator placed after a stride-1 conv or before a 1x1 shortcut conv).
    """

    def __init__(self, op: nn.Module, channels: int, *, spec: str = "", origin: str = "maxpool",
                 kernel_size=2, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self.op = op
        self.channels = int(channels)
        self.spec = spec
        self.origin = origin  # "maxpool" or "conv"
        self.kernel_size = _pair(kernel_size)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.ceil_mode = bool(ceil_mode)
        self._checking: str | None = None  # set to the site's name during validation

    def output_size(self, size: int, dim: int) -> int:
        """The replaced layer's output size along ``dim`` (0: H, 1: W) for input ``size``."""
        k, p, d = self.kernel_size[dim], self.padding[dim], self.dilation[dim]
        span = size + 2 * p - d * (k - 1) - 1
        out = (-(-span // 2) if self.ceil_mode else span // 2) + 1
        if self.ceil_mode and (out - 1) * 2 >= size + p:
            out -= 1
        return out

    def fit(self, x: Tensor) -> Tensor:
        """Pad (replicate) or crop the bottom/right so the operator's H//2 is the target size."""
        h, w = x.shape[-2:]
        th, tw = self.output_size(h, 0), self.output_size(w, 1)
        if h // 2 == th and w // 2 == tw:
            return x
        if th < 1 or tw < 1:
            raise UsageError(f"input {h}x{w} is too small for this pooling point")
        if h > 2 * th + 1 or w > 2 * tw + 1:
            x = x[..., : min(h, 2 * th), : min(w, 2 * tw)]
            h, w = x.shape[-2:]
        pad_h, pad_w = max(0, 2 * th - h), max(0, 2 * tw - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.fit(x)
        if self._checking is not None:
            return self._checked(x)
        return self.op(x)

    def _checked(self, x: Tensor) -> Tensor:
        where = f"pool {self.spec!r} at layer {self._checking!r} ({self.channels} channels)"
        try:
            y = self.op(x)
        except Exception as exc:
            raise UsageError(f"{where} failed on input {tuple(x.shape)}: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        n, c, h, w = x.shape
        want = (n, c, h // 2, w // 2)
        if not isinstance(y, Tensor) or tuple(y.shape) != want:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise UsageError(f"{where} returned {got} for input {tuple(x.shape)}, expected {want}; "
                             "an operator must map (N, C, H, W) to (N, C, H//2, W//2)")
        return y

    def extra_repr(self) -> str:
        rule = ("ceil(H/2)" if self.kernel_size == (1, 1) and self.padding == (0, 0)
                and not self.ceil_mode else
                f"like k={self.kernel_size}, s=2, p={self.padding}, ceil_mode={self.ceil_mode}")
        return f"channels={self.channels}, spec={self.spec!r}, origin={self.origin!r}, out={rule}"


@dataclass
class _Site:
    name: str
    module: nn.Module
    kind: str            # "site" (an existing PoolSite), "maxpool", "conv_after", "conv_before"
    channels: int | None = None


def pool_sites(model: nn.Module) -> list[tuple[str, PoolSite]]:
    """(qualified name, PoolSite) of every pooling point in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PoolSite)]


def _modules_outside_sites(model: nn.Module):
    """named_modules() without descending into PoolSites (an operator's insides are its own)."""
    def walk(module: nn.Module, prefix: str):
        yield prefix, module
        if isinstance(module, PoolSite):
            return
        for name, child in module.named_children():
            yield from walk(child, f"{prefix}.{name}" if prefix else name)
    yield from walk(model, "")


def _model_label(model: nn.Module) -> str:
    return repr(getattr(model, "model_name", None) or type(model).__name__)


def _find_sites(model: nn.Module, policy: str) -> list[_Site]:
    sites = []
    for name, m in _modules_outside_sites(model):
        if isinstance(m, PoolSite):
            sites.append(_Site(name, m, "site", m.channels))
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.stride) != (2, 2):
                raise UsageError(
                    f"layer {name!r} is a MaxPool2d with stride {m.stride}; only stride-2 pools are "
                    "pooling points (a pooling operator halves H and W)")
            if m.return_indices:
                raise UsageError(
                    f"layer {name!r} is a MaxPool2d with return_indices=True; pair it with its "
                    "unpooling layer in the model instead of swapping it alone")
            sites.append(_Site(name, m, "maxpool"))
        elif policy == "downsampling" and isinstance(m, nn.Conv2d):
            stride = _pair(m.stride)
            if stride == (1, 1):
                continue
            if stride != (2, 2):
                raise UsageError(f"layer {name!r} is a conv with stride {stride}; the downsampling "
                                 "policy handles stride 2 only")
            if _pair(m.kernel_size) == (1, 1) and m.padding in ((0, 0), 0, "valid"):
                sites.append(_Site(name, m, "conv_before", m.in_channels))
            else:
                sites.append(_Site(name, m, "conv_after", m.out_channels))
    return sites


def _probe_input(model: nn.Module, input_size, in_chans) -> Tensor:
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), torch.empty(0))
    if in_chans is None:
        in_chans = getattr(model, "in_chans", None)
    if in_chans is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise UsageError(f"cannot tell the input channels of {_model_label(model)}; pass in_chans=")
        in_chans = conv.in_channels
    size = input_size or getattr(model, "probe_size", None) or DEFAULT_PROBE_SIZE
    h, w = _pair(size)
    gen = torch.Generator().manual_seed(0)  # leaves the global RNG (and so seeding) untouched
    x = torch.rand(2, in_chans, h, w, generator=gen)
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    return x.to(device=ref.device, dtype=dtype)


def _probe_forward(model: nn.Module, x: Tensor, what: str) -> None:
    try:
        with torch.no_grad():
            model(x)
    except UsageError:
        raise
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise UsageError(f"{what} of {_model_label(model)} with a {tuple(x.shape)} probe input "
                         f"failed ({msg}); pass input_size= an input size the model accepts") from exc


def _trace_maxpool_channels(model: nn.Module, sites: list[_Site], x: Tensor) -> None:
    seen: dict[str, set[int]] = {s.name: set() for s in sites}
    handles = []
    for s in sites:
        def hook(_mod, args, _name=s.name):
            seen[_name].add(int(args[0].shape[1]))
        handles.append(s.module.register_forward_pre_hook(hook))
    try:
        _probe_forward(model, x, "the shape-tracing forward pass")
    finally:
        for h in handles:
            h.remove()
    for s in sites:
        chans = seen[s.name]
        if not chans:
            raise UsageError(f"layer {s.name!r} (MaxPool2d) is never called in the forward pass; "
                             "remove it or call it, so its channel count can be traced")
        if len(chans) > 1:
            raise UsageError(f"layer {s.name!r} (MaxPool2d) is called on {sorted(chans)} channels; "
                             "give each call its own nn.MaxPool2d so each gets its own operator")
        s.channels = chans.pop()


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def swap_pools(model: nn.Module, spec: str, policy: str = "maxpool", *,
               input_size: int | tuple[int, int] | None = None,
               in_chans: int | None = None, validate: bool = True) -> nn.Module:
    """Put the operator named by ``spec`` at every pooling point of ``model`` under ``policy``.

    Changes ``model`` in place and returns it, with ``model.pool_sites`` (qualified names of
    the ``PoolSite`` modules; ``len()`` is the number of replaced layers), ``model.pool_spec``
    and ``model.pool_policy`` set. ``input_size`` is the probe size for the shape-tracing and
    validation forward passes (default: ``model.probe_size`` or 32). A pool that cannot be built
    at a layer, fails there, or returns the wrong shape raises UsageError naming both; the model
    may then be left partly swapped (build a fresh one).
    """
    if policy not in POLICIES:
        close = difflib.get_close_matches(str(policy), POLICIES, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown pool policy {policy!r}{hint} (choose one of {', '.join(POLICIES)})")
    name, options = parse_spec(spec)
    get_spec(name)  # an unknown pool fails here, once, with its close matches
    spec_text = format_spec(name, options)

    sites = _find_sites(model, policy)
    if not sites:
        extra = (" (it has no nn.MaxPool2d; its pooling points are stride-2 convs: use "
                 "policy='downsampling')" if policy == "maxpool" else "")
        raise UsageError(f"{_model_label(model)} has no pooling point under policy {policy!r}{extra}")

    was_training = model.training
    flags = {id(m): m.training for m in model.modules()}
    model.eval()
    try:
        probe = _probe_input(model, input_size, in_chans)
        untraced = [s for s in sites if s.kind == "maxpool"]
        if untraced:
            _trace_maxpool_channels(model, untraced, probe)

        ref = next(iter(model.parameters()), None)
        for s in sites:
            try:
                op = get_pool(spec, s.channels)
            except Exception as exc:
                msg = f"{exc}" if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
                raise UsageError(f"pool {spec_text!r} could not be built at layer {s.name!r} "
                                 f"({s.channels} channels): {msg}".splitlines()[0]) from exc
            if ref is not None:
                op = op.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
            if s.kind == "site":
                s.module.op = op
                s.module.spec = spec_text
                continue
            if s.kind == "maxpool":
                m = s.module
                site = PoolSite(op, s.channels, spec=spec_text, origin="maxpool",
                                kernel_size=m.kernel_size, padding=m.padding,
                                dilation=m.dilation, ceil_mode=m.ceil_mode)
                _set_child(model, s.name, site)
                continue
            conv = s.module
            conv.stride = (1, 1)
            site = PoolSite(op, s.channels, spec=spec_text, origin="conv", kernel_size=1, padding=0)
            pair = [("conv", conv), ("pool", site)]
            _set_child(model, s.name, nn.Sequential(OrderedDict(
                pair if s.kind == "conv_after" else pair[::-1])))

        sites_now = pool_sites(model)
        if validate:
            for site_name, site in sites_now:
                site._checking = site_name
            try:
                _probe_forward(model, probe, "the validation forward pass")
            finally:
                for _, site in sites_now:
                    site._checking = None
    finally:
        for m in model.modules():
            m.training = flags.get(id(m), was_training)

    model.pool_sites = [n for n, _ in sites_now]
    model.pool_spec = spec_text
    # sites from an earlier downsampling swap stay where they are
    model.pool_policy = ("downsampling" if any(s.origin == "conv" for _, s in sites_now)
                         else policy)
    return model
