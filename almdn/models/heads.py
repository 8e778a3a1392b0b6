"""SSD heads that predict Gaussian mixtures (Eq. 2), and the plain SSD head as baseline.

Every head returns the same dictionary of tensors with a mixture dimension K, so the loss,
inference and uncertainty code never branches on the head type:

* ``bbox_means``, ``bbox_var_logits``, ``bbox_weight_logits``: ``(B, A, K, 4)``
* ``cls_means``, ``cls_var_logits``: ``(B, A, K, C+1)``; ``cls_weight_logits``: ``(B, A, K)``

``*_var_logits`` is None where the head has no such variance (the "eff" classification head,
the plain head).

Design: the reference implementation uses one 3x3 conv per
output type and per component, which on SSD300 adds ~26 M parameters and ~10 GMACs. Here each
feature map has ONE small tower that emits every mixture output at once: a 3x3 conv to
``hidden_channels`` (ReLU) followed by a 1x1 conv to all ``A x P`` outputs. The 3x3 work is
shared by all outputs and the wide projection is 1x1, so the head costs about as much as the
plain head's two 3x3 convs, for any K and number of classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.ssd import SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead

from almdn.models.backbones import SSDLITE_NORM
from almdn.registry import DEFAULT_NUM_COMPONENTS, HEAD_TYPES, MIXTURE_HEAD_TYPES

HeadType = Literal["gmm", "eff", "plain"]  # the names of almdn.registry.HEAD_TYPES


def check_mixture_head(cls_head: str, num_components: int) -> None:
    """The mixture head's type and K are valid (shared by the SSD and Faster R-CNN heads)."""
    if cls_head not in MIXTURE_HEAD_TYPES:
        raise ValueError(f"cls_head must be one of {', '.join(MIXTURE_HEAD_TYPES)}, not {cls_head!r}")
    if num_components < 1:
        raise ValueError("num_components (K) must be >= 1")


def _flatten_anchors(x: Tensor, num_anchors: int) -> Tensor:
    """``(B, A*P, H, W)`` -> ``(B, H*W*A, P)``, torchvision's anchor order (y, x, anchor)."""
    b, _, h, w = x.shape
    return x.view(b, num_anchors, -1, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * num_anchors, -1)


class MixtureHead(nn.Module):
    """Mixture-density SSD head for any backbone (Eq. 2; Fig. 2a "gmm", Fig. 2b "eff").

    Per anchor it predicts, for each of the K components, 4 box means, 4 box variance logits,
    4 box weight logits (pi softmaxed over K separately per coordinate), C+1 class means,
    C+1 class variance logits ("gmm" only) and one class weight logit (pi softmaxed over K).

    Args:
        in_channels: channels of each feature map.
        num_anchors: anchors per location of each feature map.
        num_classes: classes including background (C+1).
        num_components: K; 1 gives the single-Gaussian model (SGM in Tab. 1).
        cls_head: "gmm" (class means and variances) or "eff" (means only, Sec. 3.2).
        hidden_channels: width of the shared 3x3 tower per feature map (an int for all maps
            or one per map); 0 means a single 3x3 conv straight to the outputs.
        depthwise: SSDlite's depthwise-separable form: the tower's 3x3 conv is depthwise with
            two filters per channel (with BatchNorm and ReLU6, as torchvision's SSDLiteHead),
            followed by 1x1 convs; a full
            3x3 conv on MobileNet's 672-channel map would cost more than the backbone.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_anchors: list[int],
        num_classes: int,
        num_components: int = DEFAULT_NUM_COMPONENTS,
        cls_head: Literal["gmm", "eff"] = "gmm",
        hidden_channels: int | list[int] = 128,
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        check_mixture_head(cls_head, num_components)
        self.num_classes = num_classes
        self.num_components = num_components
        self.cls_head = cls_head
        self.num_anchors = list(num_anchors)
        k, c = num_components, num_classes
        # Column layout of the P outputs per anchor.
        self.split_sizes = [k * 4, k * 4, k * 4, k * c] + ([k * c] if cls_head == "gmm" else []) + [k]
        per_anchor = sum(self.split_sizes)
        if isinstance(hidden_channels, int):
            hidden_channels = [hidden_channels] * len(in_channels)
        self.towers = nn.ModuleList()
        for cin, a, hid in zip(in_channels, num_anchors, hidden_channels):
            if depthwise:
                # Two depthwise filters per channel (outputs 2i, 2i+1 read channel i), as
                # torchvision's SSDLiteHead has one depthwise conv in each of its class and box
                # heads: with hidden 0 the tower can hold exactly that head (--init).
                layers: list[nn.Module] = [
                    nn.Conv2d(cin, 2 * cin, 3, padding=1, groups=cin, bias=False), SSDLITE_NORM(2 * cin), nn.ReLU6(inplace=True)
                ]
                if hid > 0:
                    layers += [nn.Conv2d(2 * cin, hid, 1), nn.ReLU(inplace=True)]
                tower = nn.Sequential(*layers, nn.Conv2d(hid if hid > 0 else 2 * cin, a * per_anchor, 1))
            elif hid > 0:
                tower = nn.Sequential(
                    nn.Conv2d(cin, hid, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hid, a * per_anchor, 1)
                )
            else:
                tower = nn.Sequential(nn.Conv2d(cin, a * per_anchor, 3, padding=1))
            self.towers.append(tower)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:  # the depthwise conv has none: BatchNorm follows it
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor | None]:
        out = torch.cat(
            [_flatten_anchors(tower(f), a) for tower, f, a in zip(self.towers, features, self.num_anchors)], dim=1
        )
        b, n, _ = out.shape
        k, c = self.num_components, self.num_classes
        parts = list(out.split(self.split_sizes, dim=-1))
        bbox_means, bbox_var, bbox_w = (p.reshape(b, n, k, 4) for p in parts[:3])
        cls_means = parts[3].reshape(b, n, k, c)
        cls_var = parts[4].reshape(b, n, k, c) if self.cls_head == "gmm" else None
        return {
            "bbox_means": bbox_means,
            "bbox_var_logits": bbox_var,
            "bbox_weight_logits": bbox_w,
            "cls_means": cls_means,
            "cls_var_logits": cls_var,
            "cls_weight_logits": parts[-1],
        }


class PlainHead(nn.Module):
    """torchvision's plain SSD head (``depthwise``: its SSDLiteHead), its outputs viewed as a
    mixture with K = 1 and no variances."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int, depthwise: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_components = 1
        self.cls_head = "plain"
        if depthwise:
            self.ssd_head: nn.Module = SSDLiteHead(in_channels, num_anchors, num_classes, SSDLITE_NORM)
        else:
            self.ssd_head = SSDHead(in_channels, num_anchors, num_classes)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor | None]:
        out = self.ssd_head(features)
        reg, cls = out["bbox_regression"].unsqueeze(2), out["cls_logits"].unsqueeze(2)
        return {
            "bbox_means": reg,
            "bbox_var_logits": None,
            "bbox_weight_logits": reg.new_zeros(()).expand_as(reg),
            "cls_means": cls,
            "cls_var_logits": None,
            "cls_weight_logits": cls.new_zeros(()).expand(*cls.shape[:3]),
        }


def build_head(
    head: HeadType,
    in_channels: list[int],
    num_anchors: list[int],
    num_classes: int,
    num_components: int = DEFAULT_NUM_COMPONENTS,
    hidden_channels: int | list[int] = 128,
    depthwise: bool = False,
) -> nn.Module:
    """The head named ``head`` ("gmm", "eff" or "plain"); ``num_classes`` includes background;
    ``depthwise`` gives SSDlite's depthwise-separable form."""
    if head == "plain":
        return PlainHead(in_channels, num_anchors, num_classes, depthwise)
    if head in MIXTURE_HEAD_TYPES:
        return MixtureHead(in_channels, num_anchors, num_classes, num_components, head, hidden_channels, depthwise)
    raise ValueError(f"Unknown head {head!r}; choose one of {', '.join(HEAD_TYPES)}.")
