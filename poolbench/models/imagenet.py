"""torchvision backbones for ImageNet-sized inputs, built with ``weights=None`` (random init;
poolbench never downloads weights)."""
from __future__ import annotations

from torch import nn


def _torchvision_models():
    # imported on first use: torchvision would add about 1.4 s to ``import poolbench``
    import torchvision.models as tvm  # noqa: PLC0415

    return tvm


def replace_first_conv(model: nn.Module, in_chans: int) -> nn.Module:
    """Swap the first Conv2d for one taking ``in_chans`` input channels (same geometry)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_chans:
        return model
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def _build(fn_name: str, num_classes: int, in_chans: int) -> nn.Module:
    model = getattr(_torchvision_models(), fn_name)(weights=None, num_classes=num_classes)
    return replace_first_conv(model, in_chans)


def resnet18(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return _build("resnet18", num_classes, in_chans)


def resnet50(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return _build("resnet50", num_classes, in_chans)


def vgg13(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return _build("vgg13", num_classes, in_chans)


def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return _build("mobilenet_v2", num_classes, in_chans)
