"""The labeling configuration of an almdn project: one image, rectangles, the class list.

Label Studio describes a labeling interface in XML. Ours draws axis-aligned boxes (rotation
is switched off: a detector's boxes are axis-aligned) with one label per box from the
project's classes, in the store's order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

from label_studio.errors import LabelStudioError


class LabelStudioConfigError(LabelStudioError):
    """A labeling config from the server that is empty or not XML."""

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


def config_labels(config: str | None) -> list[str]:
    """The label values of the rectangle labels named :data:`FROM_NAME` in ``config``; an
    empty or malformed config (not XML) is one :class:`LabelStudioConfigError` sentence."""
    if not isinstance(config, str) or not config.strip():
        raise LabelStudioConfigError("The Label Studio project has an empty labeling config; push again to restore almdn's (or set it in the project's settings).")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise LabelStudioConfigError(f"The Label Studio project's labeling config is not valid XML ({exc}); push again to restore almdn's (or fix it in the project's settings).") from None
    for node in root.iter("RectangleLabels"):
        if node.get("name") == FROM_NAME:
            return [label.get("value", "") for label in node.iter("Label")]
    return []
