"""Mixture heads: output layout for any K and classes, parameter counts."""

import pytest
import torch

from almdn.models.heads import MixtureHead, PlainHead, build_head


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("cls_head", ["gmm", "eff"])
def test_output_shapes(k, cls_head):
    head = MixtureHead([8, 16], [4, 6], num_classes=5, num_components=k, cls_head=cls_head, hidden_channels=12)
    out = head([torch.rand(2, 8, 4, 4), torch.rand(2, 16, 2, 2)])
    anchors = 4 * 4 * 4 + 2 * 2 * 6
    assert out["bbox_means"].shape == (2, anchors, k, 4)
    assert out["bbox_var_logits"].shape == out["bbox_weight_logits"].shape == (2, anchors, k, 4)
    assert out["cls_means"].shape == (2, anchors, k, 5)
    assert out["cls_weight_logits"].shape == (2, anchors, k)
    assert (out["cls_var_logits"] is None) == (cls_head == "eff")


def test_anchor_order_matches_torchvision():
    # The same weights laid out as torchvision's head must give the same per-anchor values.
    torch.manual_seed(0)
    head = MixtureHead([4], [2], num_classes=3, num_components=1, cls_head="eff", hidden_channels=0)
    x = torch.rand(1, 4, 3, 3)
    out = head([x])
    raw = head.towers[0](x)  # (1, A*P, H, W), anchor-major channels
    p = sum(head.split_sizes)
    # anchor 1 at (y=2, x=0): flattened index (2*3 + 0)*2 + 1
    torch.testing.assert_close(out["bbox_means"][0, 13, 0], raw[0, p : p + 4, 2, 0])


def test_eff_head_has_fewer_parameters_than_gmm_and_plain_is_torchvisions():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    gmm = build_head("gmm", [32], [4], 21, 4, 16)
    eff = build_head("eff", [32], [4], 21, 4, 16)
    assert count(eff) < count(gmm)
    # the difference is exactly the K x (C+1) class-variance outputs of the 1x1 projection
    assert count(gmm) - count(eff) == 4 * 4 * 21 * (16 + 1)
    assert isinstance(build_head("plain", [32], [4], 21), PlainHead)
    with pytest.raises(ValueError):
        build_head("nope", [32], [4], 21)


def test_depthwise_tower_and_ssdlite_plain_head():
    from torchvision.models.detection.ssdlite import SSDLiteHead

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    full = build_head("gmm", [32], [4], 21, 4, 16)
    dw = build_head("gmm", [32], [4], 21, 4, 16, depthwise=True)
    conv3 = dw.towers[0][0]
    assert conv3.kernel_size == (3, 3) and conv3.groups == 32
    # two depthwise 3x3 filters per channel (2*32*9), their BatchNorm (2*2*32) and a 1x1 to the
    # hidden width (2*32*16 + 16) replace the full 3x3 conv (32*16*9 + 16)
    assert count(full) - count(dw) == (32 * 16 * 9 + 16) - (2 * 32 * 9 + 2 * 2 * 32 + 2 * 32 * 16 + 16)
    out = dw([torch.rand(2, 32, 3, 3)])
    assert out["cls_means"].shape == (2, 36, 4, 21)
    direct = build_head("eff", [32], [4], 21, 2, 0, depthwise=True)
    assert [type(m).__name__ for m in direct.towers[0]] == ["Conv2d", "BatchNorm2d", "ReLU6", "Conv2d"]
    assert isinstance(build_head("plain", [32], [4], 21, depthwise=True).ssd_head, SSDLiteHead)
