"""The model factory: named backbones, each wrapped as Normalize -> backbone, with pool surgery.

A model is named like a pool, ``name[:key=value,...]``; the one backbone option is ``padding``
(``convnet:padding=circular``): the padding mode of every padded backbone convolution. Because
it is part of the name, it is part of the training config, the checkpoint hash and every
result row's ``model`` column; the default (``zeros``) is left out of the canonical name, so
``convnet`` and ``convnet:padding=zeros`` are one model.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Sequence

from torch import Tensor, nn

from ..errors import UsageError
from ..specs import format_spec, parse_spec
from . import cifar, imagenet
from .normalize import Normalize
from .surgery import POLICIES, swap_pools


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    default_policy: str          # where the operator goes unless the caller says otherwise
    input_size: int              # the nominal input size (32: CIFAR-sized, 224: ImageNet-sized)
    description: str = ""
    probe_size: int = 32         # input size of surgery's shape-tracing pass (cheap, and valid)
    memory_format: str | None = None  # the faster one where measured ("channels_last" / "contiguous")


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, builder: Callable[..., nn.Module], *, default_policy: str,
                   input_size: int, description: str = "", probe_size: int = 32,
                   memory_format: str | None = None) -> ModelInfo:
    """Register ``builder(num_classes=..., in_chans=...) -> nn.Module`` under ``name``."""
    if default_policy not in POLICIES:
        raise UsageError(f"default_policy must be one of {', '.join(POLICIES)}, got {default_policy!r}")
    info = ModelInfo(name, builder, default_policy, input_size, description, probe_size, memory_format)
    _MODELS[name] = info
    return info


# convnet: one conv-BN-ReLU per stage keeps training above 1,000 images/s on 2 CPU cores at
# batch 128 (two per stage measured 560-660 images/s on one free core); channels_last is faster.
register_model("convnet", cifar.ConvNet, default_policy="maxpool", input_size=32,
               memory_format="channels_last",
               description="small VGG-style net for 32x32: 3 stages (32/64/128), 3 max pools, GAP, linear")
register_model("vgg13_bn_cifar", lambda **kw: cifar.VGGCifar(cifar.VGG13_CFG, **kw),
               default_policy="maxpool", input_size=32,
               description="VGG13 with BatchNorm for 32x32, five max pools, linear 512 -> classes")
register_model("resnet18_cifar", cifar.ResNetCifar, default_policy="downsampling", input_size=32,
               description="ResNet18 for 32x32: 3x3 stem, no stem max pool; pooling points are its "
                           "stride-2 convs (policy downsampling)")
register_model("resnet18", imagenet.resnet18, default_policy="maxpool", input_size=224,
               description="torchvision ResNet18 (weights=None); maxpool policy: the stem pool only")
register_model("resnet50", imagenet.resnet50, default_policy="maxpool", input_size=224,
               description="torchvision ResNet50 (weights=None); maxpool policy: the stem pool only")
register_model("vgg13", imagenet.vgg13, default_policy="maxpool", input_size=224,
               description="torchvision VGG13 (weights=None): all five max pools")
register_model("mobilenet_v2", imagenet.mobilenet_v2, default_policy="downsampling", input_size=224,
               description="torchvision MobileNetV2 (weights=None); no max pool: stride-2 convs")


PADDINGS = ("zeros", "circular", "reflect", "replicate")
DEFAULT_PADDING = "zeros"


def parse_model(name: str) -> tuple[str, str]:
    """``"convnet:padding=circular"`` -> ``("convnet", "circular")``; an unknown option or padding
    mode is a one-line UsageError naming the accepted ones."""
    try:
        key, options = parse_spec(str(name))
    except UsageError as exc:
        raise UsageError(f"bad model {name!r}: {exc}") from None
    key = key.replace("-", "_")
    unknown = sorted(set(options) - {"padding"})
    if unknown:
        raise UsageError(f"model {name!r} has no option {unknown[0]!r}; the backbone option is "
                         f"padding={'|'.join(PADDINGS)}")
    padding = str(options.get("padding", DEFAULT_PADDING)).lower()
    if padding not in PADDINGS:
        raise UsageError(f"unknown padding {padding!r} in model {name!r}; choose one of {', '.join(PADDINGS)}")
    return key, padding


def model_spec(name: str, padding: str | None = None) -> str:
    """The canonical model name, ``padding`` (when given) replacing the name's own; the default
    padding is left out, so existing names, hashes and checkpoints stay what they were."""
    key, own = parse_model(name)
    padding = own if padding is None else parse_model(f"{key}:padding={padding}")[1]
    return format_spec(key, {} if padding == DEFAULT_PADDING else {"padding": padding})


def set_padding(module: nn.Module, padding: str) -> int:
    """Set the padding mode of every padded Conv2d in ``module``; returns how many changed.

    Call it before pool surgery: the convolutions inside a pooling operator are the operator's
    own business (LPS pads its scorer circularly whatever the backbone does).
    """
    changed = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and any(p > 0 for p in m._reversed_padding_repeated_twice):
            # Conv2d keeps the F.pad amounts for any mode, so switching the mode is enough
            m.padding_mode = padding
            changed += 1
    return changed


def list_models() -> list[str]:
    """Names of the available backbones, sorted."""
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    """The ModelInfo registered under ``name`` (options such as ``:padding=circular`` allowed);
    an unknown name raises UsageError with close matches."""
    key = parse_model(name)[0]
    info = _MODELS.get(key)
    if info is None:
        close = difflib.get_close_matches(key, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown model {name!r}{hint} (available: {', '.join(list_models())})")
    return info


class PoolNet(nn.Module):
    """``normalize`` (raw [0, 1] images in) followed by ``backbone``."""

    def __init__(self, normalize: Normalize, backbone: nn.Module, info: ModelInfo, in_chans: int):
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.model_name = info.name
        self.input_size = info.input_size
        self.probe_size = info.probe_size
        self.in_chans = in_chans
        self.memory_format = info.memory_format
        self.padding = DEFAULT_PADDING
        self.pool_spec: str | None = None
        self.pool_policy: str | None = None
        self.pool_sites: list[str] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))


def create_model(name: str, num_classes: int, *, pool: str | None = "max", policy: str | None = None,
                 mean: Sequence[float] | float | None = None, std: Sequence[float] | float | None = None,
                 in_chans: int = 3, padding: str | None = None) -> PoolNet:
    """Build backbone ``name`` for ``num_classes`` classes with the operator ``pool`` at its
    pooling points under ``policy`` (None: the model's default policy).

    ``padding`` (None: the name's own, e.g. ``convnet:padding=circular``, else zeros) is the
    padding mode of the backbone's padded convolutions; ``circular`` with circular shifts makes
    a network built of circular convolutions and polyphase pools (aps, lps) exactly shift-invariant.

    ``pool=None`` keeps the backbone exactly as published (its own max pools and stride-2
    convs); any spec, ``"max"`` included, goes through the same surgery, so every operator is
    compared at the same places. ``mean``/``std`` (None: 0 and 1) normalise raw [0, 1] inputs
    inside the model.
    """
    info = model_info(name)
    padding = parse_model(model_spec(name, padding))[1]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise UsageError(f"in_chans must be a positive integer, got {in_chans!r}")
    if policy is not None and policy not in POLICIES:
        close = difflib.get_close_matches(str(policy), POLICIES, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown pool policy {policy!r}{hint} (choose one of {', '.join(POLICIES)})")
    normalize = Normalize(mean, std, channels=in_chans)
    model = PoolNet(normalize, info.builder(num_classes=num_classes, in_chans=in_chans), info, in_chans)
    if padding != DEFAULT_PADDING:
        set_padding(model.backbone, padding)
    model.padding = padding
    if pool is not None:
        swap_pools(model, pool, policy or info.default_policy)
    return model
