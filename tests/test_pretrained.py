"""Starting from torchvision's detectors (--init): exact loading, class mapping, Eq. 7 at init."""

from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import (
    SSD300_VGG16_Weights,
    fasterrcnn_mobilenet_v3_large_320_fpn,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    ssd300_vgg16,
)
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet, SSDLiteHead

from almdn.models import build_model
from almdn.models.pretrained import InitError, apply_init, coco_categories, coco_class_map, coco_state_dict, init_build_options

COCO = coco_categories()
NAMES = [n for n in COCO[1:] if n != "N/A"]  # the 80 categories


def _silence_unused_ids(model: nn.Module) -> None:
    """COCO's unused ids ("N/A") can never win: logit -1e4, so the softmax over torchvision's
    91 outputs equals the softmax over the 80 categories almdn's model has."""
    unused = torch.tensor([i for i, n in enumerate(COCO) if n == "N/A"])
    with torch.no_grad():
        if hasattr(model, "roi_heads"):  # Faster R-CNN: one linear layer of 91 scores
            model.roi_heads.box_predictor.cls_score.weight[unused] = 0.0
            model.roi_heads.box_predictor.cls_score.bias[unused] = -1e4
            return
        for layer in model.head.classification_head.module_list:
            final = layer if isinstance(layer, nn.Conv2d) else layer[-1]
            rows = (torch.arange(final.out_channels // 91)[:, None] * 91 + unused).flatten()
            final.weight[rows] = 0.0
            final.bias[rows] = -1e4


def _ssdlite_with_full_tail() -> SSD:
    """torchvision's ssdlite320_mobilenet_v3_large as its COCO weights were trained: the builder
    with weights_backbone=None switches to the reduced tail, so the same parts are put together
    here with the full one (as torchvision does when it loads the ImageNet backbone)."""
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = SSDLiteFeatureExtractorMobileNet(mobilenet_v3_large(norm_layer=norm, reduced_tail=False).features, 13, norm)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead([672, 960, 512, 256, 256, 128], anchors.num_anchors_per_location(), 91, norm)
    model = SSD(
        backbone, anchors, (320, 320), 91, head=head, score_thresh=0.001, nms_thresh=0.55, detections_per_img=300,
        topk_candidates=300, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    # torchvision's 0.03-std init of the extra layers and head makes every location score the
    # same up to rounding; He init gives scores that differ, so no ties decide the detections.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    return model


def _assert_same_detections(ours, theirs):
    """almdn's detections (classes NAMES) equal torchvision's (COCO indices), image by image."""
    for o, t in zip(ours, theirs):
        assert len(t["boxes"]) > 0
        torch.testing.assert_close(o["boxes"], t["boxes"])
        torch.testing.assert_close(o["scores"], t["scores"])
        # almdn's label i is NAMES[i-1]; torchvision's is the COCO index.
        assert [NAMES[i - 1] for i in o["labels"].tolist()] == [COCO[i] for i in t["labels"].tolist()]


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 90, 120, generator=g), torch.rand(3, 64, 64, generator=g)]


@pytest.mark.parametrize(
    "arch, make_tv, post",
    [
        ("ssd300_vgg16", lambda: ssd300_vgg16(weights=None, weights_backbone=None),
         dict(score_thresh=0.01, nms_thresh=0.45, topk_candidates=400, detections_per_img=200)),
        ("ssdlite320_mobilenet_v3_large", _ssdlite_with_full_tail,
         dict(score_thresh=0.001, nms_thresh=0.55, topk_candidates=300, detections_per_img=300)),
    ],
)
def test_plain_head_from_a_torchvision_file_detects_exactly_as_torchvision(tmp_path, arch, make_tv, post):
    torch.manual_seed(0)
    tv = make_tv().eval()
    _silence_unused_ids(tv)
    # BatchNorm statistics other than the defaults, so that loading them is checked too.
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "detector.pth"
    torch.save(tv.state_dict(), path)
    model = build_model(arch, len(NAMES), head="plain", class_names=NAMES, pretrained=False, **post).eval()
    message = apply_init(model, str(path), arch)
    assert "person -> person" in message and "starting fresh" not in message
    with torch.no_grad():
        ours, theirs = model(_images()), tv(_images())
    _assert_same_detections(ours, theirs)


# Small images and few proposals keep the ResNet-50 Faster R-CNN fast on a CPU.
_FRCNN_SMALL = dict(min_size=128, max_size=160, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, rpn_score_thresh=0.0)


# almdn's Faster R-CNN architectures and torchvision's builders of the same modules.
_TORCHVISION_FRCNN = {
    "frcnn_resnet50_fpn": fasterrcnn_resnet50_fpn,
    "frcnn_resnet50_fpn_v2": fasterrcnn_resnet50_fpn_v2,
    "frcnn_mobilenet_v3_large_fpn": fasterrcnn_mobilenet_v3_large_fpn,
    "frcnn_mobilenet_v3_large_320_fpn": fasterrcnn_mobilenet_v3_large_320_fpn,
}


def _frcnn_file(tmp_path, arch="frcnn_resnet50_fpn"):
    torch.manual_seed(0)
    tv = _TORCHVISION_FRCNN[arch](weights=None, weights_backbone=None, **_FRCNN_SMALL).eval()
    # torchvision's 0.01-std class layer scores every RoI ~1/91, under the 0.05 threshold: a
    # wider init gives detections that differ, so the comparison below has something to check.
    # Random MobileNetV3 features vanish (std ~1e-8) in eval mode: He init keeps them alive.
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.weight.normal_(0.0, 0.3)
        for m in tv.backbone.body.modules() if "mobilenet" in arch else ():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
    _silence_unused_ids(tv)
    path = tmp_path / "frcnn.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def _frcnn(head, names, arch="frcnn_resnet50_fpn", **kwargs):
    small = {("image_size" if k == "min_size" else k): v for k, v in _FRCNN_SMALL.items()}
    return build_model(arch, len(names), head=head, class_names=names, pretrained=False, **small, **kwargs).eval()


@pytest.mark.parametrize("arch", list(_TORCHVISION_FRCNN))
def test_faster_rcnn_plain_from_a_torchvision_file_detects_exactly_as_torchvision(tmp_path, arch):
    tv, path = _frcnn_file(tmp_path, arch)
    options = init_build_options(arch, "plain", str(path))  # what --init PATH builds: frozen BatchNorm
    model = _frcnn("plain", NAMES, arch, **{k: v for k, v in options.items() if k != "pretrained"})
    assert "person -> person" in apply_init(model, str(path), arch)
    with torch.no_grad():
        ours, theirs = model(_images()), tv(_images())
    _assert_same_detections(ours, theirs)


@pytest.mark.parametrize("arch", ["frcnn_resnet50_fpn", "frcnn_mobilenet_v3_large_320_fpn"])
def test_faster_rcnn_gmm_starts_at_the_pretrained_predictor_for_mapped_classes(tmp_path, arch):
    _, path = _frcnn_file(tmp_path, arch)
    names = ["person", "tree", "motorbike"]
    plain = _frcnn("plain", names, arch)
    gmm = _frcnn("gmm", names, arch, num_components=3, class_agnostic_boxes=False)
    apply_init(plain, str(path), arch)
    assert "starting fresh: tree" in apply_init(gmm, str(path), arch)
    x = torch.rand(5, 1024)  # RoI representations from the box head
    with torch.no_grad():
        raw_plain, raw_gmm = plain.roi_heads.box_predictor(x), gmm.roi_heads.box_predictor(x)
        w = torch.softmax(raw_gmm["bbox_weight_logits"], dim=-2)
        box_mean = (w * raw_gmm["bbox_means"]).sum(dim=-2)  # Eq. 7 per box set
    mapped = [0, 1, 3]
    torch.testing.assert_close(box_mean[:, mapped], raw_plain["bbox_means"][:, mapped, 0], atol=1e-5, rtol=0)
    assert (raw_gmm["bbox_means"][:, 1, 0] - raw_gmm["bbox_means"][:, 1, 1]).abs().max() > 1e-3
    for k in range(3):
        torch.testing.assert_close(raw_gmm["cls_means"][:, k, mapped], raw_plain["cls_means"][:, 0, mapped], atol=1e-5, rtol=0)
    with pytest.raises(InitError, match="class-specific boxes"):
        apply_init(_frcnn("gmm", names, arch), str(path), arch)


@pytest.mark.parametrize(
    "arch, make_tv",
    [("ssd300_vgg16", lambda: ssd300_vgg16(weights=None, weights_backbone=None)), ("ssdlite320_mobilenet_v3_large", _ssdlite_with_full_tail)],
)
def test_gmm_head_starts_at_the_pretrained_predictor_for_mapped_classes(tmp_path, arch, make_tv):
    torch.manual_seed(0)
    tv = make_tv()
    for m in tv.modules():  # BatchNorm statistics other than the defaults (SSDlite's head has some)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "ssd.pth"
    torch.save(tv.state_dict(), path)
    names = ["Motorbike", "tree", "person"]
    plain = build_model(arch, 3, head="plain", class_names=names, pretrained=False).eval()
    gmm = build_model(arch, 3, head="gmm", num_components=3, class_names=names, pretrained=False, hidden_channels=0).eval()
    apply_init(plain, str(path), arch)
    message = apply_init(gmm, str(path), arch)
    assert "Motorbike -> motorcycle" in message and "person -> person" in message and "starting fresh: tree" in message
    with torch.no_grad():
        x = plain.preprocess(_images())[0].tensors
        features = plain.backbone(x)
        raw_plain, raw_gmm = plain.head(features), gmm.head(gmm.backbone(x))
        box_gmm, _ = gmm.mixture_predictions(raw_gmm)  # Eq. 7
    torch.testing.assert_close(box_gmm, raw_plain["bbox_means"][:, :, 0], atol=1e-5, rtol=0)
    # the components differ (so they can separate in training) but their mean is the predictor's
    assert (raw_gmm["bbox_means"][:, :, 0] - raw_gmm["bbox_means"][:, :, 1]).abs().max() > 1e-3
    mapped = [0, 1, 3]  # background, Motorbike, person
    for k in range(3):
        torch.testing.assert_close(raw_gmm["cls_means"][:, :, k, mapped], raw_plain["cls_means"][:, :, 0, mapped], atol=1e-5, rtol=0)
    # the fresh class does not copy any pretrained row
    assert not torch.allclose(raw_gmm["cls_means"][:, :, 0, 2], raw_plain["cls_means"][:, :, 0, 2])


def test_class_names_map_case_insensitively_with_synonyms():
    mapping = coco_class_map(["MotorBike", "aeroplane", "tvmonitor", "dining_table", "tree"])
    assert {label: COCO[i] for label, i in mapping.items()} == {
        0: "__background__", 1: "motorcycle", 2: "airplane", 3: "tv", 4: "dining table"
    }


def test_missing_coco_weights_offline_is_one_sentence_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty cache

    def offline(self, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(SSD300_VGG16_Weights, "get_state_dict", offline)
    with pytest.raises(InitError) as err:
        coco_state_dict("ssd300_vgg16")
    message = str(err.value)
    assert "ssd300_vgg16_coco-b556d3b4.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert message.count(". ") == 0 and "\n" not in message


def test_a_file_of_another_architecture_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "lite.pth"
    torch.save(_ssdlite_with_full_tail().state_dict(), path)
    model = build_model("ssd300_vgg16", 2, head="plain", class_names=["person", "car"], pretrained=False)
    with pytest.raises(InitError, match="does not match this architecture"):
        apply_init(model, str(path), "ssd300_vgg16")
