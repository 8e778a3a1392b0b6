"""Faster R-CNN with a mixture-density box predictor (Sec. 4.3, Tab. 6 and 7).

The mixture replaces torchvision's ``FastRCNNPredictor`` after RoI pooling; everything before
it (backbone, FPN, RPN, RoI sampling, RoIAlign, the two-layer box head) is torchvision's own.
:class:`MixtureRoIHeads` subclasses torchvision's ``RoIHeads`` and overrides only what the
mixture changes: the loss (Eq. 3 NLL for boxes, Eq. 5 / 9 mixture cross-entropy for classes)
and the post-processing (Eq. 7 inference, batched NMS, the four uncertainties of Eq. 1 / 8).

Choices, and why:

* **Class-agnostic box mixture by default.** One K-component mixture per coordinate per RoI,
  as the SSD head predicts one per anchor (Eq. 2 is defined per box, not per class). It keeps
  the predictor's extra cost independent of the number of classes (the paper's point that the
  two-stage overhead is negligible), and every positive RoI trains the same variances, so the
  localization uncertainty of a rare class is not read from a mixture that saw a handful of
  examples, which is the situation active learning starts from. ``class_agnostic_boxes=False``
  gives torchvision's class-specific layout (one mixture per class, read at the GT class in
  the loss and at the detection's class at inference).
* **No hard negative mining.** Faster R-CNN's RoI sampler (``box_batch_size_per_image`` RoIs,
  ``box_positive_fraction`` positives) already fixes the negatives; the classification loss
  is the mixture cross-entropy over every sampled RoI.
* **Normalisation as torchvision's** ``fastrcnn_loss``: both terms are divided by the number
  of sampled RoIs, not by the positives as Eq. 6 does for SSD, so the balance with the RPN
  losses and torchvision's learning rates stay as tuned. With the default 25 % positive
  fraction this is Eq. 6 scaled by about 1/4 when an image has enough positives.
* ``head="plain"`` keeps torchvision's ``FastRCNNPredictor`` and its loss unchanged (the
  baseline of Tab. 6); its outputs are viewed as a K = 1 class-specific mixture without
  variances so the same batched post-processing serves all three heads.

Detections carry the same keys as :class:`almdn.models.ssd.MixtureSSD`'s (``anchor_index`` is
the RoI's index among its image's proposals, the proposal playing the anchor's role), so the
acquisition code works with either detector unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign

from almdn.models.losses import DEFAULT_CLS_LOSS, ClassLoss, LocDensity, class_loss_function, mixture_nll, perturbed_class_logits
from almdn.models import postprocess
from almdn.models.frcnn_backbones import FRCNN_ARCHITECTURES
from almdn.models.heads import check_mixture_head
from almdn.registry import DEFAULT_NUM_COMPONENTS, HEAD_TYPES

__all__ = [
    "FRCNN_ARCHITECTURES",
    "MixtureBoxPredictor",
    "MixtureFasterRCNN",
    "MixtureRoIHeads",
    "PlainBoxPredictor",
    "build_frcnn",
]


class MixtureBoxPredictor(nn.Module):
    """Mixture-density box predictor for RoI features (Eq. 2; "gmm" Fig. 2a, "eff" Fig. 2b).

    One linear layer emits every mixture output of a RoI at once (the RoI head's analogue of
    the SSD head's single 1x1 projection): per box set and coordinate K means, K variance
    logits (Sigma = sigmoid) and K weight logits (pi = softmax over K per coordinate); K vectors
    of C+1 class means, K vectors of C+1 class variance logits ("gmm" only) and K class weight
    logits (pi = softmax over K).

    Args:
        in_channels: size of the box head's representation.
        num_classes: classes including background (C+1).
        num_components: K.
        cls_head: "gmm" or "eff" (no class variances, Sec. 3.2).
        class_agnostic_boxes: one box mixture per RoI (default) or one per class.

    Returns (forward), for N RoIs and B = 1 or C+1 box sets:
        ``bbox_means``, ``bbox_var_logits``, ``bbox_weight_logits``: ``(N, B, K, 4)``;
        ``cls_means``, ``cls_var_logits``: ``(N, K, C+1)`` (variances None for "eff");
        ``cls_weight_logits``: ``(N, K)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_components: int = DEFAULT_NUM_COMPONENTS,
        cls_head: Literal["gmm", "eff"] = "gmm",
        class_agnostic_boxes: bool = True,
    ) -> None:
        super().__init__()
        check_mixture_head(cls_head, num_components)
        self.num_classes = num_classes
        self.num_components = num_components
        self.cls_head = cls_head
        self.class_agnostic_boxes = class_agnostic_boxes
        self.box_sets = 1 if class_agnostic_boxes else num_classes
        k, c, b = num_components, num_classes, self.box_sets
        self.split_sizes = [b * k * 4] * 3 + [k * c] + ([k * c] if cls_head == "gmm" else []) + [k]
        self.mixture = nn.Linear(in_channels, sum(self.split_sizes))

    def forward(self, x: Tensor) -> dict[str, Tensor | None]:
        x = x.flatten(start_dim=1)
        n, k, c, b = x.shape[0], self.num_components, self.num_classes, self.box_sets
        parts = list(self.mixture(x).split(self.split_sizes, dim=-1))
        bbox_means, bbox_var, bbox_w = (p.reshape(n, b, k, 4) for p in parts[:3])
        return {
            "bbox_means": bbox_means,
            "bbox_var_logits": bbox_var,
            "bbox_weight_logits": bbox_w,
            "cls_means": parts[3].reshape(n, k, c),
            "cls_var_logits": parts[4].reshape(n, k, c) if self.cls_head == "gmm" else None,
            "cls_weight_logits": parts[-1],
        }


class PlainBoxPredictor(FastRCNNPredictor):
    """torchvision's ``FastRCNNPredictor`` (same parameters and names), its outputs viewed as
    a K = 1 class-specific mixture without variances."""

    cls_head = "plain"
    num_components = 1
    class_agnostic_boxes = False

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> dict[str, Tensor | None]:
        scores, deltas = super().forward(x)
        n = scores.shape[0]
        means = deltas.reshape(n, self.num_classes, 1, 4)
        return {
            "bbox_means": means,
            "bbox_var_logits": None,
            "bbox_weight_logits": means.new_zeros(()).expand_as(means),
            "cls_means": scores.unsqueeze(1),
            "cls_var_logits": None,
            "cls_weight_logits": scores.new_zeros(()).expand(n, 1),
        }


class MixtureRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with the mixture loss and Eq. 7 post-processing.

    Proposal matching, RoI sampling, RoIAlign and the box head are the parent's. Extra args:

    Args:
        eta: the localization loss divisor of Eq. 6 (2).
        loc_density: "paper" or "reference" Gaussian, see :mod:`almdn.models.losses`.
        min_variance: floor on every predicted variance.
        eps: the epsilon inside the log of Eq. 3.
        cls_loss: "eq5" (Eq. 5 / 9) or "type2" (mixture likelihood of the target class).
        min_box_size: detections narrower or lower than this (pixels) are dropped, as
            torchvision's ``remove_small_boxes`` does (1e-2).
    """

    def __init__(
        self,
        *args: Any,
        eta: float = 2.0,
        loc_density: LocDensity = "paper",
        min_variance: float = 1e-6,
        eps: float = 1e-9,
        min_box_size: float = 1e-2,
        cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cls_loss = cls_loss
        self.eta = eta
        self.loc_density = loc_density
        self.min_variance = min_variance
        self.eps = eps
        self.min_box_size = min_box_size

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        raw = self.box_predictor(box_features)
        if self.training:
            return [], self.mixture_loss(raw, torch.cat(labels), torch.cat(regression_targets))
        return self.postprocess_mixture(raw, proposals, image_shapes), {}

    # --------------------------------------------------------------------- loss
    def mixture_loss(self, raw: dict[str, Tensor | None], labels: Tensor, regression_targets: Tensor) -> dict[str, Tensor]:
        """RoI losses over the sampled RoIs: ``loss_classification`` and ``loss_localization``.

        * classification (Eq. 5 "gmm" with the Eq. 4 noise drawn once per step, Eq. 9 "eff"):
          ``sum_i -sum_k pi_ik log softmax(c_ik)[G_i] / n`` over all n sampled RoIs;
        * localization (Eq. 3): ``sum_{i in Pos} sum_b -log(sum_k pi N(g_b | mu, Sigma) + eps)
          / (eta n)``, the mixture read at the GT class when boxes are class-specific.

        With no positive RoI (an image without objects) the localization term is exactly 0.
        ``head="plain"`` uses torchvision's ``fastrcnn_loss`` (cross-entropy, smooth L1).

        Args:
            raw: the predictor's outputs for the n sampled RoIs.
            labels: ``(n,)`` class of each sampled RoI, 0 = background.
            regression_targets: ``(n, 4)`` encoded matched GT boxes.
        """
        if self.box_predictor.cls_head == "plain":
            n = labels.shape[0]
            cls, loc = fastrcnn_loss(raw["cls_means"][:, 0], raw["bbox_means"].reshape(n, -1), [labels], [regression_targets])
            return {"loss_classification": cls, "loss_localization": loc}
        num = max(labels.numel(), 1)
        cls_means, cls_var = raw["cls_means"], raw["cls_var_logits"]
        noise = None if cls_var is None else torch.randn_like(cls_means)
        logits = perturbed_class_logits(cls_means, cls_var, noise)
        cls = class_loss_function(self.cls_loss)(logits, raw["cls_weight_logits"], labels).sum() / num

        pos = torch.nonzero(labels > 0).squeeze(1)
        box_set = labels[pos] if raw["bbox_means"].shape[1] > 1 else torch.zeros_like(pos)
        loc = mixture_nll(
            regression_targets[pos],
            raw["bbox_means"][pos, box_set],
            raw["bbox_var_logits"][pos, box_set],
            raw["bbox_weight_logits"][pos, box_set],
            density=self.loc_density,
            eps=self.eps,
            min_variance=self.min_variance,
        ).sum()  # an empty sum is 0 and keeps the graph, so backward() works without positives
        return {"loss_classification": cls, "loss_localization": loc / (self.eta * num)}

    # ---------------------------------------------------------------- inference
    def postprocess_mixture(
        self, raw: dict[str, Tensor | None], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Eq. 7 inference, one batched NMS for all images and classes, and per-detection
        uncertainties (Eq. 1, 8), in the resized images' coordinates.

        As torchvision's ``postprocess_detections``: every (RoI, class) pair with probability
        above ``score_thresh`` is a candidate, boxes are clipped to the image, boxes smaller than
        ``min_box_size`` dropped, per-class NMS at ``nms_thresh``, the best
        ``detections_per_img`` per image kept.
        """
        device = proposals[0].device
        counts = torch.tensor([len(p) for p in proposals], device=device)
        rois = torch.cat(proposals)
        num_rois, num_images = rois.shape[0], len(proposals)
        roi_image = torch.repeat_interleave(torch.arange(num_images, device=device), counts)

        box_enc, probs = postprocess.mixture_predictions(raw)  # Eq. 7: (R, B, 4), (R, C+1)
        box_sets = box_enc.shape[1]
        boxes = self.box_coder.decode_single(box_enc.reshape(-1, 4), rois.repeat_interleave(box_sets, 0))
        limits = postprocess.image_limits(image_shapes, boxes)[roi_image][:, None, :]  # (R, 1, 4) as (w, h, w, h)
        boxes = torch.minimum(boxes.view(num_rois, box_sets, 4).clamp_min(0), limits)

        scores = probs[:, 1:]
        num_fg = scores.shape[1]
        r, c = torch.nonzero(scores > self.score_thresh, as_tuple=True)
        box_set = c + 1 if box_sets > 1 else torch.zeros_like(c)
        cand_boxes, cand_scores = boxes[r, box_set], scores[r, c]
        wh = cand_boxes[:, 2:] - cand_boxes[:, :2]
        big = (wh >= self.min_box_size).all(1)
        r, c, box_set, cand_boxes, cand_scores = r[big], c[big], box_set[big], cand_boxes[big], cand_scores[big]
        img = roi_image[r]
        keep = postprocess.nms_per_image(cand_boxes, cand_scores, img, c, num_fg, num_images, self.nms_thresh, self.detections_per_img)
        r, c, b, img = r[keep], c[keep], box_set[keep], img[keep]
        labels = c + 1

        # Mixture parameters and uncertainties only for the detections (Eq. 2, 1, 8), the RoI's
        # proposal in the anchor's role.
        raw_det = {key: None if v is None else (v[r, b] if key.startswith("bbox") else v[r]) for key, v in raw.items()}
        mix = postprocess.mixture_parameters(raw_det, self.min_variance)
        det = postprocess.detection_values(mix, probs[r], labels, rois[r], self.box_coder)
        det["boxes"] = cand_boxes[keep]
        det["scores"] = cand_scores[keep]
        det["labels"] = labels
        det["anchor_index"] = r - (torch.cumsum(counts, 0) - counts)[img]
        return postprocess.split_per_image(det, img, num_images)


class MixtureRCNNTransform(GeneralizedRCNNTransform):
    """torchvision's transform, whose post-processing also rescales each detection's other
    pixel-valued keys (:data:`~almdn.models.postprocess.BOX_KEYS`: the K component means,
    their per-edge sigmas, the proposal) to the original image size."""

    def postprocess(self, result, image_shapes, original_image_sizes):
        result = super().postprocess(result, image_shapes, original_image_sizes)  # rescales "boxes"
        if self.training:
            return result
        for pred, resized, original in zip(result, image_shapes, original_image_sizes):
            for key in postprocess.BOX_KEYS[1:]:
                if key in pred:
                    value = pred[key]
                    pred[key] = resize_boxes(value.reshape(-1, 4), resized, original).view_as(value)
        return result


class MixtureFasterRCNN(FasterRCNN):
    """torchvision's Faster R-CNN whose RoI heads are :class:`MixtureRoIHeads`.

    ``model(images, targets)`` in train mode returns ``loss_classification`` and
    ``loss_localization`` (the RoI heads) plus torchvision's ``loss_objectness`` and
    ``loss_rpn_box_reg``; in eval mode a list of detection dicts with the keys of
    :class:`~almdn.models.ssd.MixtureSSD`.

    Args:
        backbone: a backbone with ``out_channels`` (an FPN).
        box_predictor: :class:`MixtureBoxPredictor` or :class:`PlainBoxPredictor`.
        class_names: the C object class names.
        score_thresh, nms_thresh, detections_per_img: the RoI stage's post-processing
            (torchvision's ``box_score_thresh`` 0.05, ``box_nms_thresh`` 0.5,
            ``box_detections_per_img`` 100).
        eta, loc_density, min_variance, eps, min_box_size, cls_loss: see :class:`MixtureRoIHeads`.
        kwargs: every other ``FasterRCNN`` argument (transform sizes, RPN, RoI sampling,
            ``box_roi_pool``, ``box_head``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        box_predictor: nn.Module,
        class_names: list[str] | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] | None = None,
        eta: float = 2.0,
        loc_density: LocDensity = "paper",
        min_variance: float = 1e-6,
        eps: float = 1e-9,
        min_box_size: float = 1e-2,
        cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
        **kwargs: Any,
    ) -> None:
        image_mean = image_mean or [0.485, 0.456, 0.406]
        image_std = image_std or [0.229, 0.224, 0.225]
        renamed = {"box_score_thresh", "box_nms_thresh", "box_detections_per_img"} & set(kwargs)
        if renamed:
            raise ValueError(f"Use score_thresh, nms_thresh and detections_per_img instead of {', '.join(sorted(renamed))}.")
        super().__init__(
            backbone, None, min_size, max_size, image_mean, image_std, box_predictor=box_predictor, **kwargs
        )
        parent, t = self.roi_heads, self.transform
        # Same pool, box head and predictor; only the loss and the post-processing change.
        self.roi_heads = MixtureRoIHeads(
            parent.box_roi_pool,
            parent.box_head,
            box_predictor,
            box_fg_iou_thresh,
            box_bg_iou_thresh,
            box_batch_size_per_image,
            box_positive_fraction,
            bbox_reg_weights,
            score_thresh,
            nms_thresh,
            detections_per_img,
            eta=eta,
            loc_density=loc_density,
            min_variance=min_variance,
            eps=eps,
            min_box_size=min_box_size,
            cls_loss=cls_loss,
        )
        self.transform = MixtureRCNNTransform(
            t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible, t.fixed_size, _skip_resize=t._skip_resize
        )
        self.num_classes = box_predictor.num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(1, self.num_classes)]
        self.config: dict[str, Any] = {}  # the builder call that made this model, for checkpoints

    @property
    def head_type(self) -> str:
        return self.roi_heads.box_predictor.cls_head

    @property
    def num_components(self) -> int:
        return self.roi_heads.box_predictor.num_components

    @property
    def loc_density(self) -> str:
        return self.roi_heads.loc_density

    @property
    def detections_per_img(self) -> int:
        return self.roi_heads.detections_per_img

    @detections_per_img.setter
    def detections_per_img(self, value: int) -> None:
        self.roi_heads.detections_per_img = value

    @torch.no_grad()
    def image_features(self, images: list[Tensor]) -> Tensor:
        """``(B, D)`` global-average-pooled deepest backbone map (before the FPN): the core-set
        baseline's image representation, as :meth:`MixtureSSD.image_features` is the SSD's."""
        image_list, _ = self.transform(images)
        return list(self.backbone.body(image_list.tensors).values())[-1].mean(dim=(2, 3))


# The backbones and the architectures' sizes: almdn/models/frcnn_backbones.py.

def build_frcnn(
    arch: str = "frcnn_mobilenet_v2",
    num_classes: int = 10,
    head: str = "gmm",
    num_components: int = DEFAULT_NUM_COMPONENTS,
    class_names: list[str] | None = None,
    pretrained: bool = True,
    extras_dropout: float = 0.0,
    hidden_channels: int | None = None,
    image_size: int | None = None,
    class_agnostic_boxes: bool = True,
    trainable_backbone_layers: int | None = None,
    frozen_batchnorm: bool | None = None,
    fpn_channels: int | None = None,
    anchor_sizes: tuple[tuple[int, ...], ...] | None = None,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    loss_prediction: bool = False,
    loc_density: LocDensity = "paper",
    cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
    **detector_kwargs: Any,
) -> MixtureFasterRCNN:
    """Build a mixture-density Faster R-CNN (called by :func:`almdn.models.build_model`).

    Args:
        arch: "frcnn_resnet50_fpn" (the paper's, 800 px), "frcnn_mobilenet_v2" (ImageNet
            MobileNetV2 + FPN at strides 8-32, 320 px, narrow head; trains on a CPU), or
            torchvision's "frcnn_resnet50_fpn_v2", "frcnn_mobilenet_v3_large_fpn" and
            "frcnn_mobilenet_v3_large_320_fpn" (same modules, so their COCO weights load).
        num_classes: C, object classes without background.
        head: "gmm", "eff" or "plain" (torchvision's predictor, the baseline of Tab. 6).
        num_components: K.
        pretrained: ImageNet backbone weights where available (MobileNetV2 ships offline;
            ResNet-50 needs a download, else random init with a warning, all layers trainable).
        extras_dropout: must be 0 (MC-dropout's extra layers exist only in the SSD).
        loss_prediction: must be False (LLAL's module is built for the SSD only).
        hidden_channels: representation size of the two-layer box head (1024 / 256).
        image_size: shorter side the images are resized to (longer side capped at
            ``max_size_ratio`` times it, or ``max_size`` in ``detector_kwargs``).
        class_agnostic_boxes: one box mixture per RoI (default) or per class (module docstring).
        trainable_backbone_layers, frozen_batchnorm: None follows torchvision's rule from
            whether ImageNet weights were loaded; the resolved values go into ``model.config``
            so a checkpoint rebuilds the same modules.
        fpn_channels: FPN width (256 / 128).
        anchor_sizes, aspect_ratios: RPN anchors, one size tuple per FPN level.
        loc_density, cls_loss: the box likelihood (Eq. 3) and the classification loss
            ("type2", or the paper's Eq. 5 / 9), see :class:`MixtureRoIHeads`.
        detector_kwargs: :class:`MixtureFasterRCNN` / ``FasterRCNN`` arguments (thresholds,
            ``eta``, RPN and RoI sampling settings, ``max_size``).
    """
    _check_frcnn_arguments(arch, head, extras_dropout, loss_prediction, class_names, num_classes)
    spec = FRCNN_ARCHITECTURES[arch]
    size = image_size or spec["image_size"]
    fpn_width = fpn_channels or spec["fpn_channels"]
    hidden = hidden_channels or spec["hidden_channels"]
    sizes = anchor_sizes or spec["anchor_sizes"]
    # The modules are made in this order (backbone, predictor, box head, RPN head): each draws
    # its initial weights from the seeded stream, so a seed keeps giving the same model.
    backbone, featmaps, frozen, trainable = spec["backbone"](pretrained, frozen_batchnorm, trainable_backbone_layers, fpn_width)
    predictor = _box_predictor(head, hidden, num_classes, num_components, class_agnostic_boxes)
    box_head = _box_head(spec, fpn_width, hidden)
    anchor_generator = AnchorGenerator(tuple(sizes), (tuple(aspect_ratios),) * len(sizes))
    kwargs = {**spec["defaults"], **detector_kwargs}
    kwargs.setdefault("max_size", round(size * spec["max_size_ratio"]))
    model = MixtureFasterRCNN(
        backbone,
        predictor,
        class_names=class_names,
        min_size=size,
        rpn_anchor_generator=anchor_generator,
        rpn_head=RPNHead(fpn_width, anchor_generator.num_anchors_per_location()[0], conv_depth=spec.get("rpn_conv_depth", 1)),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=featmaps, output_size=7, sampling_ratio=2),
        box_head=box_head,
        loc_density=loc_density,
        cls_loss=cls_loss,
        **kwargs,
    )
    # Everything a checkpoint needs to rebuild the same modules (the resolved backbone rule too).
    model.config = dict(
        arch=arch,
        num_classes=num_classes,
        head=head,
        num_components=num_components if head != "plain" else 1,
        class_names=list(class_names) if class_names else None,
        hidden_channels=hidden_channels,
        image_size=image_size,
        class_agnostic_boxes=class_agnostic_boxes,
        trainable_backbone_layers=trainable,
        frozen_batchnorm=frozen,
        fpn_channels=fpn_channels,
        anchor_sizes=anchor_sizes,
        aspect_ratios=tuple(aspect_ratios),
        loc_density=loc_density,
        cls_loss=cls_loss,
        **detector_kwargs,
    )
    return model


def _check_frcnn_arguments(arch: str, head: str, extras_dropout: float, loss_prediction: bool, class_names, num_classes: int) -> None:
    """One sentence for each build_frcnn argument a Faster R-CNN cannot take."""
    if arch not in FRCNN_ARCHITECTURES:
        raise ValueError(f"Unknown Faster R-CNN architecture {arch!r}; choose one of {', '.join(FRCNN_ARCHITECTURES)}.")
    if head not in HEAD_TYPES:
        raise ValueError(f"Unknown head {head!r}; choose one of {', '.join(HEAD_TYPES)}.")
    if extras_dropout:
        raise ValueError("extras_dropout (MC-dropout) applies to SSD's extra layers; Faster R-CNN has none.")
    if loss_prediction:
        raise ValueError("loss_prediction (the LLAL baseline) is implemented for the SSD architectures only.")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")


def _box_predictor(head: str, hidden: int, num_classes: int, num_components: int, class_agnostic_boxes: bool) -> nn.Module:
    """The RoI box predictor: torchvision's for the plain head, else the mixture (Eq. 2)."""
    if head == "plain":
        return PlainBoxPredictor(hidden, num_classes + 1)
    return MixtureBoxPredictor(hidden, num_classes + 1, num_components, head, class_agnostic_boxes)


def _box_head(spec: dict, fpn_width: int, hidden: int) -> nn.Module:
    """The RoI box head: torchvision's two-layer MLP, or v2's four 3x3 convs with BatchNorm and
    one linear layer."""
    if spec.get("conv_box_head"):
        return FastRCNNConvFCHead((fpn_width, 7, 7), [256, 256, 256, 256], [hidden], norm_layer=nn.BatchNorm2d)
    return TwoMLPHead(fpn_width * 7 * 7, hidden)
