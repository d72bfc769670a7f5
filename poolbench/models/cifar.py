"""Backbones for 32x32 inputs (CIFAR-sized): the small default ConvNet, VGG13-BN and ResNet18.

Each is built with plain ``nn.MaxPool2d(2, 2)`` / stride-2 convolutions at its pooling points;
pool surgery (``surgery.swap_pools``) puts the operator under test there.
"""
from __future__ import annotations

from torch import Tensor, nn


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PooledClassifier(nn.Module):
    """``layers`` as ``features``, a global average pool and one linear layer from ``channels``
    (the attribute names are the checkpoints' keys)."""

    def __init__(self, layers: list[nn.Module], channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class ConvNet(_PooledClassifier):
    """Small VGG-style net: per stage ``convs`` x (conv3x3-BN-ReLU), then a 2x2 max pool;
    global average pool and one linear layer. Three pooling stages: 32 -> 16 -> 8 -> 4."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, ...] = (32, 64, 128), convs: tuple[int, ...] = (1, 1, 1)):
        layers: list[nn.Module] = []
        c = in_chans
        for width, n in zip(widths, convs):
            for _ in range(n):
                layers += conv_bn_relu(c, width)
                c = width
            layers.append(nn.MaxPool2d(2, 2))
        super().__init__(layers, c, num_classes)


VGG13_CFG = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGGCifar(_PooledClassifier):
    """VGG with BatchNorm for 32x32 inputs, as in the common CIFAR VGG: the conv stack and five
    max pools (32 -> 1), then one linear layer 512 -> num_classes. An adaptive average pool
    before it is the identity at 32x32 and lets larger inputs through."""

    def __init__(self, cfg=VGG13_CFG, num_classes: int = 10, in_chans: int = 3):
        layers: list[nn.Module] = []
        c = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += conv_bn_relu(c, v)
                c = v
        super().__init__(layers, c, num_classes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetCifar(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem at stride 1 and no stem max pool, four stages of
    BasicBlocks (64, 128, 256, 512; stride 1, 2, 2, 2), global average pool, linear.

    It has no max pool: its pooling points are its three stride-2 stages (the first conv of the
    block and its 1x1 shortcut), so its default policy is ``downsampling``.
    """

    def __init__(self, blocks=(2, 2, 2, 2), num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        c = 64
        stages = []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c, width, stride=2 if (i > 0 and j == 0) else 1))
                c = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
