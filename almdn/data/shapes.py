"""Objects and backgrounds of the second demo dataset kind, ``DemoConfig(kind="shapes")``.

The digits kind (:mod:`almdn.data.demo`) draws handwritten MNIST digits onto photographs; an
acquisition default tuned only on it could be tuned to that one dataset. This kind keeps the
generator's machinery (scene sampling, occlusion, truncation, clutter, near-duplicates, exact
boxes, COCO output and caching all live in :mod:`almdn.data.demo`) and changes what is drawn:

- **Objects**: 10 procedurally drawn glyph categories (:data:`SHAPE_NAMES`), each instance with
  its own random geometry (vertex jitter, arm widths, hole sizes, bite offsets), aspect
  stretch (0.75-1.33), rotation (any angle for the rotation-free classes, +-25 degrees for
  cross, star, heart and diamond, whose identity depends on orientation) and one of five fill
  textures (:data:`FILLS`: solid, outline, stripes, checker, gradient; alpha patterns whose
  lows stay above the ink threshold, so the box is the shape's outline). Some classes are
  built to be confused: a ring and a crescent (a ring with a bite) and, drawn in outline, a
  hexagon; a hexagon and a pentagon; a cross and a fat four-pointed star; a triangle and an
  arrow's head. Nothing is downloaded or read from fonts.
- **Backgrounds** (:func:`backgrounds`): photographs the digits kind does not use (scikit-image's
  retina, cell, motorcycle and colour-wheel images, matplotlib's bundled Grace Hopper portrait
  and a hill-shaded elevation map) and four procedural textures drawn from a fixed seed
  (marble, wood grain, tartan, camouflage).
- **Imbalance**: a flat head and a steep tail instead of a Zipf law, see
  :func:`class_weights`; the counts per image and the empty fraction have other defaults too
  (``almdn.data.demo.KIND_DEFAULTS``).

Everything here is a deterministic function of its arguments: the textures use fixed seeds and
the shapes draw only from the generator they are given.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["FILLS", "HEAD_CLASSES", "SHAPE_NAMES", "backgrounds", "class_weights", "draw_shape"]

#: Class names in label order (COCO category id = index + 1); the first are the most frequent.
SHAPE_NAMES: tuple[str, ...] = (
    "triangle", "ring", "cross", "hexagon", "heart", "arrow", "diamond", "crescent", "star", "pentagon",
)

#: Number of head classes sharing the top frequency (see :func:`class_weights`).
HEAD_CLASSES = 3

#: Fill textures, as alpha patterns over the shape.
FILLS: tuple[str, ...] = ("solid", "outline", "stripes", "checker", "gradient")

#: Largest rotation (degrees) per class: orientation-free classes turn freely.
_MAX_ROTATION = {"cross": 25.0, "star": 25.0, "heart": 25.0, "diamond": 25.0}

#: scikit-image sample images used as backgrounds (none of them is used by the digits kind).
SKIMAGE_BACKGROUNDS: tuple[str, ...] = ("retina", "cell", "colorwheel")

_SUPERSAMPLE = 4


def class_weights(imbalance: float, head: int = HEAD_CLASSES, num_classes: int = 10) -> np.ndarray:
    """Relative class frequencies ``w(k) = (max(k - head + 1, 0) + 1) ** -imbalance``.

    The first ``head`` classes share the top weight and the tail falls as a power law behind
    them; ``head=1`` is the digits' Zipf prior ``(k + 1) ** -imbalance``. With the shapes
    defaults (head 3, exponent 1.5) the three head classes hold 76% of the objects and the
    rarest class is ``8 ** 1.5 = 22.6`` times rarer than a head class.
    """
    rank = np.maximum(np.arange(num_classes) - head + 1, 0) + 1
    return rank.astype(np.float64) ** -float(imbalance)


# --------------------------------------------------------------------------------------------
# Shapes: each is a list of (polygon, value) parts drawn in order, in unit coordinates


def _circle(cx: float, cy: float, r: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _regular(n: int, rng: np.random.Generator, jitter: float = 0.06) -> np.ndarray:
    t = np.arange(n) * 2 * math.pi / n + rng.uniform(-jitter, jitter, n) - math.pi / 2
    r = 1.0 + rng.uniform(-jitter, jitter, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    t = np.arange(2 * points) * math.pi / points - math.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _parts(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """The polygons of one random instance of class ``name`` (value 255 adds, 0 cuts a hole)."""
    if name == "triangle":
        return [(_regular(3, rng, 0.1), 255)]
    if name == "hexagon":
        return [(_regular(6, rng), 255)]
    if name == "pentagon":
        return [(_regular(5, rng), 255)]
    if name == "diamond":
        return [(np.array([[0, -1], [rng.uniform(0.5, 0.8), 0], [0, 1], [-rng.uniform(0.5, 0.8), 0]]), 255)]
    if name == "ring":
        return [(_circle(0, 0, 1), 255), (_circle(0, 0, rng.uniform(0.45, 0.7)), 0)]
    if name == "crescent":
        offset = rng.uniform(0.35, 0.6)
        return [(_circle(0, 0, 1), 255), (_circle(offset, 0, rng.uniform(0.7, 0.9)), 0)]
    if name == "cross":
        a = rng.uniform(0.22, 0.38)  # half arm width
        return [(np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                           [-a, a], [-1, a], [-1, -a], [-a, -a]]), 255)]
    if name == "star":
        return [(_star(4, rng.uniform(0.32, 0.48)), 255)]
    if name == "arrow":
        shaft, head = rng.uniform(0.15, 0.3), rng.uniform(0.55, 0.85)
        neck = rng.uniform(-0.1, 0.3)
        return [(np.array([[-1, -shaft], [neck, -shaft], [neck, -head], [1, 0], [neck, head],
                           [neck, shaft], [-1, shaft]]), 255)]
    if name == "heart":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y], axis=1) / 16.0, 255)]
    raise ValueError(f"unknown shape {name!r}")


def _fill_pattern(fill: str, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Alpha multiplier of a textured fill over the shape ``alpha``, lows 0.3-0.5 (above the
    ink threshold); None for the untextured fills."""
    h, w = alpha.shape
    low = rng.uniform(0.3, 0.5)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if fill == "stripes":
        period = rng.uniform(0.18, 0.32) * max(h, w)
        on = np.sin(2 * math.pi * u / period) > 0
    elif fill == "checker":
        period = rng.uniform(0.2, 0.35) * max(h, w)
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif fill == "gradient":  # from 1 to ``low`` across the shape
        lo, hi = float(u[alpha > 0].min()), float(u[alpha > 0].max())
        return np.clip(1.0 - (1.0 - low) * (u - lo) / max(hi - lo, 1.0), low, 1.0).astype(np.float32)
    else:
        return None
    return np.where(on, 1.0, low).astype(np.float32)


def draw_shape(
    label: int, size: float, aspect: float, angle: float, fill: str, rng: np.random.Generator
) -> np.ndarray:
    """Float32 alpha mask of one instance of class ``label`` (longer side about ``size`` px).

    ``aspect`` stretches x before the rotation by ``angle`` degrees (clamped to the class's
    range, see :data:`_MAX_ROTATION`); ``fill`` is one of :data:`FILLS`. The geometry's own
    randomness (jitter, proportions, texture phase) comes from ``rng``. The mask is cropped to
    its nonzero extent with a zero margin; the caller crops it tight at its ink threshold.
    """
    name = SHAPE_NAMES[label]
    parts = _parts(name, rng)
    limit = _MAX_ROTATION.get(name)
    if limit is not None:
        angle = float(np.clip(angle, -limit, limit))
    theta = math.radians(angle)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    pts = [(p * np.array([aspect, 1.0])) @ rot.T for p, _ in parts]
    lo = pts[0].min(axis=0)
    hi = pts[0].max(axis=0)
    scale = size * _SUPERSAMPLE / max(float((hi - lo).max()), 1e-6)
    margin = 2 * _SUPERSAMPLE
    w, h = (np.ceil((hi - lo) * scale).astype(int) + 2 * margin).tolist()
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for p, (_, value) in zip(pts, parts):
        q = (p - lo) * scale + margin
        draw.polygon([(float(x), float(y)) for x, y in q], fill=value)
    if fill == "outline":
        stroke = max(_SUPERSAMPLE, int(round(rng.uniform(0.06, 0.12) * size * _SUPERSAMPLE)))
        from scipy.ndimage import minimum_filter  # scipy ships with scikit-image

        full = np.asarray(canvas)
        canvas = Image.fromarray(full - minimum_filter(full, size=2 * stroke + 1, mode="constant"))
    alpha = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float32) * (1.0 / 255.0)
    pattern = _fill_pattern(fill, alpha, rng)
    if pattern is not None:
        alpha = alpha * pattern
    return alpha


# --------------------------------------------------------------------------------------------
# Backgrounds


def _fractal_noise(rng: np.random.Generator, size: int, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Smooth value noise in [0, 1], (size, size): octaves of bicubically upsampled grids."""
    total = np.zeros((size, size), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2 ** octave
        grid = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
        total += amplitude * np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        norm += amplitude
        amplitude *= 0.5
    total /= norm
    return (total - total.min()) / max(float(total.max() - total.min()), 1e-6)


def _palette(t: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Map t in [0, 1] linearly through ``colours`` to uint8 RGB."""
    stops = np.linspace(0, 1, len(colours))
    rgb = np.stack([np.interp(t, stops, [c[i] for c in colours]) for i in range(3)], axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _textures(size: int = 384) -> list[np.ndarray]:
    """Four procedural textures from fixed seeds: marble, wood, tartan, camouflage."""
    rng = np.random.default_rng(0x5A9E)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    marble = np.sin(2 * math.pi * (3 * xx + 2 * yy + 2.5 * _fractal_noise(rng, size))) * 0.5 + 0.5
    textures = [_palette(marble, [(70, 74, 92), (168, 170, 180), (236, 232, 224)])]
    r = np.hypot(xx - 0.3, yy + 0.4)
    grain = (np.sin(2 * math.pi * (14 * r + 1.5 * _fractal_noise(rng, size))) * 0.5 + 0.5) ** 0.7
    textures.append(_palette(grain, [(96, 56, 26), (170, 110, 60), (214, 166, 110)]))
    tartan = np.zeros((size, size, 3), dtype=np.float32)
    for axis in (0, 1):
        bands = np.zeros((size, 3), dtype=np.float32)
        pos = 0
        while pos < size:
            width = int(rng.integers(4, 28))
            bands[pos: pos + width] = rng.uniform(0.1, 0.9, 3)
            pos += width
        tartan += bands[:, None, :] if axis == 0 else bands[None, :, :]
    weave = ((np.arange(size)[:, None] + np.arange(size)[None, :]) % 4 < 2)[..., None]
    tartan = tartan / 2 * np.where(weave, 1.0, 0.82)
    textures.append(np.clip(tartan * 255 + 0.5, 0, 255).astype(np.uint8))
    camo = _fractal_noise(rng, size, octaves=4, base=3)
    levels = np.digitize(camo, [0.35, 0.5, 0.65])
    colours = np.array([[62, 72, 44], [112, 104, 70], [150, 142, 104], [44, 40, 34]], dtype=np.uint8)
    textures.append(colours[levels])
    return textures


def _hillshade(elevation: np.ndarray) -> np.ndarray:
    """An elevation map lit from the north-west, tinted by height, as uint8 RGB."""
    z = elevation.astype(np.float64)
    z = (z - z.min()) / max(float(z.max() - z.min()), 1e-9)
    gy, gx = np.gradient(z * 40.0)
    shade = np.clip((-gx - gy) / np.sqrt(2) / np.sqrt(1 + gx ** 2 + gy ** 2) * 0.5 + 0.5, 0, 1)
    tint = _palette(z, [(60, 110, 70), (170, 160, 100), (150, 120, 90), (240, 240, 240)]).astype(np.float64)
    return np.clip(tint * (0.35 + 0.75 * shade[..., None]), 0, 255).astype(np.uint8)


def _matplotlib_samples() -> list[np.ndarray]:
    """matplotlib's bundled sample photo and elevation map (matplotlib ships with mlxtend)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise ImportError("the shapes demo dataset needs matplotlib's sample data (pip install matplotlib)")
    folder = Path(spec.origin).parent / "mpl-data" / "sample_data"
    with Image.open(folder / "grace_hopper.jpg") as im:
        hopper = np.asarray(im.convert("RGB"))
    with np.load(folder / "jacksboro_fault_dem.npz") as dem:
        relief = _hillshade(dem["elevation"])
    return [hopper, relief]


@functools.lru_cache(maxsize=1)
def backgrounds() -> tuple[np.ndarray, ...]:
    """The shapes kind's backgrounds as uint8 RGB arrays, in a fixed order (see the module doc)."""
    import skimage.data

    arrays = [np.asarray(getattr(skimage.data, name)()) for name in SKIMAGE_BACKGROUNDS]
    arrays.append(np.asarray(skimage.data.stereo_motorcycle()[0]))
    arrays += _matplotlib_samples()
    arrays += _textures()
    return tuple(arrays)
