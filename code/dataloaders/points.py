"""Point supervision: a few labelled pixels per class per slice, drawn from the dense mask.

``point_labels`` places ``k`` points in each class present in a slice (background included), in
the inner part of the structure: among the pixels whose distance to the structure's border is at
least half the structure's largest such distance (``scipy.ndimage.distance_transform_edt``), so a
point never sits on an edge an annotator would avoid. The draw is seeded by the seed and the
mask's contents, so a slice always gets the same points and different slices different ones. ``PointCache`` stores them like the random-walker labels.
"""
from __future__ import annotations

import hashlib
import zlib

import numpy as np
from scipy import ndimage

from dataloaders.io import NUM_CLASSES, UNLABELED
from dataloaders.slice_cache import SliceCache

DEFAULT_POINTS = 3
# Bump when the drawing logic changes, so old cache files are recomputed.
_CACHE_VERSION = "pt1"


def point_labels(label: np.ndarray, k: int = DEFAULT_POINTS, seed: int = 0) -> np.ndarray:
    """``k`` labelled points per class present in ``label``, the rest ``UNLABELED``.

    Args:
        label: integer (H, W) dense mask, 0 background, 1 RV, 2 MYO, 3 LV.
        k: points per class (fewer when a structure has fewer inner pixels), >= 1.
        seed: the draw is a function of ``seed`` and the mask.
    Returns:
        uint8 (H, W): the class on the chosen pixels, ``UNLABELED`` (4) elsewhere.
    """
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"points: label must be an integer (H, W) array, got {label.dtype} {label.shape}")
    if k < 1:
        raise ValueError(f"points: k must be >= 1, got {k}")
    if label.size and (label.min() < 0 or label.max() >= NUM_CLASSES):
        raise ValueError(f"points: label values must be in 0..{NUM_CLASSES - 1}, got {label.min()}..{label.max()}")
    rng = np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(label, np.uint8).tobytes())])
    out = np.full(label.shape, UNLABELED, np.uint8)
    for c in range(NUM_CLASSES):
        mask = label == c
        if not mask.any():
            continue
        # Padding with the structure itself: the image edge is no border of the structure.
        dist = ndimage.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1]
        inner = np.flatnonzero(dist >= dist.max() / 2)
        chosen = rng.choice(inner, size=min(k, inner.size), replace=False)
        out.flat[chosen] = c
    return out


class PointCache(SliceCache):
    """Point labels stored one file per slice (see :class:`dataloaders.slice_cache.SliceCache`).
    Inputs of ``get``, ``cached`` and ``build`` items: ``(key, label)``."""

    desc = "points"

    def __init__(self, cache_dir: str, k: int = DEFAULT_POINTS, seed: int = 0):
        super().__init__(cache_dir)
        self.k, self.seed = int(k), int(seed)

    def digest(self, label: np.ndarray) -> str:
        label = np.ascontiguousarray(label)
        h = hashlib.sha1(f"{_CACHE_VERSION}|{label.shape}|{label.dtype}|{self.k}|{self.seed}".encode())
        h.update(label.tobytes())
        return h.hexdigest()

    def compute(self, label: np.ndarray) -> np.ndarray:
        return point_labels(label, self.k, self.seed)
