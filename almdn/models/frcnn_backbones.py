"""The Faster R-CNN backbones (FPN on ResNet-50, MobileNetV2, MobileNetV3-Large) and each
architecture's sizes: what :func:`almdn.models.frcnn.build_frcnn` builds from."""

from __future__ import annotations

import functools
from typing import Any

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from almdn.models.backbones import load_imagenet_state_dict


def _norm_and_trainable(state: dict | None, frozen_batchnorm: bool | None, trainable: int | None, all_layers: int):
    """torchvision's rule: frozen BatchNorm and 3 trainable stages on ImageNet weights, plain
    BatchNorm and every stage trainable from scratch. Explicit values (a checkpoint's) win."""
    loaded = state is not None
    frozen = loaded if frozen_batchnorm is None else frozen_batchnorm
    return frozen, (3 if loaded else all_layers) if trainable is None else trainable


def _resnet50_fpn(pretrained: bool, frozen_batchnorm: bool | None, trainable: int | None, fpn_channels: int, v2: bool = False):
    """torchvision's ResNet-50 FPN backbone. ``v2`` (fasterrcnn_resnet50_fpn_v2): trainable
    BatchNorm in the ResNet and in the FPN (its COCO weights carry BatchNorm statistics, so
    BatchNorm is never frozen)."""
    from torchvision.models import ResNet50_Weights, resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # no public FPN-extractor builder

    state = load_imagenet_state_dict(ResNet50_Weights.IMAGENET1K_V1, "ResNet-50") if pretrained else None
    frozen, trainable = _norm_and_trainable(state, frozen_batchnorm, trainable, 5)
    frozen = frozen and not v2
    net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    if state is not None:
        net.load_state_dict(state)
    backbone = _resnet_fpn_extractor(net, trainable, norm_layer=nn.BatchNorm2d if v2 else None)
    if fpn_channels != backbone.out_channels:
        raise ValueError("torchvision's ResNet-50 FPN has 256 channels")
    return backbone, ["0", "1", "2", "3"], frozen, trainable


def _mobilenet_v2_fpn(pretrained: bool, frozen_batchnorm: bool | None, trainable: int | None, fpn_channels: int):
    """ImageNet MobileNetV2 (offline weights exist, see backbones.py) with an FPN on the ends
    of its stride-8, 16 and 32 stages. torchvision's MobileNet FPN taps two stride-32 maps,
    too coarse for small objects at low resolution."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    state = load_imagenet_state_dict(MobileNet_V2_Weights.IMAGENET1K_V1, "MobileNetV2") if pretrained else None
    strided = [i for i, block in enumerate(mobilenet_v2().features) if getattr(block, "_is_cn", False)]
    frozen, trainable = _norm_and_trainable(state, frozen_batchnorm, trainable, len(strided) + 1)
    net = mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    if state is not None:
        net.load_state_dict(state)
    features = net.features
    # Stage s starts at block stage_starts[s]; freeze the stages before the last `trainable`.
    stage_starts = [0, *strided]
    if not 0 <= trainable <= len(stage_starts):
        raise ValueError(f"trainable_backbone_layers must be in [0, {len(stage_starts)}] for MobileNetV2")
    freeze_before = len(features) if trainable == 0 else stage_starts[len(stage_starts) - trainable]
    for block in features[:freeze_before]:
        block.requires_grad_(False)
    ends = [s - 1 for s in strided[-2:]] + [len(features) - 1]  # ends of the stride 8, 16, 32 stages
    channels = [features[i].out_channels for i in ends]
    return_layers = {str(i): str(level) for level, i in enumerate(ends)}
    backbone = BackboneWithFPN(features, return_layers, channels, fpn_channels, extra_blocks=LastLevelMaxPool())
    return backbone, ["0", "1", "2"], frozen, trainable


def _mobilenet_v3_large_fpn(pretrained: bool, frozen_batchnorm: bool | None, trainable: int | None, fpn_channels: int):
    """torchvision's fasterrcnn_mobilenet_v3_large(_320)_fpn backbone: an FPN on the last two
    stride-32 maps of MobileNetV3-Large."""
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor  # no public FPN-extractor builder

    state = load_imagenet_state_dict(MobileNet_V3_Large_Weights.IMAGENET1K_V1, "MobileNetV3-Large") if pretrained else None
    frozen, trainable = _norm_and_trainable(state, frozen_batchnorm, trainable, 6)
    net = mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    if state is not None:
        net.load_state_dict(state)
    backbone = _mobilenet_extractor(net, True, trainable)
    if fpn_channels != backbone.out_channels:
        raise ValueError("frcnn_mobilenet_v3_large_fpn uses torchvision's 256-channel FPN")
    return backbone, ["0", "1"], frozen, trainable


# name -> backbone builder and default sizes; "defaults" are FasterRCNN keyword arguments;
# "rpn_conv_depth" and "conv_box_head" select torchvision's v2 RPN and box heads.
FRCNN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "frcnn_resnet50_fpn": dict(  # the paper's (Tab. 6): torchvision's fasterrcnn_resnet50_fpn
        backbone=_resnet50_fpn,
        image_size=800,
        max_size_ratio=1333 / 800,
        hidden_channels=1024,
        fpn_channels=256,
        anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
        defaults={},
    ),
    "frcnn_mobilenet_v2": dict(  # small enough to train on a CPU: narrow FPN and box head, fewer RoIs
        backbone=_mobilenet_v2_fpn,
        image_size=320,
        max_size_ratio=2.0,
        hidden_channels=256,
        fpn_channels=128,
        anchor_sizes=((32,), (64,), (128,), (256,)),
        defaults=dict(
            rpn_pre_nms_top_n_train=1000,
            rpn_post_nms_top_n_train=500,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=150,
            box_batch_size_per_image=128,  # RoIAlign's backward dominates a CPU step
        ),
    ),
    "frcnn_resnet50_fpn_v2": dict(  # torchvision's fasterrcnn_resnet50_fpn_v2 (COCO box mAP 46.7)
        backbone=functools.partial(_resnet50_fpn, v2=True),
        image_size=800,
        max_size_ratio=1333 / 800,
        hidden_channels=1024,
        fpn_channels=256,
        anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
        rpn_conv_depth=2,
        conv_box_head=True,
        defaults={},
    ),
    "frcnn_mobilenet_v3_large_fpn": dict(  # torchvision's fasterrcnn_mobilenet_v3_large_fpn
        backbone=_mobilenet_v3_large_fpn,
        image_size=800,
        max_size_ratio=1333 / 800,
        hidden_channels=1024,
        fpn_channels=256,
        anchor_sizes=((32, 64, 128, 256, 512),) * 3,
        defaults=dict(rpn_score_thresh=0.05),
    ),
    "frcnn_mobilenet_v3_large_320_fpn": dict(  # torchvision's low-resolution variant, for CPUs
        backbone=_mobilenet_v3_large_fpn,
        image_size=320,
        max_size_ratio=2.0,
        hidden_channels=1024,
        fpn_channels=256,
        anchor_sizes=((32, 64, 128, 256, 512),) * 3,
        defaults=dict(rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=150, rpn_score_thresh=0.05),
    ),
}
