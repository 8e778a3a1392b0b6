"""Anchor generation options: the ``--anchor-scales`` / ``--anchor-ratios`` texts, an SSD's
anchor generator with its scales and ratios replaced, and Faster R-CNN's anchor sizes and ratios
from the same options."""

from __future__ import annotations

from typing import Any, Sequence

from torchvision.models.detection.anchor_utils import DefaultBoxGenerator


# ----------------------------------------------------------------------------- options

def parse_anchor_scales(text: str | None) -> list[float] | None:
    """``"0.05,0.1,0.2"`` -> ``[0.05, 0.1, 0.2]`` (None / empty -> None)."""
    if text is None or not str(text).strip():
        return None
    try:
        return [float(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"Anchor scales {text!r} are not comma-separated numbers (e.g. 0.04,0.1,0.2,0.4).") from None


def parse_anchor_ratios(text: str | None) -> list[float] | list[list[float]] | None:
    """``"2,3"`` (every level) or ``"2;2,3;2"`` (per level, ``;`` between levels)."""
    if text is None or not str(text).strip():
        return None
    try:
        levels = [[float(v) for v in part.split(",") if v] for part in str(text).replace(" ", "").split(";")]
    except ValueError:
        raise ValueError(f"Anchor ratios {text!r} are not comma-separated numbers (e.g. 2,3 or 2;2,3;2 per level).") from None
    return levels[0] if len(levels) == 1 else levels


def ssd_anchor_generator(
    base: DefaultBoxGenerator,
    arch: str,
    anchor_scales: Sequence[float] | None = None,
    anchor_ratios: Sequence[float] | Sequence[Sequence[float]] | None = None,
) -> DefaultBoxGenerator:
    """``base`` (an architecture's default anchors) with its scales and/or aspect ratios
    replaced; ``base`` itself when neither is given (the default model is untouched).

    ``anchor_scales``: L+1 increasing fractions of the input side for L feature levels (level
    k's square anchors have sides s_k and sqrt(s_k s_k+1), SSD's rule). ``anchor_ratios``: one
    list for every level or one list per level; each ratio r >= 1 adds boxes r:1 and 1:r.
    """
    if anchor_scales is None and anchor_ratios is None:
        return base
    levels = len(base.aspect_ratios)
    scales = list(base.scales) if anchor_scales is None else [float(s) for s in anchor_scales]
    if len(scales) != levels + 1:
        raise ValueError(
            f"{arch} has {levels} feature levels: give {levels + 1} anchor scales (one per level plus the last "
            f"level's upper scale, increasing fractions of the input side), not {len(scales)}."
        )
    if any(s <= 0 for s in scales) or any(b < a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"Anchor scales {scales} must be positive and increasing.")
    if anchor_ratios is None:
        ratios = [list(r) for r in base.aspect_ratios]
    elif all(isinstance(r, (int, float)) for r in anchor_ratios):
        ratios = [[float(r) for r in anchor_ratios] for _ in range(levels)]
    else:
        ratios = [[float(r) for r in level] for level in anchor_ratios]  # type: ignore[union-attr]
        if len(ratios) != levels:
            raise ValueError(f"{arch} has {levels} feature levels: give one list of anchor ratios, or {levels} lists (one per level).")
    if any(r <= 0 for level in ratios for r in level):
        raise ValueError(f"Anchor ratios {ratios} must be positive.")
    return DefaultBoxGenerator(ratios, scales=scales, steps=base.steps, clip=base.clip)


def normalized_ratios(anchor_ratios: Any) -> list[float] | list[list[float]] | None:
    """Anchor ratios as plain floats (lists kept as lists) for a model's config."""
    if anchor_ratios is None:
        return None
    if all(isinstance(r, (int, float)) for r in anchor_ratios):
        return [float(r) for r in anchor_ratios]
    return [[float(r) for r in level] for level in anchor_ratios]



def frcnn_anchor_options(
    arch: str,
    image_size: int,
    default_sizes: Sequence[Sequence[int]],
    anchor_scales: Sequence[float] | None,
    anchor_ratios: Sequence[float] | None,
) -> dict[str, Any]:
    """Faster R-CNN's ``anchor_sizes`` / ``aspect_ratios`` from the same options as the SSD's:
    ``anchor_scales`` one per FPN level, fractions of the input's shorter side
    (``image_size``), turned into pixels; ``anchor_ratios`` r >= 1 each giving r:1 and 1:r
    beside the square (torchvision's ratio is height / width)."""
    options: dict[str, Any] = {}
    if anchor_scales is not None:
        scales = [float(s) for s in anchor_scales]
        if len(scales) != len(default_sizes):
            raise ValueError(f"{arch} has {len(default_sizes)} anchor levels: give {len(default_sizes)} anchor scales (fractions of the input's shorter side).")
        if any(s <= 0 for s in scales):
            raise ValueError(f"Anchor scales {scales} must be positive.")
        options["anchor_sizes"] = tuple((max(1, round(s * image_size)),) for s in scales)
    if anchor_ratios is not None:
        if not all(isinstance(r, (int, float)) for r in anchor_ratios):
            raise ValueError(f"{arch} shares its anchor ratios between levels: give one list (e.g. 2,3).")
        if any(r <= 0 for r in anchor_ratios):
            raise ValueError(f"Anchor ratios {list(anchor_ratios)} must be positive.")
        ratios = {1.0} | {float(r) for r in anchor_ratios} | {1.0 / float(r) for r in anchor_ratios}
        options["aspect_ratios"] = tuple(sorted(ratios))
    return options

