"""Mixture-density SSD: torchvision's SSD pipeline with a mixture head (Sec. 3.1).

:class:`MixtureSSD` follows torchvision's detector contract: ``model(images, targets)`` in
train mode returns a dict of losses, in eval mode a list of per-image detection dicts. The
detections carry, besides ``boxes``, ``scores`` and ``labels``, the four uncertainties of
Eq. 1 / Eq. 8 from the same forward pass and each detection's mixture parameters (for
drawing: component boxes, per-edge sigma, weights, anchors). Post-processing is the free
functions of :mod:`almdn.models.postprocess`, batched over images, anchors and classes: one
``batched_nms`` over the whole batch, no Python loop over classes or detections.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
# torchvision exposes its BoxCoder and SSDMatcher only from this private module (no public
# API offers them); torchvision's own SSD imports them from here too.
from torchvision.models.detection import _utils as det_utils  # BoxCoder and Matcher: torchvision exports no public module for them
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou

from almdn.models.losses import DEFAULT_CLS_LOSS, ClassLoss, LocDensity, detection_loss
from almdn.models import postprocess
from almdn.models.backbones import SSDBackbone
from almdn.models.loss_prediction import loss_prediction_loss
from almdn.registry import UNCERTAINTY_NAMES  # noqa: F401  (re-exported: the detections' uncertainty keys)



class MixtureSSD(nn.Module):
    """SSD whose head predicts a K-component Gaussian mixture per box coordinate and class.

    Args:
        backbone: an :class:`SSDBackbone`.
        anchor_generator: torchvision's ``DefaultBoxGenerator``.
        size: input size (H, W) every image is resized to.
        num_classes: classes including background (C+1).
        head: a head from :func:`almdn.models.heads.build_head`.
        image_mean, image_std: input normalisation.
        score_thresh: minimum class probability of a detection (0.01 as in SSD).
        nms_thresh: per-class NMS IoU threshold (0.45).
        topk_candidates: candidates per class and image before NMS.
        detections_per_img: maximum detections per image after NMS.
        iou_thresh: anchor matching IoU for positives (0.5, lambda_G of Eq. 3).
        neg_to_pos_ratio: hard negative mining ratio M (3).
        eta: localization loss divisor (2, Eq. 6).
        loc_density: "paper" (sigmoid output is the variance) or "reference" (the authors'
            code: std with a 0.3 offset in the normaliser); see :mod:`almdn.models.losses`.
        min_variance: floor on every predicted variance.
        cls_loss: classification loss, "eq5" (the paper's Eq. 5 / 9) or "type2" (the mixture
            likelihood of the target class; see :func:`almdn.models.losses.mixture_class_nll`).
        class_names: the C object class names (label i is ``class_names[i-1]``).
        loss_prediction: an optional LLAL :class:`~almdn.models.loss_prediction.LossPredictionModule`
            on the feature maps; trained jointly (``loss_loss_prediction``, weight
            ``loss_prediction_weight``) and its prediction returned as ``predicted_loss``.
    """

    def __init__(
        self,
        backbone: SSDBackbone,
        anchor_generator: DefaultBoxGenerator,
        size: tuple[int, int],
        num_classes: int,
        head: nn.Module,
        image_mean: list[float],
        image_std: list[float],
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        topk_candidates: int = 200,
        detections_per_img: int = 200,
        iou_thresh: float = 0.5,
        neg_to_pos_ratio: int = 3,
        eta: float = 2.0,
        loc_density: LocDensity = "paper",
        min_variance: float = 1e-6,
        cls_loss: ClassLoss = DEFAULT_CLS_LOSS,
        class_names: list[str] | None = None,
        loss_prediction: nn.Module | None = None,
        loss_prediction_weight: float = 1.0,
        loss_prediction_margin: float = 1.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.anchor_generator = anchor_generator
        self.head = head
        self.size = tuple(size)
        self.num_classes = num_classes
        self.transform = GeneralizedRCNNTransform(
            min(size), max(size), image_mean, image_std, size_divisible=1, fixed_size=size
        )
        # Encoded offsets with SSD's variances (0.1, 0.2), as Eq. 3 regresses them.
        self.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.proposal_matcher = det_utils.SSDMatcher(iou_thresh)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.topk_candidates = topk_candidates
        self.detections_per_img = detections_per_img
        self.neg_to_pos_ratio = neg_to_pos_ratio
        self.eta = eta
        self.loc_density = loc_density
        self.min_variance = min_variance
        self.cls_loss = cls_loss
        self.class_names = list(class_names) if class_names else [str(i) for i in range(1, num_classes)]
        self.loss_prediction = loss_prediction
        self.loss_prediction_weight = loss_prediction_weight
        self.loss_prediction_margin = loss_prediction_margin
        self.config: dict[str, Any] = {}  # the builder call that made this model, for checkpoints

    @property
    def head_type(self) -> str:
        return self.head.cls_head

    @property
    def num_components(self) -> int:
        return self.head.num_components

    # ------------------------------------------------------------------ forward
    def preprocess(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        return image_list, targets, original_sizes

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        image_list, targets, original_sizes = self.preprocess(images, targets)
        features = self.backbone(image_list.tensors)
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        if self.training:
            losses = self.compute_loss(targets, head_outputs, anchors, per_image=self.loss_prediction is not None)
            if self.loss_prediction is not None:
                predicted = self.loss_prediction(features)
                ranking = loss_prediction_loss(predicted, losses.pop("per_image"), self.loss_prediction_margin)
                losses["loss_loss_prediction"] = self.loss_prediction_weight * ranking
            return losses
        detections = self.postprocess(head_outputs, anchors, image_list.image_sizes, original_sizes)
        if self.loss_prediction is not None:
            for det, predicted in zip(detections, self.loss_prediction(features)):
                det["predicted_loss"] = predicted
        return detections

    @torch.no_grad()
    def image_features(self, images: list[Tensor]) -> Tensor:
        """``(B, D)`` global-average-pooled last trunk feature map: the core-set baseline's
        image representation (the paper uses VGG-16's fc7, which is the trunk's last layer)."""
        image_list, _, _ = self.preprocess(images)
        return self.backbone.forward_trunk(image_list.tensors)[-1].mean(dim=(2, 3))

    # --------------------------------------------------------------------- loss
    def match(self, targets: list[dict[str, Tensor]], anchors: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Encoded box targets ``(B, A, 4)`` and class targets ``(B, A)`` (0 = background)."""
        matched_boxes, cls_targets = [], []
        for t, anchors_i in zip(targets, anchors):
            if t["boxes"].numel() == 0:
                matched_boxes.append(anchors_i)
                cls_targets.append(torch.zeros(anchors_i.shape[0], dtype=torch.int64, device=anchors_i.device))
                continue
            matched = self.proposal_matcher(box_iou(t["boxes"], anchors_i))
            fg = matched >= 0
            idx = matched.clamp_min(0)
            # Background anchors get their own box so the encoding stays finite; it is never read.
            matched_boxes.append(torch.where(fg[:, None], t["boxes"][idx], anchors_i))
            cls_targets.append(torch.where(fg, t["labels"][idx], 0))
        boxes, anchors_all = torch.stack(matched_boxes), torch.stack(anchors)
        loc_targets = self.box_coder.encode_single(boxes.flatten(0, 1), anchors_all.flatten(0, 1))
        return loc_targets.view_as(boxes), torch.stack(cls_targets)

    def compute_loss(self, targets, head_outputs, anchors, per_image: bool = False) -> dict[str, Tensor]:
        loc_targets, cls_targets = self.match(targets, anchors)
        return detection_loss(
            head_outputs,
            loc_targets,
            cls_targets,
            neg_to_pos_ratio=self.neg_to_pos_ratio,
            eta=self.eta,
            density=self.loc_density,
            min_variance=self.min_variance,
            per_image=per_image,
            cls_loss=self.cls_loss,
        )

    # ---------------------------------------------------------------- inference
    def mixture_parameters(self, raw: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
        """Eq. 2 on raw head outputs, with this model's variance floor
        (:func:`almdn.models.postprocess.mixture_parameters`)."""
        return postprocess.mixture_parameters(raw, self.min_variance)

    def mixture_predictions(self, raw: dict[str, Tensor | None]) -> tuple[Tensor, Tensor]:
        """Eq. 7 for every anchor (:func:`almdn.models.postprocess.mixture_predictions`)."""
        return postprocess.mixture_predictions(raw)

    def postprocess(
        self,
        head_outputs: dict[str, Tensor | None],
        anchors: list[Tensor],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        class_probs: Tensor | None = None,
    ) -> list[dict[str, Tensor]]:
        """Eq. 7 inference, batched NMS, and per-detection uncertainties (Eq. 1 and 8), with
        the free functions of :mod:`almdn.models.postprocess`.

        ``class_probs`` overrides the mixture's class probabilities (MC-dropout passes their
        mean here).
        """
        bsz, num_anchors = head_outputs["bbox_means"].shape[:2]
        anchors_all = torch.stack(anchors)  # (B, A, 4)
        box_enc, mixed_probs = postprocess.mixture_predictions(head_outputs)  # Eq. 7
        boxes = self.box_coder.decode_single(box_enc.flatten(0, 1), anchors_all.flatten(0, 1)).view(bsz, num_anchors, 4)
        sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)  # (B, 2) as (h, w)
        limits = postprocess.image_limits(sizes, boxes)  # (B, 4) as (w, h, w, h)
        boxes = torch.minimum(boxes.clamp_min(0), limits[:, None, :])
        probs = mixed_probs if class_probs is None else class_probs
        scores = probs[..., 1:]  # (B, A, C)
        num_fg = scores.shape[-1]

        # Top-k candidates per (image, class), thresholded, then one NMS for the whole batch.
        k = min(self.topk_candidates, num_anchors)
        top_scores, top_anchors = scores.topk(k, dim=1)  # (B, k, C)
        b_idx, rank, c_idx = (top_scores > self.score_thresh).nonzero(as_tuple=True)
        a_idx = top_anchors[b_idx, rank, c_idx]
        cand_scores = top_scores[b_idx, rank, c_idx]
        keep = postprocess.nms_per_image(boxes[b_idx, a_idx], cand_scores, b_idx, c_idx, num_fg, bsz, self.nms_thresh, self.detections_per_img)
        b, a, c = b_idx[keep], a_idx[keep], c_idx[keep]
        labels = c + 1

        # Mixture parameters and uncertainties only for the detections (Eq. 1, 8).
        raw = {key: None if value is None else value[b, a] for key, value in head_outputs.items()}
        det = postprocess.detection_values(self.mixture_parameters(raw), probs[b, a], labels, anchors_all[b, a], self.box_coder)
        det["boxes"] = boxes[b, a]
        det["scores"] = cand_scores[keep]
        det["labels"] = labels
        det["anchor_index"] = a

        # Back to each image's original pixel size.
        orig = torch.tensor(original_sizes, dtype=boxes.dtype, device=boxes.device)
        ratio = (orig / sizes).flip(1).repeat(1, 2)  # (B, 4) as (w, h, w, h)
        for key in postprocess.BOX_KEYS:
            det[key] = det[key] * (ratio[b] if det[key].dim() == 2 else ratio[b][:, None, :])
        return postprocess.split_per_image(det, b, bsz)

    # ---------------------------------------------------------------- MC-dropout
    @torch.no_grad()
    def forward_mc_dropout(self, images: list[Tensor], passes: int = 25) -> list[dict[str, Tensor]]:
        """MC-dropout inference (Sec. 4.2 baseline): dropout on the extra layers, ``passes`` runs.

        The trunk's features are computed once and reused; only the extra layers (where the
        dropout is) and the head run ``passes`` times. Detections come from the mean class
        probabilities and mean mixture box over passes; ``cls_entropy`` is the entropy of that
        mean, the MC-dropout acquisition value.
        """
        if self.backbone.extras_dropout <= 0:
            raise ValueError("MC-dropout needs a model built with extras_dropout > 0 (the paper uses 0.1).")
        image_list, _, original_sizes = self.preprocess(images)
        trunk = self.backbone.forward_trunk(image_list.tensors)
        self.backbone.mc_dropout = True
        try:
            prob_sum, mean_sum, features, outputs = None, None, None, None
            for _ in range(passes):
                features = self.backbone.forward_extras(trunk)
                outputs = self.head(features)
                box, probs = self.mixture_predictions(outputs)
                prob_sum = probs if prob_sum is None else prob_sum + probs
                mean_sum = box if mean_sum is None else mean_sum + box
        finally:
            self.backbone.mc_dropout = False
        return self._averaged_detections(outputs, mean_sum / passes, prob_sum / passes, image_list, features, original_sizes)

    @torch.no_grad()
    def forward_ensemble(self, images: list[Tensor], members: list[MixtureSSD]) -> list[dict[str, Tensor]]:
        """Ensemble inference (Sec. 4.2 baseline): this model and ``members`` (same architecture,
        independently trained) run on the same images; detections come from their mean class
        probabilities and mean mixture box per anchor, ``cls_entropy`` is the entropy of that
        mean (the ensemble's acquisition value). Mixture parameters are this model's.
        """
        image_list, _, original_sizes = self.preprocess(images)
        prob_sum, mean_sum, features, outputs = None, None, None, None
        for model in (*members, self):  # self last: its outputs carry the mixture parameters
            features = model.backbone(image_list.tensors)
            outputs = model.head(features)
            box, probs = model.mixture_predictions(outputs)
            prob_sum = probs if prob_sum is None else prob_sum + probs
            mean_sum = box if mean_sum is None else mean_sum + box
        n = len(members) + 1
        return self._averaged_detections(outputs, mean_sum / n, prob_sum / n, image_list, features, original_sizes)

    def _averaged_detections(self, outputs, mean_box, mean_probs, image_list, features, original_sizes):
        """Post-process averaged predictions: a mixture whose every component sits at the mean
        box reproduces that box under Eq. 7, and ``mean_probs`` replaces the class mixture."""
        mean_outputs = dict(outputs)
        mean_outputs["bbox_means"] = mean_box.unsqueeze(2).expand_as(outputs["bbox_means"]).contiguous()
        anchors = self.anchor_generator(image_list, features)
        return self.postprocess(mean_outputs, anchors, image_list.image_sizes, original_sizes, mean_probs)
