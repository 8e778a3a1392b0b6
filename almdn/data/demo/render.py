"""Rendering a demo scene into pixels, exact boxes and visibilities (the generator's drawing
code), and :func:`render_demo_image`, one image exactly as the generator writes it."""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from almdn.data.demo.config import _SPLIT_CODES, INK_THRESHOLD, DemoConfig, DemoImage  # _SPLIT_CODES: the package's own
from almdn.data.demo.scene import (  # the demo package's own scene types and sampling
    _Clutter,
    _Digit,
    _near_duplicate,
    _Patch,
    _sample_scene,
    _Scene,
)
from almdn.data.demo.sources import _near_duplicate_plan, _photos  # the demo package's own loaders



def _clutter_mask(item: _Clutter, size: int) -> np.ndarray:
    """Anti-aliased coverage mask (size, size) in [0, 1], drawn at 2x and box-filtered."""
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [(2 * x, 2 * y) for x, y in item.points]
    if item.kind in ("line", "stroke"):
        draw.line(pts, fill=255, width=max(1, int(round(2 * item.width))), joint="curve")
    elif item.kind == "blob":
        (ax, ay), (bx, by) = pts
        draw.ellipse((min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)), fill=255)
    else:
        draw.polygon(pts, fill=255)
    return np.asarray(canvas.reduce(2), dtype=np.float32) * (1.0 / 255.0)


def _clip_region(x: int, y: int, w: int, h: int, size: int) -> tuple[int, int, int, int] | None:
    """Canvas rows/cols ``(x0, y0, x1, y1)`` covered by a w x h block at (x, y), or None."""
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _ink_colour(digit: _Digit, local_mean: np.ndarray) -> np.ndarray:
    """Ink colour that contrasts with (or, if low-contrast, nearly matches) the local background."""
    u = digit.colour_u
    dark = _luma(local_mean) > 0.5
    if digit.low_contrast:
        delta = 0.12 + 0.13 * u[0]
        return np.clip(local_mean + (-delta if dark else delta), 0.0, 1.0).astype(np.float32)
    if digit.vivid:
        value = 0.2 + 0.25 * u[2] if dark else 0.7 + 0.3 * u[2]
        return np.array(colorsys.hsv_to_rgb(u[0], 0.6 + 0.4 * u[1], value), dtype=np.float32)
    base = 0.25 * u[0]  # a grey with a slight tint
    tint = (np.array(u, dtype=np.float32) - 0.5) * 0.08
    grey = base if dark else 1.0 - base
    return np.clip(grey + tint, 0.0, 1.0).astype(np.float32)


def _background(scene: _Scene, photos: tuple[Image.Image, ...], size: int) -> np.ndarray:
    """The scene's photo crop, flipped and colour-jittered, with the clutter drawn on it (float RGB)."""
    x0, y0, side = scene.crop
    bg = photos[scene.photo].resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    img = np.asarray(bg, dtype=np.float32) * (1.0 / 255.0)
    if scene.flip:
        img = img[:, ::-1]
    img = np.clip(img * np.asarray(scene.gain, dtype=np.float32) + scene.bias, 0.0, 1.0)

    for item in scene.clutter:  # under the digits: clutter never hides labelled ink
        a = _clutter_mask(item, size)[..., None] * item.opacity
        img = img * (1.0 - a) + np.asarray(item.colour, dtype=np.float32) * a
    return img


def _prepare_digit_layer(layer: _Digit, size: int) -> dict[str, Any]:
    """A digit's canvas region, its ink alpha cropped to the region and its drawn alpha
    (region None when none of its ink is inside the image)."""
    h, w = layer.alpha.shape
    region = _clip_region(layer.x, layer.y, w, h, size)
    if region is None:
        return {"digit": layer, "region": None}
    rx0, ry0, rx1, ry1 = region
    a = layer.alpha[ry0 - layer.y: ry1 - layer.y, rx0 - layer.x: rx1 - layer.x]
    ink = a >= INK_THRESHOLD
    if not ink.any():
        return {"digit": layer, "region": None}
    # The box is the tight box of the visible ink; alpha outside it is dropped, so the
    # box is exact even when the image border cut off part of the digit.
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    a = a[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    region = (rx0 + cols[0], ry0 + rows[0], rx0 + cols[-1] + 1, ry0 + rows[0] + a.shape[0])
    return {
        "digit": layer, "region": region, "shape": a, "drawn": a * layer.opacity,
        "total": float(layer.alpha.sum()),
    }


def _prepare_patch_layer(layer: _Patch, photos: tuple[Image.Image, ...], size: int) -> dict[str, Any] | None:
    """An occluding patch's canvas region, drawn alpha and pixels; None when it is off the image."""
    region = _clip_region(layer.x, layer.y, layer.w, layer.h, size)
    if region is None:
        return None
    if layer.ellipse:
        mask_im = Image.new("L", (2 * layer.w, 2 * layer.h), 0)
        ImageDraw.Draw(mask_im).ellipse((0, 0, 2 * layer.w - 1, 2 * layer.h - 1), fill=255)
        mask = np.asarray(mask_im.reduce(2), dtype=np.float32) * (1.0 / 255.0)
    else:
        mask = np.ones((layer.h, layer.w), dtype=np.float32)
    pixels = np.asarray(
        photos[layer.photo].resize((layer.w, layer.h), Image.Resampling.BILINEAR, box=layer.crop),
        dtype=np.float32,
    ) * (1.0 / 255.0)
    rx0, ry0, rx1, ry1 = region
    crop = (slice(ry0 - layer.y, ry1 - layer.y), slice(rx0 - layer.x, rx1 - layer.x))
    return {"digit": None, "region": region, "drawn": mask[crop], "pixels": pixels[crop]}


def _prepare_layers(scene: _Scene, photos: tuple[Image.Image, ...], size: int) -> list[dict[str, Any]]:
    """Each layer becomes (region, shape alpha cropped to region, drawn alpha, payload)."""
    prepared: list[dict[str, Any]] = []
    for layer in scene.layers:
        if isinstance(layer, _Digit):
            prepared.append(_prepare_digit_layer(layer, size))
        else:
            patch = _prepare_patch_layer(layer, photos, size)
            if patch is not None:
                prepared.append(patch)
    return prepared


def _visibility(prepared: list[dict[str, Any]], keep: list[bool], size: int) -> list[float]:
    """Visible fraction of each digit's ink given the kept layers drawn on top of it."""
    transmit = np.ones((size, size), dtype=np.float32)
    vis = [0.0] * len(prepared)
    for k in range(len(prepared) - 1, -1, -1):
        p = prepared[k]
        if not keep[k] or p["region"] is None:
            continue
        x0_, y0_, x1_, y1_ = p["region"]
        t = transmit[y0_:y1_, x0_:x1_]
        if p["digit"] is not None:
            vis[k] = float((p["shape"] * t).sum()) / p["total"]
        t *= 1.0 - p["drawn"]
    return vis


def _kept_layers(prepared: list[dict[str, Any]], config: DemoConfig) -> tuple[list[bool], list[float]]:
    """Which layers are drawn (a digit hidden more than ``max_hidden`` is not) and the
    visibility of each."""
    size = config.image_size
    keep = [p["region"] is not None for p in prepared]
    vis = _visibility(prepared, keep, size)
    min_visible = 1.0 - config.max_hidden
    keep = [k and (p["digit"] is None or v >= min_visible) for k, p, v in zip(keep, prepared, vis)]
    # Dropping a digit can only uncover the ones below it, so one recount is final.
    vis = _visibility(prepared, keep, size)
    return keep, vis


def _composite(
    img: np.ndarray, prepared: list[dict[str, Any]], keep: list[bool], vis: list[float],
    size: int, return_masks: bool,
) -> dict[str, Any]:
    """Draw the kept layers onto ``img`` (in place) and return the labels of the kept digits."""
    boxes, labels, mnist_idx, visible, low, masks, fills = [], [], [], [], [], [], []
    for k, p in enumerate(prepared):
        if not keep[k]:
            continue
        x0_, y0_, x1_, y1_ = p["region"]
        target = img[y0_:y1_, x0_:x1_]
        a = p["drawn"][..., None]
        digit = p["digit"]
        if digit is None:
            img[y0_:y1_, x0_:x1_] = target * (1.0 - a) + p["pixels"] * a
            continue
        colour = _ink_colour(digit, target.reshape(-1, 3).mean(axis=0))
        img[y0_:y1_, x0_:x1_] = target * (1.0 - a) + colour * a
        boxes.append((x0_, y0_, x1_, y1_))
        labels.append(digit.label)
        mnist_idx.append(digit.mnist_index)
        visible.append(vis[k])
        low.append(digit.low_contrast)
        if digit.fill is not None:
            fills.append(digit.fill)
        if return_masks:
            m = np.zeros((size, size), dtype=np.float32)
            m[y0_:y1_, x0_:x1_] = p["shape"]
            masks.append(m)

    return {
        "boxes": np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "mnist_indices": np.asarray(mnist_idx, dtype=np.int64),
        "visibility": np.asarray(visible, dtype=np.float64),
        "low_contrast": np.asarray(low, dtype=bool),
        "masks": (np.stack(masks) if masks else np.zeros((0, size, size), np.float32)) if return_masks else None,
        "fills": tuple(fills),
    }


def _finish(img: np.ndarray, scene: _Scene) -> np.ndarray:
    """The scene's brightness and sensor noise, then the uint8 image."""
    img = img * scene.brightness
    if scene.noise_std > 0:
        noise = np.random.default_rng(scene.noise_seed).standard_normal(img.shape, dtype=np.float32)
        img = img + noise * (scene.noise_std / 255.0)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _render(scene: _Scene, config: DemoConfig, return_masks: bool = False) -> dict[str, Any]:
    """Draw ``scene``: the image, the exact boxes, labels and visibilities of the kept digits and,
    with ``return_masks``, each kept digit's ink alpha."""
    size = config.image_size
    photos = _photos(config.kind)
    img = _background(scene, photos, size)
    prepared = _prepare_layers(scene, photos, size)
    keep, vis = _kept_layers(prepared, config)
    objects = _composite(img, prepared, keep, vis, size, return_masks)
    return {"image": _finish(img, scene), **objects}


def render_demo_image(config: DemoConfig, split: str, index: int, return_masks: bool = False) -> DemoImage:
    """Render image ``index`` (0-based) of ``split`` ("train" or "test") exactly as the generator does.

    Useful for inspection and tests: ``return_masks=True`` also returns each digit's ink alpha.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    count = config.num_train if split == "train" else config.num_test
    if not 0 <= index < count:
        raise IndexError(f"{split} has {count} images; index {index} is out of range")
    source = _near_duplicate_plan(config).get(index) if split == "train" else None
    if source is None:
        scene = _sample_scene(config, split, index)
    else:
        scene = _near_duplicate(_sample_scene(config, split, source), config, split, index)
    out = _render(scene, config, return_masks=return_masks)
    return DemoImage(near_duplicate_of=source, **out)


