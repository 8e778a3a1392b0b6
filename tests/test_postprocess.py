"""The shared mixture post-processing (almdn.models.postprocess), on its own and through both
detectors."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder  # torchvision's box coder; no public import path
from torchvision.ops import nms

from almdn.models import build_model
from almdn.models.postprocess import (
    BOX_KEYS,
    MIXTURE_KEYS,
    edge_sigmas,
    image_limits,
    mixture_parameters,
    mixture_predictions,
    mixture_records,
    nms_per_image,
    split_per_image,
)


def _raw(n: int = 5, k: int = 3, c: int = 4, variances: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return {
        "bbox_means": r(n, k, 4),
        "bbox_var_logits": r(n, k, 4) if variances else None,
        "bbox_weight_logits": r(n, k, 4),
        "cls_means": r(n, k, c),
        "cls_var_logits": r(n, k, c) if variances else None,
        "cls_weight_logits": r(n, k),
    }


def test_mixture_parameters_are_eq2():
    raw = _raw()
    mix = mixture_parameters(raw, min_variance=1e-6)
    torch.testing.assert_close(mix["bbox_weights"].sum(1), torch.ones(5, 4, dtype=torch.float64))  # pi over K per coordinate
    torch.testing.assert_close(mix["cls_weights"].sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(mix["bbox_variances"], torch.sigmoid(raw["bbox_var_logits"]).clamp_min(1e-6))
    torch.testing.assert_close(mix["cls_probs"], torch.softmax(raw["cls_means"], -1))
    eff = mixture_parameters(_raw(variances=False))
    assert eff["bbox_variances"] is None and eff["cls_variances"] is None


def test_mixture_predictions_are_eq7():
    raw = _raw()
    box, probs = mixture_predictions(raw)
    pi_b = torch.softmax(raw["bbox_weight_logits"], 1)
    torch.testing.assert_close(box, (pi_b * raw["bbox_means"]).sum(1))
    pi_c = torch.softmax(raw["cls_weight_logits"], 1)
    torch.testing.assert_close(probs, (pi_c[..., None] * torch.softmax(raw["cls_means"], -1)).sum(1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, dtype=torch.float64))


def test_image_limits():
    limits = image_limits([(10, 20), (30, 40)], torch.zeros(1))
    assert limits.tolist() == [[20, 10, 20, 10], [40, 30, 40, 30]]


def test_nms_per_image_equals_a_loop_over_images_and_classes():
    g = torch.Generator().manual_seed(3)
    n, num_images, num_classes, cap = 300, 3, 4, 7
    xy = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1)
    scores = torch.rand(n, generator=g)
    images = torch.randint(0, num_images - 1, (n,), generator=g)  # the last image has no candidate
    classes = torch.randint(0, num_classes, (n,), generator=g)
    keep = nms_per_image(boxes, scores, images, classes, num_classes, num_images, 0.5, cap)
    assert (images[keep].diff() >= 0).all()  # grouped by image, in image order
    for i in range(num_images):
        mine = keep[images[keep] == i]
        reference = []
        for c in range(num_classes):
            idx = torch.nonzero((images == i) & (classes == c)).squeeze(1)
            reference.append(idx[nms(boxes[idx], scores[idx], 0.5)])
        reference = torch.cat(reference)
        reference = reference[scores[reference].argsort(descending=True)][:cap]
        assert mine.tolist() == reference.tolist()


def test_split_per_image_gives_every_image_its_own_even_when_empty():
    det = {"scores": torch.tensor([0.9, 0.8, 0.7]), "boxes": torch.arange(12.0).view(3, 4)}
    out = split_per_image(det, torch.tensor([0, 0, 2]), 4)
    assert [len(d["scores"]) for d in out] == [2, 0, 1, 0]
    assert out[2]["boxes"].tolist() == [[8.0, 9.0, 10.0, 11.0]]


def test_edge_sigmas_are_the_delta_method_through_the_box_decoder():
    """sd(edge)^2 = sum_j (d edge / d offset_j)^2 Sigma_j, the Jacobian taken through the very
    decoder that makes the boxes."""
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    g = torch.Generator().manual_seed(1)
    n, k = 4, 3
    anchors = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 16.0], [5.0, 5.0, 105.0, 55.0], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    offsets = torch.randn(n, k, 4, generator=g, dtype=torch.float64) * 0.5
    variances = torch.rand(n, k, 4, generator=g, dtype=torch.float64) * 0.1
    boxes = coder.decode_single(offsets.reshape(-1, 4), anchors.repeat_interleave(k, 0)).view(n, k, 4)
    sigmas = edge_sigmas(variances, boxes, anchors, coder.weights)
    for i in range(n):
        for j in range(k):
            decode = lambda d: coder.decode_single(d[None], anchors[i : i + 1])[0]  # noqa: E731
            jac = torch.autograd.functional.jacobian(decode, offsets[i, j])  # (4 edges, 4 offsets)
            expected = (jac**2 @ variances[i, j]).sqrt()
            torch.testing.assert_close(sigmas[i, j], expected)


def test_mixture_records_are_plain_lists():
    n, k, c = 3, 2, 4
    g = torch.Generator().manual_seed(2)
    mixture = {
        "component_boxes": torch.rand(n, k, 4, generator=g),
        "component_weights": torch.softmax(torch.randn(n, k, 4, generator=g), 1),
        "component_variances": torch.rand(n, k, 4, generator=g),
        "component_sigmas": torch.rand(n, k, 4, generator=g),
        "class_weights": torch.softmax(torch.randn(n, k, generator=g), 1),
        "class_probs": torch.softmax(torch.randn(n, k, c, generator=g), -1),
    }
    records = mixture_records(mixture)
    assert len(records) == n
    r = records[1]
    assert len(r["component_boxes"]) == k and len(r["component_boxes"][0]) == 4
    assert sum(r["component_weights"]) == pytest.approx(1.0)  # pi averaged over the four coordinates
    assert r["component_edge_weights"] == mixture["component_weights"][1].tolist()
    assert sum(r["mixture_probs"]) == pytest.approx(1.0)  # Eq. 7
    assert mixture_records({key: value.numpy() for key, value in mixture.items()})[1]["class_weights"] == pytest.approx(r["class_weights"])
    assert mixture_records({key: value[:0] for key, value in mixture.items()}) == []


@pytest.mark.parametrize("arch,kwargs", [("ssd_small", {}), ("frcnn_mobilenet_v2", {"pretrained": False, "image_size": 128})])
@pytest.mark.parametrize("head", ["gmm", "plain"])
def test_both_detectors_return_the_mixture_for_drawing(arch, kwargs, head):
    """Component boxes, per-edge sigmas, weights and the anchor (proposal) of every detection,
    in the original image's pixels, from either detector."""
    torch.manual_seed(0)
    model = build_model(arch, 3, head=head, num_components=2, score_thresh=0.0, **kwargs).eval()
    images = [torch.rand(3, 90, 150), torch.rand(3, 128, 128)]
    with torch.no_grad():
        dets = model(images)
    k = model.num_components
    for det, image in zip(dets, images):
        n = len(det["scores"])
        assert n > 0
        for key in BOX_KEYS:
            assert det[key].shape[-1] == 4 and det[key].shape[0] == n
        for key in MIXTURE_KEYS:
            assert det[key].shape[:2] == (n, k)
        h, w = image.shape[-2:]
        assert (det["boxes"][:, 0::2] <= w + 1e-3).all() and (det["boxes"][:, 1::2] <= h + 1e-3).all()
        sigmas = det["component_sigmas"]
        if head == "plain":
            assert torch.isnan(sigmas).all()
        else:
            assert torch.isfinite(sigmas).all() and (sigmas > 0).all()
            torch.testing.assert_close(sigmas[..., :2], sigmas[..., 2:])  # both edges of an axis
    if arch == "ssd_small":  # the anchor is the model's own, scaled to the image
        with torch.no_grad():
            image_list, _, _ = model.preprocess(images[:1])
            anchors = model.anchor_generator(image_list, model.backbone(image_list.tensors))[0]
        scale = torch.tensor([150 / 128, 90 / 128] * 2)
        torch.testing.assert_close(dets[0]["anchor_boxes"], anchors[dets[0]["anchor_index"]] * scale)
