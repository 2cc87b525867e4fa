"""Model zoo: CIFAR-sized image classifiers built by name.

Every model takes float images in ``[0, 1]`` of shape ``(B, in_channels, H, W)`` with
``H = W >= 32`` and returns logits ``(B, num_classes)``. Global (adaptive) average pooling
before the classifier makes any input size ``>= 32`` work. If a normalisation is requested,
the model's first child module is :class:`Normalize`, so datasets stay in ``[0, 1]``.

Structural rules that MEDIC relies on (teacher and student layers are paired by qualified
name from ``named_modules()``):

* every convolution, normalisation, linear layer *and* activation is its own submodule, and
  each module is called exactly once per forward pass (no module reused);
* ResNets use ``nn.ReLU(inplace=True)``, as is common in the wild: a norm layer's output is
  overwritten by the ReLU after a forward hook has seen it, so capture code must clone it;
* initialisation draws only from torch's global RNG, so ``torch.manual_seed`` fixes it.

Parameter names follow the code the architectures are usually trained with, so state dicts
from those code bases load directly: ``wrn16_1`` matches NAD / MEDIC's ``WideResNet``
(``conv1``, ``block1.layer.0.bn1``, ``convShortcut``, ``fc``); the ResNets, PreAct-ResNet and
MobileNet-V1 match the widely used CIFAR versions (``layer1.0.conv1``, ``shortcut.0``,
``linear``). A model built with ``normalize`` has two extra buffers, ``normalize.mean`` and
``normalize.std``.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Callable, Sequence, cast

import torch
from torch import nn

from medic_viz.models.options import check_options

__all__ = [
    "available_models",
    "build_model",
    "count_parameters",
    "Normalize",
    "SmallCNN",
    "WideResNet",
    "PreActResNet18",
    "ResNet",
    "VGG11BN",
    "MobileNetV1",
    "MIN_INPUT_SIZE",
]

#: Smallest supported input height/width (five stride-2 stages in VGG-11 need 32).
MIN_INPUT_SIZE = 32


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a layer; ``mean`` and ``std`` are buffers.

    Input and output ``(B, C, H, W)``; ``mean``/``std`` have one value per channel ``C``.
    The buffers are saved in the state dict (so a saved model carries its normalisation)
    but are not parameters (no optimiser touches them).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ValueError(
                f"mean and std must be non-empty sequences of equal length (one value per channel), "
                f"got {len(mean_t)} and {len(std_t)} values"
            )
        if not torch.all(std_t > 0) or not torch.all(torch.isfinite(std_t)):
            raise ValueError(f"std must be positive and finite for every channel, got {std_t.tolist()}")
        if not torch.all(torch.isfinite(mean_t)):
            raise ValueError(f"mean must be finite for every channel, got {mean_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _apply_normalize(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    norm = cast("nn.Module | None", module.normalize)
    return x if norm is None else norm(x)


def _kaiming_init(model: nn.Module) -> None:
    """He-normal convs (fan-out, ReLU), BN weight 1 / bias 0, PyTorch-default linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------
# SmallCNN
# ----------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Four Conv3x3-BN-ReLU blocks, max-pools after the first two, global average pool, Linear.

    Default widths ``(16, 32, 64, 64)`` give 63,483 parameters for 43 classes (about 250 kB
    as float32): small enough to ship and to clone on a laptop CPU, with 8x8 feature maps
    in the last two blocks for a 32x32 input.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64, 64),
        normalize: Normalize | None = None,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"SmallCNN needs exactly 4 positive widths, got {widths}")
        self.normalize = normalize
        c1, c2, c3, c4 = widths
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(c4)
        self.relu4 = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c4, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _apply_normalize(self, x)
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.relu4(self.bn4(self.conv4(x)))
        return self.fc(self.flatten(self.avgpool(x)))


# ----------------------------------------------------------------------------------------
# Wide-ResNet (Zagoruyko & Komodakis), as in NAD / MEDIC
# ----------------------------------------------------------------------------------------


class WideBasicBlock(nn.Module):
    """Pre-activation WRN block: BN-ReLU-Conv3x3-BN-ReLU-(Dropout)-Conv3x3 plus shortcut.

    When the shape changes, BN-ReLU is applied to the input first and both the residual
    branch and the 1x1 ``convShortcut`` read the activated input (as in NAD / MEDIC).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else None
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class _WideStage(nn.Module):
    """``nb_layers`` WRN blocks; the attribute is ``layer`` to match NAD's ``NetworkBlock``."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Wide-ResNet-``depth``-``widen_factor`` for 32x32-style inputs (NAD / MEDIC layout).

    Channels ``16, 16k, 32k, 64k``; ``(depth - 4) / 6`` blocks per stage; stage strides
    1, 2, 2; final BN-ReLU, global average pool, Linear. WRN-16-1 with 10 classes has
    175,066 parameters, exactly NAD's ``WideResNet(depth=16, num_classes=10, widen_factor=1)``.
    """

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 1,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        normalize: Normalize | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40 ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideStage(n, channels[0], channels[1], 1, drop_rate)
        self.block2 = _WideStage(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = _WideStage(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels[3], num_classes)
        # NAD / MEDIC initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _apply_normalize(self, x)
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        return self.fc(self.flatten(self.avgpool(out)))


# ----------------------------------------------------------------------------------------
# ResNet-18/34 and PreAct-ResNet-18 (CIFAR stems)
# ----------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: Conv3x3-BN-ReLU-Conv3x3-BN, + shortcut, ReLU (in-place ReLUs).

    The shortcut is ``Sequential(Conv1x1, BN)`` (names ``shortcut.0``/``shortcut.1``) when
    the shape changes, else the identity (no module).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + identity)


class PreActBlock(nn.Module):
    """Pre-activation block: BN-ReLU-Conv3x3-BN-ReLU-Conv3x3 + shortcut (in-place ReLUs).

    When the shape changes the shortcut is a 1x1 conv (``shortcut.0``) on the activated input.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + identity


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem (stride 1, no max-pool), four stages 64-128-256-512, GAP, Linear.

    ``num_blocks=(2, 2, 2, 2)`` is ResNet-18, ``(3, 4, 6, 3)`` ResNet-34. ``block`` is
    :class:`BasicBlock` (post-activation; stem Conv-BN-ReLU) or :class:`PreActBlock`
    (pre-activation; stem is the conv alone, as in the common CIFAR PreAct-ResNet).
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        block: type[nn.Module] = BasicBlock,
        normalize: Normalize | None = None,
    ) -> None:
        super().__init__()
        num_blocks = tuple(int(n) for n in num_blocks)
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise ValueError(f"ResNet needs 4 positive block counts, got {num_blocks}")
        if block not in (BasicBlock, PreActBlock):
            raise TypeError(f"block must be BasicBlock or PreActBlock, got {block!r}")
        self.normalize = normalize
        pre_act = block is PreActBlock
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = None if pre_act else nn.BatchNorm2d(64)
        self.relu = None if pre_act else nn.ReLU(inplace=True)
        in_planes = 64
        stages = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(512, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _apply_normalize(self, x)
        out = self.conv1(x)
        if self.bn1 is not None and self.relu is not None:
            out = self.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.flatten(self.avgpool(out)))


class PreActResNet18(ResNet):
    """Pre-activation ResNet-18 (He et al. 2016) with a CIFAR stem, as used in BackdoorBench."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, normalize: Normalize | None = None) -> None:
        super().__init__((2, 2, 2, 2), num_classes, in_channels, PreActBlock, normalize)


# ----------------------------------------------------------------------------------------
# VGG-11-BN
# ----------------------------------------------------------------------------------------

_VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11BN(nn.Module):
    """VGG-11 with BatchNorm, CIFAR-sized: ``features`` (8 Conv-BN-ReLU, 5 max-pools), GAP,
    ``classifier`` Linear(512, 512)-ReLU-Linear(512, 512)-ReLU-Linear(512, classes).

    No dropout: the MEDIC paper (appendix E.7) removes VGG's dropout for cloning.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, normalize: Normalize | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        layers: list[nn.Module] = []
        c = in_channels
        for v in _VGG11_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _apply_normalize(self, x)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


# ----------------------------------------------------------------------------------------
# MobileNet-V1
# ----------------------------------------------------------------------------------------

# (out_channels, stride) of the 13 depthwise-separable blocks, CIFAR strides (32 -> 2).
_MOBILENET_CFG: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class DepthwiseSeparable(nn.Module):
    """Depthwise Conv3x3-BN-ReLU then pointwise Conv1x1-BN-ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride=stride, padding=1, groups=in_planes, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(x)))


class MobileNetV1(nn.Module):
    """MobileNet-V1 (Howard et al. 2017) for CIFAR: 3x3 stem of 32 channels at stride 1,
    13 depthwise-separable blocks (total stride 16), GAP, Linear(1024, classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, normalize: Normalize | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        blocks = []
        c = 32
        for out, stride in _MOBILENET_CFG:
            blocks.append(DepthwiseSeparable(c, out, stride))
            c = out
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(1024, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _apply_normalize(self, x)
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.linear(self.flatten(self.avgpool(out)))


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------


def _resnet18(num_classes: int, in_channels: int, normalize: Normalize | None) -> nn.Module:
    return ResNet((2, 2, 2, 2), num_classes, in_channels, BasicBlock, normalize)


def _resnet34(num_classes: int, in_channels: int, normalize: Normalize | None) -> nn.Module:
    return ResNet((3, 4, 6, 3), num_classes, in_channels, BasicBlock, normalize)


def _wrn16_1(num_classes: int, in_channels: int, normalize: Normalize | None, drop_rate: float = 0.0) -> nn.Module:
    return WideResNet(16, 1, num_classes, in_channels, drop_rate, normalize)


def _small_cnn(num_classes: int, in_channels: int, normalize: Normalize | None,
               widths: Sequence[int] = (16, 32, 64, 64)) -> nn.Module:
    return SmallCNN(num_classes, in_channels, widths, normalize)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": _small_cnn,
    "wrn16_1": _wrn16_1,
    "preact_resnet18": lambda num_classes, in_channels, normalize: PreActResNet18(num_classes, in_channels, normalize),
    "resnet18": _resnet18,
    "resnet34": _resnet34,
    "vgg11_bn": lambda num_classes, in_channels, normalize: VGG11BN(num_classes, in_channels, normalize),
    "mobilenet_v1": lambda num_classes, in_channels, normalize: MobileNetV1(num_classes, in_channels, normalize),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, in a stable order (smallest first)."""
    return list(_BUILDERS)


def _positive_int(value: object, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got bool")
    try:
        value = operator.index(value)  # type: ignore[arg-type]  # accepts numpy integers too; TypeError below
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def build_model(
    name: str,
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    input_size: int = 32,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a freshly initialised model by zoo name (see :func:`available_models`).

    ``input_size`` (>= 32) is the height = width the model will see; any size >= 32 works
    because of global average pooling. ``normalize=(mean, std)`` (one value per input
    channel, for inputs in [0, 1]) makes :class:`Normalize` the model's first module.
    Extra keyword options (:mod:`medic_viz.models.options`): ``wrn16_1`` takes ``drop_rate``
    (default 0), ``small_cnn`` takes ``widths`` (4 ints). The model's ``zoo_config`` dict holds
    the arguments that rebuild it. Initialisation uses torch's global RNG only.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    num_classes = _positive_int(num_classes, "num_classes")
    in_channels = _positive_int(in_channels, "in_channels")
    input_size = _positive_int(input_size, "input_size", MIN_INPUT_SIZE)

    builder = _BUILDERS[key]
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("num_classes", "in_channels", "normalize")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        options = ", ".join(accepted) if accepted else "none"
        raise TypeError(f"model {key!r} got unexpected option(s) {unknown}; its extra options are: {options}")

    check_options(key, kwargs)  # types, before anything is built
    norm_layer = None
    normalize_cfg = None
    if normalize is not None:
        if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
            raise TypeError("normalize must be a (mean, std) pair of per-channel sequences, or None")
        mean, std = normalize
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"normalize needs one mean and one std per input channel ({in_channels}), "
                f"got {len(mean)} and {len(std)}"
            )
        norm_layer = Normalize(mean, std)
        normalize_cfg = ([float(m) for m in mean], [float(s) for s in std])

    model = builder(num_classes, in_channels, norm_layer, **kwargs)
    model.zoo_config = {  # type: ignore[assignment]  # a plain attribute (nn.Module's stub allows tensors and modules)
        "name": key,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": input_size,
        "normalize": normalize_cfg,
        **kwargs,
    }
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN statistics and Normalize excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
