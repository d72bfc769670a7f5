"""A small SegNet-style encoder-decoder with paired down/up-pooling (LiftPool paper, Sec. 4.4).

Encoder: ``len(widths)`` stages (default 16/32/64) of (conv3x3-BN-ReLU) x ``convs`` then a DOWN-pool. Decoder, the
mirror: each stage starts with the UP-pool paired with the encoder pool of the same depth, then
(conv3x3-BN-ReLU) x ``convs``, the last conv of a stage producing the channels that the next
up-pool expects; a 1x1 classifier gives ``num_classes`` logits per pixel. No skip connections
other than the pooling state (SegNet's indices, LiftPool's detail bands).

Up-pooling goes through the registry's protocol: any invertible pool spec works, its ``down(x)
-> (y, state)`` in the encoder and ``up(y', state)`` in the decoder with the decoder feature
``y'`` in the place of ``y``. ``upsample="bilinear"`` instead pairs any pool (invertible or not)
with x2 bilinear upsampling to the recorded size.

Named variants (``VARIANTS``; the first four are what the segmentation suite runs by default):

| variant          | down-pool            | up-pool                                           |
|------------------|----------------------|---------------------------------------------------|
| max_unpool       | max (with indices)   | MaxUnpool (SegNet's baseline)                     |
| max_unpool_blur  | max:up=unpool_blur   | MaxUnpool + 3x3 binomial blur                     |
| lift             | lift:bands=LL        | LiftUpPool: decoder feature as LL + recorded LH/HL/HH, same P/U |
| bilinear         | max                  | bilinear x2 upsampling (extra baseline)           |
| adapool          | adapool              | adaUnPool: the decoder feature split over each window by the recorded eDSCW/eM weights |

``resolve_variant(spec)`` maps a pool spec to a variant with one rule: ``max`` (any options) ->
max_unpool or max_unpool_blur by its ``up`` option; ``lift`` -> lift with ``bands=LL`` added
unless the spec names bands (any bands value stays invertible: with a sum, LL = y' - details;
with ``concat`` the decoder feature carries 4C channels); any other invertible pool -> its own
up-pool (variant named like the pool: ``aps`` puts the decoder feature back at the phase its
encoder pool kept, ``lps`` with LPU likewise, ``adapool`` with adaUnPool); a non-invertible pool
-> ``bilinear_<name>`` (bilinear upsampling of that pool's output, e.g. ``bilinear_avg``; such
names are accepted back, as is ``bilinear_<spec>``); the word ``bilinear`` -> max + bilinear.

Inputs whose sides are not multiples of 2**stages are replicate-padded up to one and the logits
cropped back, so every variant handles any size >= 1 with the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError, one_line
from ..registry import format_spec, get_pool, get_spec, parse_spec
from .normalize import Normalize

UPSAMPLE_MODES = ("paired", "bilinear")
# 16/32/64: at the CPU quick recipe (shapes-seg, 2000 images, 16 epochs) it reaches the mIoU of
# a 32/64/128 SegNet at about a quarter of the cost (measured: 12 epochs, max_unpool, 37.0 vs
# 34.8 mIoU); wider nets are one argument (or the suite's ``widths`` option) away.
DEFAULT_WIDTHS = (16, 32, 64)
MODEL_NAME = "segnet"


def segnet_model_name(widths: Sequence[int] = DEFAULT_WIDTHS) -> str:
    """``"segnet"`` for the default widths, else ``"segnet-32-64-128"``: the name a result row and
    a checkpoint's config carry, so that different widths never share a checkpoint."""
    widths = tuple(int(w) for w in widths)
    return MODEL_NAME if widths == DEFAULT_WIDTHS else "-".join([MODEL_NAME, *map(str, widths)])


def segnet_widths(model: str) -> tuple[int, ...]:
    """Inverse of ``segnet_model_name``."""
    name = str(model).strip().lower()
    if name == MODEL_NAME:
        return DEFAULT_WIDTHS
    head, _, rest = name.partition("-")
    try:
        widths = tuple(int(w) for w in rest.split("-"))
    except ValueError:
        widths = ()
    if head != MODEL_NAME or not widths or min(widths) < 1:
        raise UsageError(f"unknown segmentation model {model!r}; use 'segnet' (widths "
                         f"{'/'.join(map(str, DEFAULT_WIDTHS))}) or 'segnet-W1-W2-...' (e.g. segnet-32-64-128)")
    return widths


@dataclass(frozen=True)
class Variant:
    """An up-pooling variant: a display name, the down-pool spec (canonical) and how to go up."""

    name: str
    pool: str            # canonical pool spec of the down-pool
    upsample: str        # "paired" (the pool's own up) or "bilinear"


VARIANTS: dict[str, Variant] = {
    "max_unpool": Variant("max_unpool", "max", "paired"),
    "max_unpool_blur": Variant("max_unpool_blur", "max:up=unpool_blur", "paired"),
    "lift": Variant("lift", "lift:bands=LL", "paired"),
    "bilinear": Variant("bilinear", "max", "bilinear"),
    "adapool": Variant("adapool", "adapool", "paired"),
}


def resolve_variant(spec: str, upsample: str | None = None) -> Variant:
    """The variant for a variant name (``VARIANTS``) or a pool spec; see the module docstring.

    ``upsample="bilinear"`` forces bilinear upsampling after any pool (named ``bilinear`` for
    max, ``bilinear_<name>`` otherwise); ``"paired"`` requires an invertible pool.
    """
    if upsample is not None and upsample not in UPSAMPLE_MODES:
        raise UsageError(f"unknown upsample {upsample!r}; choose one of {', '.join(UPSAMPLE_MODES)}")
    key = str(spec).strip()
    if key.lower().replace("-", "_") in VARIANTS:
        v = VARIANTS[key.lower().replace("-", "_")]
        if upsample is None or upsample == v.upsample:
            return v
        key = v.pool
    if key.lower().startswith("bilinear_") and upsample in (None, "bilinear"):
        key, upsample = key[len("bilinear_"):], "bilinear"   # the names this function gives back
    name, options = parse_spec(key)
    pool_spec = get_spec(name)
    if name == "lift" and "bands" not in options:
        options["bands"] = "LL"
    canonical = format_spec(name, options)
    if upsample is None:
        upsample = "paired" if pool_spec.invertible else "bilinear"
    if upsample == "bilinear":
        return Variant("bilinear" if name == "max" else f"bilinear_{name}", canonical, "bilinear")
    if not pool_spec.invertible:
        raise UsageError(
            f"pool {name!r} has no up-pooling partner (not invertible); use upsample='bilinear' "
            "or an invertible pool (max, lift)")
    if name == "max":
        vname = "max_unpool_blur" if options.get("up") == "unpool_blur" else "max_unpool"
    else:
        vname = name
    return Variant(vname, canonical, "paired")


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class BilinearUp(nn.Module):
    """Wraps a down-pool; ``down`` records the input size, ``up`` is bilinear upsampling to it."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)

    def down(self, x: Tensor):
        return self.pool(x), {"size": tuple(x.shape[-2:])}

    def up(self, y: Tensor, state) -> Tensor:
        return F.interpolate(y, size=state["size"], mode="bilinear", align_corners=False)


class SegNet(nn.Module):
    """SegNet-style encoder-decoder; ``forward`` maps raw [0, 1] images (N, C, H, W) to logits
    (N, num_classes, H, W). ``pools[i]`` is the down/up pair of encoder stage i."""

    def __init__(self, num_classes: int, down_up: str = "max", *, upsample: str | None = None,
                 widths: Sequence[int] = DEFAULT_WIDTHS, convs: int = 2, in_chans: int = 3,
                 mean=None, std=None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise UsageError(f"widths must be a non-empty list of positive integers, got {widths!r}")
        if convs < 1:
            raise UsageError(f"convs must be >= 1, got {convs!r}")
        self.variant = resolve_variant(down_up, upsample)
        self.widths = widths
        self.num_classes = num_classes
        self.normalize = Normalize(mean, std, channels=in_chans)

        self.encoder = nn.ModuleList()
        self.pools = nn.ModuleList()
        pooled, unpooled = [], []         # channels after down / after up, per stage
        cin = in_chans
        for w in widths:
            self.encoder.append(nn.Sequential(*[conv_bn_relu(cin if i == 0 else w, w) for i in range(convs)]))
            pool = get_pool(self.variant.pool, w)
            if self.variant.upsample == "bilinear":
                pool = BilinearUp(pool)
            elif not callable(getattr(pool, "down", None)) or not callable(getattr(pool, "up", None)):
                raise UsageError(f"pool {self.variant.pool!r} is registered invertible but has no "
                                 "down()/up(); fix the operator or use upsample='bilinear'")
            c_down, c_up = _probe_channels(pool, w)
            self.pools.append(pool)
            pooled.append(c_down)
            unpooled.append(c_up)
            cin = c_down

        self.decoder = nn.ModuleList()
        for i in reversed(range(len(widths))):
            c_in = unpooled[i]
            c_out = pooled[i - 1] if i > 0 else widths[0]
            layers = [conv_bn_relu(c_in if j == 0 else widths[i], widths[i] if j < convs - 1 else c_out)
                      for j in range(convs)]
            self.decoder.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def stages(self) -> int:
        return len(self.widths)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.stages
        ph, pw = (-h) % m, (-w) % m
        x = self.normalize(x)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        states = []
        for enc, pool in zip(self.encoder, self.pools):
            x, state = pool.down(enc(x))
            states.append(state)
        for dec, pool, state in zip(self.decoder, reversed(self.pools), reversed(states)):
            x = dec(pool.up(x, state))
        x = self.classifier(x)
        return x[..., :h, :w] if (ph or pw) else x


def _probe_channels(pool: nn.Module, channels: int) -> tuple[int, int]:
    """(channels after down, channels after up) of a pool, from one tiny eval-mode pass."""
    was_training = pool.training
    pool.eval()
    try:
        with torch.no_grad():
            probe = torch.zeros(1, channels, 4, 4)
            y, state = pool.down(probe)
            x = pool.up(y, state)
    except Exception as exc:
        raise UsageError(f"pool {type(pool).__name__} failed a down/up probe at {channels} channels "
                         f"({one_line(exc, with_type=True)}); fix the operator or use upsample='bilinear'") from exc
    finally:
        pool.train(was_training)
    if tuple(x.shape[-2:]) != (4, 4):
        raise UsageError(f"pool {type(pool).__name__}: up(down(x)) returned size {tuple(x.shape[-2:])} "
                         "for a 4x4 input; an up-pool must restore the input size")
    return int(y.shape[1]), int(x.shape[1])


def create_segnet(num_classes: int, down_up: str = "max", *, upsample: str | None = None,
                  widths: Sequence[int] = DEFAULT_WIDTHS, convs: int = 2, in_chans: int = 3,
                  mean=None, std=None) -> SegNet:
    """SegNet for ``num_classes`` classes with the down/up pair named by ``down_up`` (a variant
    name from ``VARIANTS`` or a pool spec, e.g. ``"lift:bands=LL"``; see ``resolve_variant``)."""
    return SegNet(num_classes, down_up, upsample=upsample, widths=widths, convs=convs,
                  in_chans=in_chans, mean=mean, std=std)
