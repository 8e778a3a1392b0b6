"""Scene description of one demo image: every random choice is drawn here, so a scene can be
re-rendered (shifted, for a near-duplicate) by :mod:`almdn.data.demo.render`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from almdn.data import shapes
from almdn.data.demo.config import (  # the demo package's own constants
    _SPLIT_CODES,
    INK_THRESHOLD,
    DemoConfig,
)
from almdn.data.demo.sources import _mnist, _photos, split_digit_indices  # the demo package's own loaders



@dataclass(frozen=True, eq=False)
class _Digit:
    """One labelled object: a digit, or a shape (then ``mnist_index`` is -1 and ``fill`` set)."""

    label: int
    mnist_index: int
    alpha: np.ndarray  # (h, w) float32, tight at INK_THRESHOLD
    x: int  # top-left in the canvas; may be negative or overflow (truncation)
    y: int
    opacity: float
    low_contrast: bool
    vivid: bool
    colour_u: tuple[float, float, float]  # uniforms from which the ink colour is derived
    fill: str | None = None


@dataclass(frozen=True, eq=False)
class _Patch:
    x: int
    y: int
    w: int
    h: int
    ellipse: bool
    photo: int
    crop: tuple[float, float, float, float]  # photo box (x0, y0, x1, y1)


@dataclass(frozen=True)
class _Clutter:
    kind: str  # "line", "stroke", "blob" or "polygon"
    points: tuple[tuple[float, float], ...]
    width: float
    colour: tuple[float, float, float]
    opacity: float


@dataclass(frozen=True, eq=False)
class _Scene:
    photo: int
    crop: tuple[float, float, float]  # x0, y0, side in photo pixels
    flip: bool
    gain: tuple[float, float, float]
    bias: float
    clutter: tuple[_Clutter, ...]
    layers: tuple[_Digit | _Patch, ...]  # drawn in order; later layers occlude earlier ones
    noise_std: float
    noise_seed: int
    brightness: float = 1.0


def _prepare_digit(digit: np.ndarray, size: float, aspect: float, angle: float) -> np.ndarray | None:
    """Scale (longer ink side ~ size) and rotate a 28x28 alpha mask; crop tight at the threshold."""
    rows = np.flatnonzero(digit.max(axis=1) > 0)
    cols = np.flatnonzero(digit.max(axis=0) > 0)
    # Keep one pixel of zero margin so bilinear resampling fades out instead of clipping.
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, 28)
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, 28)
    crop = np.ascontiguousarray(digit[r0:r1, c0:c1])
    h0, w0 = crop.shape[0] - 2, (crop.shape[1] - 2) * aspect
    scale = size / max(h0, w0, 1)
    new_w = max(2, int(round(crop.shape[1] * aspect * scale)))
    new_h = max(2, int(round(crop.shape[0] * scale)))
    im = Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.BILINEAR)
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return _tight(np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0))


def _tight(alpha: np.ndarray) -> np.ndarray | None:
    """``alpha`` cropped to the box of its ink (alpha >= INK_THRESHOLD); None if it has none."""
    ink = alpha >= INK_THRESHOLD
    if not ink.any():
        return None
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return np.ascontiguousarray(alpha[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1])


def _overlap(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> float:
    """Largest intersection / smaller-area between ``box`` and any of ``boxes``."""
    worst = 0.0
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in boxes:
        iw, ih = min(x1, a1) - max(x0, a0), min(y1, b1) - max(y0, b0)
        if iw > 0 and ih > 0:
            smaller = min((x1 - x0) * (y1 - y0), (a1 - a0) * (b1 - b0))
            worst = max(worst, iw * ih / smaller)
    return worst


def _sample_clutter(rng: np.random.Generator, size: int) -> _Clutter:
    kind = ("line", "stroke", "blob", "polygon")[int(rng.integers(4))]
    centre = rng.uniform(0, size, 2)
    extent = rng.uniform(0.08, 0.35) * size
    if kind == "line":
        angle = rng.uniform(0, math.pi)
        d = np.array([math.cos(angle), math.sin(angle)]) * extent / 2
        pts = [centre - d, centre + d]
    elif kind == "stroke":  # a wiggly pen stroke: a random walk with smooth turns
        n = int(rng.integers(3, 7))
        heading = rng.uniform(0, 2 * math.pi)
        pts = [centre]
        for _ in range(n - 1):
            heading += rng.normal(0, 0.8)
            pts.append(pts[-1] + np.array([math.cos(heading), math.sin(heading)]) * extent / n * 2)
    elif kind == "blob":
        half = np.array([extent, extent * rng.uniform(0.4, 1.0)]) / 3
        pts = [centre - half, centre + half]
    else:
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.3, 0.6, n) * extent
        pts = [centre + r * np.array([math.cos(a), math.sin(a)]) for a, r in zip(angles, radii)]
    return _Clutter(
        kind=kind,
        points=tuple((float(p[0]), float(p[1])) for p in pts),
        width=float(rng.uniform(1.0, 3.0)),
        colour=tuple(float(c) for c in rng.uniform(0, 1, 3)),
        opacity=float(rng.uniform(0.5, 1.0)),
    )


def _sample_background(
    rng: np.random.Generator, photos: tuple[Image.Image, ...]
) -> tuple[int, tuple[float, float, float], bool, tuple[float, float, float], float]:
    """Background: a random square crop (35-100% of the photo's short side), flip, colour jitter.

    Returns the photo's index, the crop ``(x0, y0, side)``, the flip, the gain and the bias."""
    photo = int(rng.integers(len(photos)))
    width, height = photos[photo].size
    side = rng.uniform(0.35, 1.0) * min(width, height)
    crop = (float(rng.uniform(0, width - side)), float(rng.uniform(0, height - side)), float(side))
    flip = bool(rng.random() < 0.5)
    gain = tuple(float(g) for g in rng.uniform(0.7, 1.15) * rng.uniform(0.92, 1.08, 3))
    bias = float(rng.uniform(-0.08, 0.08))
    return photo, crop, flip, gain, bias


def _sample_clutters(rng: np.random.Generator, config: DemoConfig) -> tuple[_Clutter, ...]:
    """The unlabelled distractors of one image: none, or 1..max_clutter of them."""
    clutter: tuple[_Clutter, ...] = ()
    if rng.random() < config.clutter_fraction:
        n_clutter = int(rng.integers(1, config.max_clutter + 1))
        clutter = tuple(_sample_clutter(rng, config.image_size) for _ in range(n_clutter))
    return clutter


def _sample_alpha(
    rng: np.random.Generator, config: DemoConfig, label: int,
    alphas: np.ndarray | None, pool: dict[int, np.ndarray] | None,
) -> tuple[np.ndarray, int, str | None]:
    """The ink of one object of class ``label``: a digit drawn from ``pool`` (digits kind) or a
    shape (``pool`` None). Returns the alpha (tight at INK_THRESHOLD), the MNIST index (-1 for
    shapes) and the fill (None for digits)."""
    size = config.image_size
    log_min, log_max = math.log(config.min_size), math.log(config.max_size)
    alpha, mnist_index, fill = None, -1, None
    # Redraw in the (rare) cases of a digit that vanished when scaled down, or one that a
    # rotation made larger than the image (possible only when max_size is near image_size).
    while alpha is None or max(alpha.shape) > size:
        if pool is not None:
            mnist_index = int(pool[label][rng.integers(len(pool[label]))])
            alpha = _prepare_digit(
                alphas[mnist_index],
                size=math.exp(rng.uniform(log_min, log_max)),
                aspect=float(rng.uniform(0.8, 1.25)),
                angle=float(rng.uniform(-15, 15)),
            )
        else:
            fill = shapes.FILLS[int(rng.integers(len(shapes.FILLS)))]
            alpha = _tight(shapes.draw_shape(
                label, size=math.exp(rng.uniform(log_min, log_max)),
                aspect=float(rng.uniform(0.75, 1.33)), angle=float(rng.uniform(-180, 180)),
                fill=fill, rng=rng,
            ))
    return alpha, mnist_index, fill


def _place_occluder(
    rng: np.random.Generator, boxes: list[tuple[int, int, int, int]], w: int, h: int, size: int
) -> tuple[int, int]:
    """Occluder: overlap an earlier digit partly, and be drawn on top of it."""
    tx0, ty0, tx1, ty1 = boxes[int(rng.integers(len(boxes)))]
    heading = rng.uniform(0, 2 * math.pi)
    reach = rng.uniform(0.3, 0.65)
    cx = (tx0 + tx1) / 2 + math.cos(heading) * reach * ((tx1 - tx0) + w) / 2
    cy = (ty0 + ty1) / 2 + math.sin(heading) * reach * ((ty1 - ty0) + h) / 2
    x = int(np.clip(round(cx - w / 2), 0, size - w))
    y = int(np.clip(round(cy - h / 2), 0, size - h))
    return x, y


def _place_truncated(rng: np.random.Generator, w: int, h: int, size: int) -> tuple[int, int]:
    """Truncated: 10-45% of the digit's extent lies beyond one image border."""
    border = int(rng.integers(4))
    out = rng.uniform(0.1, 0.45)
    x = int(rng.integers(0, size - w + 1))
    y = int(rng.integers(0, size - h + 1))
    if border == 0:
        x = -int(round(out * w))
    elif border == 1:
        x = size - w + int(round(out * w))
    elif border == 2:
        y = -int(round(out * h))
    else:
        y = size - h + int(round(out * h))
    return x, y


def _place_free(
    rng: np.random.Generator, boxes: list[tuple[int, int, int, int]], w: int, h: int, size: int
) -> tuple[int, int]:
    """Free placement: the position that overlaps earlier digits least out of a few tries."""
    best = None
    for _ in range(12):
        cand = (int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)))
        score = _overlap((cand[0], cand[1], cand[0] + w, cand[1] + h), boxes)
        if best is None or score < best[0]:
            best = (score, cand)
        if score <= 0.02:
            break
    x, y = best[1]
    return x, y


def _place(
    rng: np.random.Generator, config: DemoConfig, boxes: list[tuple[int, int, int, int]], w: int, h: int
) -> tuple[int, int]:
    """Top-left corner of a w x h object placed among the earlier objects' ``boxes``."""
    size = config.image_size
    occlude_p = config.occlusion_fraction / 2
    mode = rng.random()  # [0, occlude_p): occluder; then truncated; else free placement
    if mode < occlude_p and boxes:
        return _place_occluder(rng, boxes, w, h, size)
    elif occlude_p <= mode < occlude_p + config.truncation_fraction:
        return _place_truncated(rng, w, h, size)
    else:
        return _place_free(rng, boxes, w, h, size)


def _sample_object(
    rng: np.random.Generator, config: DemoConfig, label: int, boxes: list[tuple[int, int, int, int]],
    alphas: np.ndarray | None, pool: dict[int, np.ndarray] | None,
) -> _Digit:
    """One labelled object of class ``label``: its ink, its place and how it is inked."""
    alpha, mnist_index, fill = _sample_alpha(rng, config, label, alphas, pool)
    h, w = alpha.shape
    x, y = _place(rng, config, boxes, w, h)
    low_contrast = bool(rng.random() < config.low_contrast_fraction)
    opacity = rng.uniform(0.55, 0.85) if low_contrast else rng.uniform(0.8, 1.0)
    return _Digit(
        label=label, mnist_index=mnist_index, alpha=alpha, x=x, y=y,
        opacity=float(opacity), low_contrast=low_contrast, vivid=bool(rng.random() < 0.35),
        colour_u=tuple(float(u) for u in rng.uniform(0, 1, 3)), fill=fill,
    )


def _sample_patch(
    rng: np.random.Generator, photos: tuple[Image.Image, ...], x: int, y: int, w: int, h: int
) -> _Patch:
    """A patch of another photo covering 25-70% of the digit at (x, y, w, h) from one side."""
    side_ = int(rng.integers(4))
    cover = rng.uniform(0.25, 0.7)
    margin = rng.integers(0, max(2, int(0.3 * max(w, h))), 3)
    if side_ < 2:  # left / right
        pw = int(round(cover * w)) + int(margin[0])
        ph = h + int(margin[1] + margin[2])
        px = x - int(margin[0]) if side_ == 0 else x + w - int(round(cover * w))
        py = y - int(margin[1])
    else:  # top / bottom
        ph = int(round(cover * h)) + int(margin[0])
        pw = w + int(margin[1] + margin[2])
        py = y - int(margin[0]) if side_ == 2 else y + h - int(round(cover * h))
        px = x - int(margin[1])
    src = int(rng.integers(len(photos)))
    sw, sh = photos[src].size
    cw = rng.uniform(0.1, 0.5) * sw
    ch = min(cw * ph / max(pw, 1), sh)
    cx0, cy0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    return _Patch(
        x=px, y=py, w=max(pw, 2), h=max(ph, 2), ellipse=bool(rng.random() < 0.4),
        photo=src, crop=(float(cx0), float(cy0), float(cx0 + cw), float(cy0 + ch)),
    )


def _sample_scene(config: DemoConfig, split: str, index: int) -> _Scene:
    """Draw every random choice of one image from its own seeded stream."""
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
    photos = _photos(config.kind)
    alphas, pool = None, None
    if config.kind == "digits":
        alphas, _ = _mnist()
        pool = split_digit_indices(config.seed, config.test_digit_fraction)[split]

    photo, crop, flip, gain, bias = _sample_background(rng, photos)
    clutter = _sample_clutters(rng, config)

    n_objects = 0 if rng.random() < config.empty_fraction else int(rng.integers(1, config.max_objects + 1))
    labels = rng.choice(10, size=n_objects, p=config.class_prior())
    occlude_p = config.occlusion_fraction / 2

    layers: list[_Digit | _Patch] = []
    boxes: list[tuple[int, int, int, int]] = []
    for label in labels:
        digit = _sample_object(rng, config, int(label), boxes, alphas, pool)
        h, w = digit.alpha.shape
        layers.append(digit)
        boxes.append((digit.x, digit.y, digit.x + w, digit.y + h))
        if rng.random() < occlude_p:
            layers.append(_sample_patch(rng, photos, digit.x, digit.y, w, h))

    return _Scene(
        photo=photo, crop=crop, flip=flip, gain=gain, bias=bias, clutter=clutter,
        layers=tuple(layers), noise_std=float(rng.uniform(0, config.noise_std)),
        noise_seed=int(rng.integers(2**31)),
    )


def _near_duplicate(scene: _Scene, config: DemoConfig, split: str, index: int) -> _Scene:
    """The same scene seen again: camera moved 1-3 px, other brightness, fresh noise."""
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index, 1])
    dx, dy = 0, 0
    while dx == 0 and dy == 0:
        dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    photo = _photos(config.kind)[scene.photo]
    x0, y0, side = scene.crop
    step = side / config.image_size  # photo pixels per image pixel
    # Content moving right by dx means the crop window moves left (right when flipped).
    x0 = float(np.clip(x0 + (dx if scene.flip else -dx) * step, 0, photo.size[0] - side))
    y0 = float(np.clip(y0 - dy * step, 0, photo.size[1] - side))
    layers = tuple(dataclasses.replace(layer, x=layer.x + dx, y=layer.y + dy) for layer in scene.layers)
    clutter = tuple(
        dataclasses.replace(c, points=tuple((px + dx, py + dy) for px, py in c.points))
        for c in scene.clutter
    )
    return dataclasses.replace(
        scene, crop=(x0, y0, side), layers=layers, clutter=clutter,
        brightness=float(rng.uniform(0.9, 1.1)),
        noise_std=float(rng.uniform(1.0, max(config.noise_std, 1.0))),
        noise_seed=int(rng.integers(2**31)),
    )
