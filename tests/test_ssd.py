"""MixtureSSD: training losses, Eq. 7 inference, per-detection uncertainties, batched NMS."""

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection.ssd import SSD

from almdn.models import build_model
from almdn.models.uncertainty import classification_uncertainty, localization_uncertainty


def _targets(n_empty=1):
    boxes = torch.tensor([[10.0, 12.0, 40.0, 60.0], [70.0, 64.0, 110.0, 120.0]])
    full = [{"boxes": boxes, "labels": torch.tensor([1, 3])}, {"boxes": boxes[:1], "labels": torch.tensor([7])}]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * n_empty
    return full + empty


@pytest.mark.parametrize("head", ["gmm", "eff", "plain"])
def test_training_step_with_an_image_without_boxes(head):
    torch.manual_seed(0)
    model = build_model("ssd_small", 10, head=head).train()
    images = [torch.rand(3, 128, 128) for _ in range(3)]
    losses = model(images, _targets())
    assert set(losses) == {"loss_localization", "loss_classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_classification"].item() > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # (a map with no positives and no selected hard negative gets no gradient this step)
    assert sum(p.grad.abs().sum() for p in model.head.parameters()) > 0


def test_batch_of_only_empty_images_gives_zero_loss():
    model = build_model("ssd_small", 10, head="gmm").train()
    losses = model([torch.rand(3, 128, 128)] * 2, _targets(2)[2:])
    assert all(v.item() == 0.0 for v in losses.values())
    sum(losses.values()).backward()


def test_detections_carry_uncertainties_that_match_the_raw_mixture():
    torch.manual_seed(1)
    model = build_model("ssd_small", 10, head="gmm").eval()
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 160)]
    with torch.no_grad():
        dets = model(images)
        image_list, _, _ = model.preprocess(images)
        raw = model.head(model.backbone(image_list.tensors))
    for i, d in enumerate(dets):
        a = d["anchor_index"]
        mix = model.mixture_parameters({k: None if v is None else v[i, a] for k, v in raw.items()})
        al, ep = localization_uncertainty(mix["bbox_weights"], mix["bbox_means"], mix["bbox_variances"])
        torch.testing.assert_close(d["loc_aleatoric"], al.amax(-1))
        torch.testing.assert_close(d["loc_epistemic"], ep.amax(-1))
        cal, cep = classification_uncertainty(mix["cls_weights"], mix["cls_probs"], d["labels"], mix["cls_variances"])
        torch.testing.assert_close(d["cls_aleatoric"], cal)
        torch.testing.assert_close(d["cls_epistemic"], cep)
        # Eq. 7: score = sum_k pi_k softmax(mu_k) at the label
        mixed = (mix["cls_weights"][..., None] * mix["cls_probs"]).sum(1)
        torch.testing.assert_close(d["scores"], mixed.gather(1, d["labels"][:, None])[:, 0])
        h, w = images[i].shape[-2:]
        assert (d["boxes"][:, 0::2] <= w + 1e-4).all() and (d["boxes"][:, 1::2] <= h + 1e-4).all()
        assert len(d["boxes"]) <= model.detections_per_img


def test_k1_eff_box_is_the_single_component_mean():
    torch.manual_seed(2)
    model = build_model("ssd_small", 4, head="eff", num_components=1).eval()
    with torch.no_grad():
        d = model([torch.rand(3, 128, 128)])[0]
    # boxes are clipped to the image, component boxes are not
    clipped = d["component_boxes"][:, 0].clamp(0, 128)
    torch.testing.assert_close(clipped, d["boxes"])
    assert torch.all(d["loc_epistemic"] == 0)
    torch.testing.assert_close(d["component_weights"], torch.ones_like(d["component_weights"]))


class _AsDict(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.backbone(x)))


def test_batched_postprocess_equals_torchvision_per_class_loop():
    """The plain head through our batched NMS gives torchvision SSD's own detections."""
    torch.manual_seed(3)
    ours = build_model("ssd_small", 5, head="plain", topk_candidates=50, detections_per_img=40).eval()
    reference = SSD(
        _AsDict(ours.backbone),
        ours.anchor_generator,
        ours.size,
        6,
        image_mean=[0.5] * 3,
        image_std=[0.25] * 3,
        head=ours.head.ssd_head,
        score_thresh=0.01,
        nms_thresh=0.45,
        detections_per_img=40,
        topk_candidates=50,
    ).eval()
    images = [torch.rand(3, 128, 128) for _ in range(3)]
    with torch.no_grad():
        got, expected = ours(images), reference(images)
    for g, e in zip(got, expected):
        assert len(g["boxes"]) == len(e["boxes"]) > 0
        order_g = torch.argsort(g["scores"] * 100 + g["labels"], descending=True)
        order_e = torch.argsort(e["scores"] * 100 + e["labels"], descending=True)
        torch.testing.assert_close(g["scores"][order_g], e["scores"][order_e])
        torch.testing.assert_close(g["boxes"][order_g], e["boxes"][order_e])
        assert torch.equal(g["labels"][order_g], e["labels"][order_e])
        assert torch.isnan(g["loc_aleatoric"]).all()  # plain head: no box distribution


def test_mc_dropout_reuses_the_trunk_and_varies_between_runs():
    torch.manual_seed(4)
    # keep every candidate so that the extra map's anchors (where the dropout is) are compared
    keep_all = dict(topk_candidates=10_000, detections_per_img=100_000, nms_thresh=1.0)
    model = build_model("ssd_small", 3, head="gmm", extras_dropout=0.1, **keep_all).eval()
    images = [torch.rand(3, 128, 128)]
    calls = {"n": 0}
    model.backbone.trunk.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    first = model.forward_mc_dropout(images, passes=5)[0]
    assert calls["n"] == 1
    second = model.forward_mc_dropout(images, passes=5)[0]
    order = lambda d: torch.argsort(d["anchor_index"] * 10 + d["labels"])  # noqa: E731
    a, b = first["scores"][order(first)], second["scores"][order(second)]
    in_trunk_maps = first["anchor_index"][order(first)] < (16 * 16 + 8 * 8) * 4
    assert torch.equal(a[in_trunk_maps], b[in_trunk_maps])  # no dropout before the extras
    assert not torch.equal(a[~in_trunk_maps], b[~in_trunk_maps])
    assert not model.backbone.mc_dropout  # switched off again
    with torch.no_grad():  # plain eval has dropout off: deterministic
        assert torch.equal(model(images)[0]["scores"], model(images)[0]["scores"])
    with pytest.raises(ValueError, match="extras_dropout"):
        build_model("ssd_small", 3).eval().forward_mc_dropout(images)



def test_ensemble_of_identical_members_equals_the_single_model_and_disagreement_raises_entropy():
    import copy

    torch.manual_seed(5)
    keep_all = dict(topk_candidates=10_000, detections_per_img=100_000, nms_thresh=1.0, score_thresh=-1.0)
    model = build_model("ssd_small", 3, head="gmm", **keep_all).eval()
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    with torch.no_grad():
        for p in model.head.parameters():  # confident predictions, unlike a fresh init
            p.add_(0.3 * torch.randn_like(p))
        single = model(images)
    same = model.forward_ensemble(images, [copy.deepcopy(model), copy.deepcopy(model)])
    for a, b in zip(single, same):
        # near-equal scores may swap places: compare by (anchor, class)
        oa, ob = (torch.argsort(d["anchor_index"] * 10 + d["labels"]) for d in (a, b))
        assert torch.equal(a["anchor_index"][oa], b["anchor_index"][ob])
        for key in ("boxes", "scores", "labels", "cls_entropy"):
            assert torch.allclose(a[key][oa], b[key][ob], rtol=1e-4, atol=1e-4), key  # sums of 3 equal terms
    other = build_model("ssd_small", 3, head="gmm", **keep_all).eval()
    with torch.no_grad():
        for p in other.head.parameters():  # a member that disagrees
            p.add_(0.3 * torch.randn_like(p))
        theirs = other(images)
    mixed = model.forward_ensemble(images, [other])

    def entropies(dets):  # per (anchor, class), every pair is a detection here
        return torch.cat([d["cls_entropy"][torch.argsort(d["anchor_index"] * 10 + d["labels"])] for d in dets])

    # the entropy of averaged distributions is at least the average of their entropies (concavity)
    average_of_entropies = (entropies(single) + entropies(theirs)) / 2
    assert (entropies(mixed) >= average_of_entropies - 1e-5).all()
    assert entropies(mixed).mean() > average_of_entropies.mean() + 0.01


def test_image_features_are_one_pooled_vector_per_image():
    model = build_model("ssd_small", 3).eval()
    feats = model.image_features([torch.rand(3, 128, 128), torch.zeros(3, 100, 140)])
    assert feats.shape == (2, model.backbone.out_channels[1]) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])


def test_mobilenet_builder_shapes_and_head_cost_independent_of_k():
    m4 = build_model("ssd_mobilenet_v2", 20, head="gmm", num_components=4, pretrained=False)
    m8 = build_model("ssd_mobilenet_v2", 20, head="gmm", num_components=8, pretrained=False)
    plain = build_model("ssd_mobilenet_v2", 20, head="plain", pretrained=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # The 3x3 tower is shared; only the 1x1 projection grows with K.
    assert count(m4) < count(m8) < 1.5 * count(plain)
    with torch.no_grad():
        d = m4.eval()([torch.rand(3, 200, 300)])[0]
    assert d["class_probs"].shape[1:] == (4, 21)


def test_ssdlite_builder_has_torchvisions_anchors_and_a_depthwise_head():
    from torchvision.models.detection.ssdlite import SSDLiteHead

    gmm = build_model("ssdlite320_mobilenet_v3_large", 3, head="gmm", pretrained=False).eval()
    plain = build_model("ssdlite320_mobilenet_v3_large", 3, head="plain", pretrained=False).eval()
    assert isinstance(plain.head.ssd_head, SSDLiteHead)
    assert gmm.size == (320, 320) and gmm.anchor_generator.num_anchors_per_location() == [6] * 6
    assert all(t[0].groups == t[0].in_channels for t in gmm.head.towers)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(gmm) < 1.2 * count(plain)
    with torch.no_grad():
        d = gmm([torch.rand(3, 120, 160)])[0]
    assert d["class_probs"].shape[1:] == (4, 4) and d["boxes"].shape[1] == 4
