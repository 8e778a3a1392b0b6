"""The labeling config built from the class list."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from label_studio.config import FROM_NAME, IMAGE_FIELD, TO_NAME, build_label_config, config_labels


def test_config_has_one_rectangle_control_with_the_classes_in_order():
    config = build_label_config(["person", "bus", "car"])
    root = ET.fromstring(config)
    [image] = root.iter("Image")
    assert (image.get("name"), image.get("value")) == (TO_NAME, f"${IMAGE_FIELD}")
    [control] = root.iter("RectangleLabels")
    assert (control.get("name"), control.get("toName"), control.get("canRotate")) == (FROM_NAME, TO_NAME, "false")
    assert config_labels(config) == ["person", "bus", "car"]


def test_names_with_xml_characters_survive():
    names = ['a "quoted" name', "fish & chips", "<tag>", "it's"]
    assert config_labels(build_label_config(names)) == names


def test_no_classes_is_refused_and_foreign_configs_have_no_labels():
    with pytest.raises(ValueError, match="at least one class"):
        build_label_config([])
    assert config_labels('<View><Image name="i" value="$img"/><RectangleLabels name="other" toName="i"><Label value="x"/></RectangleLabels></View>') == []


def test_an_empty_or_malformed_config_is_one_sentence():
    from label_studio.config import LabelStudioConfigError
    from label_studio.errors import LabelStudioError

    for bad in ("", "   ", None, "<View><Image", "not xml at all", "<View></Other>"):
        with pytest.raises(LabelStudioConfigError) as info:
            config_labels(bad)
        assert isinstance(info.value, LabelStudioError) and "\n" not in str(info.value) and str(info.value).endswith(".")
