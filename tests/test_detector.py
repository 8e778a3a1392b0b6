"""The Detector protocol: both detectors satisfy it, and the builders say so."""

from __future__ import annotations

import typing

import pytest

from almdn.models import Detector, build_model, model_from_config


@pytest.mark.parametrize("arch,kwargs", [("ssd_small", {}), ("frcnn_mobilenet_v2", {"pretrained": False, "image_size": 128})])
def test_every_detector_is_a_detector(arch, kwargs):
    model = build_model(arch, 3, **kwargs)
    assert isinstance(model, Detector)
    assert model.head_type == "gmm" and model.num_components == 4 and model.num_classes == 4
    assert isinstance(model_from_config(model.config), Detector)


def test_the_builders_are_annotated_with_the_protocol():
    import almdn.models

    for builder in (build_model, model_from_config):
        assert typing.get_type_hints(builder, vars(almdn.models))["return"] is Detector
