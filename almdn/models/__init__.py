"""Mixture heads and the detectors built from them.

Builders are plain functions with keyword arguments (torchvision's habit). Every model records
the call that built it in ``model.config`` so a checkpoint can rebuild it.
"""

from __future__ import annotations

from typing import Any

from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from almdn.models.backbones import (
    mobilenet_v2_backbone,
    mobilenet_v2_small_backbone,
    mobilenet_v3_large_ssdlite_backbone,
    small_backbone,
    vgg16_backbone,
)
from almdn.models.anchors import frcnn_anchor_options, normalized_ratios, ssd_anchor_generator
from almdn.models.heads import HEAD_TYPES, build_head
from almdn.models.loss_prediction import LossPredictionModule
from almdn.models.detector import Detector
from almdn.models.ssd import UNCERTAINTY_NAMES, MixtureSSD
from almdn.models.frcnn import FRCNN_ARCHITECTURES, MixtureFasterRCNN, build_frcnn
from almdn.models.losses import ClassLoss, LocDensity
from almdn.registry import ARCH_NAMES, DEFAULT_CLS_LOSS, DEFAULT_NUM_COMPONENTS, FIXED_IMAGE_SIZES

__all__ = [
    "ARCH_NAMES", "SSD_BUILDERS", "FRCNN_ARCHITECTURES", "HEAD_TYPES", "UNCERTAINTY_NAMES",
    "Detector", "MixtureFasterRCNN", "MixtureSSD", "build_model", "model_from_config",
]

_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _small(pretrained: bool, extras_dropout: float, image_size: int):
    del pretrained  # trained from scratch by design
    backbone = small_backbone(extras_dropout=extras_dropout)
    # Objects of 10-60 px in 128 px images: anchor scales 0.08 .. 0.52 of the image side.
    anchors = DefaultBoxGenerator([[2], [2], [2]], scales=[0.08, 0.18, 0.38, 0.7])
    return backbone, anchors, (image_size, image_size), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], 64


def _mobilenet_v2(pretrained: bool, extras_dropout: float, image_size: int):
    backbone = mobilenet_v2_backbone(pretrained, extras_dropout=extras_dropout)
    anchors = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    return backbone, anchors, (image_size, image_size), _IMAGENET_MEAN, _IMAGENET_STD, 128


def _mobilenet_v2_small(pretrained: bool, extras_dropout: float, image_size: int):
    # The first 4 blocks (strides 2-4: edges and textures) keep their ImageNet weights: their
    # backward pass at the highest resolution is 30% of a training step here.
    backbone = mobilenet_v2_small_backbone(pretrained, extras_dropout=extras_dropout, frozen_blocks=4)
    # Strides 8..64; at 128 px the anchors' sides run from 13 to 115 px.
    anchors = DefaultBoxGenerator([[2]] * 4, scales=[0.1, 0.2, 0.4, 0.65, 0.9])
    return backbone, anchors, (image_size, image_size), _IMAGENET_MEAN, _IMAGENET_STD, 64


def _vgg16(pretrained: bool, extras_dropout: float, image_size: int):
    if image_size != FIXED_IMAGE_SIZES["ssd300_vgg16"]:
        raise ValueError(f"ssd300_vgg16 has a fixed input size of {FIXED_IMAGE_SIZES['ssd300_vgg16']}")
    backbone = vgg16_backbone(pretrained, extras_dropout=extras_dropout)
    # torchvision's SSD300 defaults (Liu et al.).
    anchors = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    return backbone, anchors, (300, 300), [0.48235, 0.45882, 0.40784], [1.0 / 255] * 3, 256


def _ssdlite_mobilenet_v3(pretrained: bool, extras_dropout: float, image_size: int):
    backbone = mobilenet_v3_large_ssdlite_backbone(pretrained, extras_dropout=extras_dropout)
    # torchvision's ssdlite320_mobilenet_v3_large anchors and its [-1, 1] input scaling.
    anchors = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    return backbone, anchors, (image_size, image_size), [0.5] * 3, [0.5] * 3, 64


#: SSD architecture name -> (builder of backbone/anchors/normalisation, default input size);
#: the names and their descriptions are :data:`almdn.registry.SSD_ARCHITECTURES`.
SSD_BUILDERS = {
    "ssd_small": (_small, 128),
    "ssd_mobilenet_v2": (_mobilenet_v2, 320),
    "ssd_mobilenet_v2_small": (_mobilenet_v2_small, 128),
    "ssd300_vgg16": (_vgg16, 300),
    "ssdlite320_mobilenet_v3_large": (_ssdlite_mobilenet_v3, 320),
}
# Architectures whose heads are depthwise-separable (SSDlite).
DEPTHWISE_HEADS = frozenset({"ssdlite320_mobilenet_v3_large"})
# Every architecture build_model accepts (the SSDs above and the Faster R-CNNs of frcnn.py) is
# named in almdn.registry.ARCH_NAMES, which the CLI, the rounds and the app offer.


def build_model(
    arch: str = "ssd_small",
    num_classes: int = 10,
    head: str = "gmm",
    num_components: int = DEFAULT_NUM_COMPONENTS,
    class_names: list[str] | None = None,
    pretrained: bool = True,
    extras_dropout: float = 0.0,
    hidden_channels: int | None = None,
    image_size: int | None = None,
    loss_prediction: bool = False,
    anchor_scales: list[float] | None = None,
    anchor_ratios: list[float] | list[list[float]] | None = None,
    loc_density: LocDensity = "paper",
    cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
    **detector_kwargs: Any,
) -> Detector:
    """Build a mixture-density detector: a :class:`MixtureSSD`, or a :class:`MixtureFasterRCNN`
    for a Faster R-CNN architecture.

    Args:
        arch: "ssd_small" (demo, 128 px, trains on a CPU in minutes), "ssd_mobilenet_v2"
            (ImageNet MobileNetV2, 320 px), "ssd300_vgg16" (the paper's) or
            "ssdlite320_mobilenet_v3_large" (torchvision's SSDlite, depthwise heads); or a Faster R-CNN,
            "frcnn_resnet50_fpn" (the paper's Tab. 6) or "frcnn_mobilenet_v2", built by
            :func:`almdn.models.frcnn.build_frcnn` (which documents its extra keyword arguments).
        num_classes: C, object classes without background.
        head: "gmm", "eff" or "plain" (torchvision's SSD head, the baseline).
        num_components: K mixture components (K = 1 is the single Gaussian model).
        pretrained: load ImageNet backbone weights where available (torch's cache, a registry
            package, or a download); otherwise random init with a warning.
        extras_dropout: dropout on the extra layers (0.1 for the MC-dropout baseline).
        hidden_channels: width of the mixture head's shared tower (per-architecture default).
        loss_prediction: add LLAL's learning-loss module (the LLAL baseline).
        image_size: the SSD's square input side (default per architecture; ssd300_vgg16 is
            fixed at 300), Faster R-CNN's shorter side.
        anchor_scales, anchor_ratios: anchors other than the architecture's (small objects,
            :mod:`almdn.models.anchors`): SSD scales are L+1 increasing fractions of the input
            side, ratios one list for every level or one per level; Faster R-CNN's scales are
            one per FPN level (fractions of the shorter side, stored as ``anchor_sizes``).
            None keeps the architecture's anchors exactly.
        loc_density: the box likelihood of Eq. 3: "paper" (the sigmoid output is the variance)
            or "reference" (the authors' code), :func:`almdn.models.losses.mixture_nll`.
        cls_loss: the classification loss: "type2" (mixture likelihood of the target class,
            the default) or "eq5" (the paper's Eq. 5 / Eq. 9), :func:`almdn.models.losses.detection_loss`.
        detector_kwargs: passed to :class:`MixtureSSD` / ``build_frcnn`` (thresholds, ...).
    """
    if arch in FRCNN_ARCHITECTURES:  # two-stage detector: Faster R-CNN with a mixture box predictor
        if anchor_scales is not None or anchor_ratios is not None:
            spec = FRCNN_ARCHITECTURES[arch]
            detector_kwargs.update(frcnn_anchor_options(
                arch, image_size or spec["image_size"], detector_kwargs.get("anchor_sizes") or spec["anchor_sizes"], anchor_scales, anchor_ratios,
            ))
        return build_frcnn(
            arch, num_classes, head, num_components, class_names, pretrained, extras_dropout, hidden_channels, image_size,
            loss_prediction=loss_prediction, loc_density=loc_density, cls_loss=cls_loss, **detector_kwargs,
        )
    if arch not in SSD_BUILDERS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCH_NAMES)}.")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
    config = dict(
        arch=arch,
        num_classes=num_classes,
        head=head,
        num_components=num_components if head != "plain" else 1,
        class_names=list(class_names) if class_names else None,
        extras_dropout=extras_dropout,
        hidden_channels=hidden_channels,
        image_size=image_size,
        loss_prediction=loss_prediction,
        loc_density=loc_density,
        cls_loss=cls_loss,
        **detector_kwargs,
    )
    if anchor_scales is not None:  # only when set: a default model's config stays as it was
        config["anchor_scales"] = [float(s) for s in anchor_scales]
    if anchor_ratios is not None:
        config["anchor_ratios"] = normalized_ratios(anchor_ratios)
    make, default_size = SSD_BUILDERS[arch]
    backbone, anchors, size, mean, std, default_hidden = make(pretrained, extras_dropout, image_size or default_size)
    anchors = ssd_anchor_generator(anchors, arch, anchor_scales, anchor_ratios)
    head_module = build_head(
        head,
        backbone.out_channels,
        anchors.num_anchors_per_location(),
        num_classes + 1,
        num_components,
        default_hidden if hidden_channels is None else hidden_channels,
        depthwise=arch in DEPTHWISE_HEADS,
    )
    lp_module = LossPredictionModule(backbone.out_channels) if loss_prediction else None
    model = MixtureSSD(
        backbone, anchors, size, num_classes + 1, head_module, mean, std, class_names=class_names, loss_prediction=lp_module,
        loc_density=loc_density, cls_loss=cls_loss, **detector_kwargs,
    )
    model.config = config
    return model


def model_from_config(config: dict[str, Any]) -> Detector:
    """Rebuild a model from ``model.config`` without downloading backbone weights."""
    return build_model(**{**config, "pretrained": False})
