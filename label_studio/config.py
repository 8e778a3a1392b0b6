"""The labeling configuration of an almdn project: one image, rectangles, the class list.

Label Studio describes a labeling interface in XML. Ours draws axis-aligned boxes (rotation
is switched off: a detector's boxes are axis-aligned) with one label per box from the
project's classes, in the store's order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

#: ``from_name`` / ``to_name`` of every result our interface produces.
FROM_NAME = "label"
TO_NAME = "image"
#: The task data field holding the image URL.
IMAGE_FIELD = "image"


def build_label_config(classes: Sequence[str]) -> str:
    """The XML labeling config for ``classes`` (names are XML-escaped)."""
    if not classes:
        raise ValueError("a labeling config needs at least one class")
    labels = "\n".join(f"    <Label value={quoteattr(str(name))}/>" for name in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="${IMAGE_FIELD}" zoom="true" zoomControl="true"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}" canRotate="false">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>"
    )


def config_labels(config: str) -> list[str]:
    """The label values of the rectangle labels named :data:`FROM_NAME` in ``config``."""
    root = ET.fromstring(config)
    for node in root.iter("RectangleLabels"):
        if node.get("name") == FROM_NAME:
            return [label.get("value", "") for label in node.iter("Label")]
    return []
