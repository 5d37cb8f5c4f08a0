"""Post-processing of predicted label volumes.

``lcc`` keeps, for each class, only its largest 3-D connected component (26-connectivity across
slices): the heart's structures are single connected objects, so smaller islands are false
positives, which dominate HD95 (nnU-Net applies the same rule when it helps on validation).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from dataloaders.io import NUM_CLASSES

POSTPROCESS = ("none", "lcc")


def largest_components(pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(Z, H, W) integer labels -> the same with each class 1..num_classes-1 reduced to its
    largest 3-D connected component; removed voxels become background (0)."""
    out = pred.copy()
    structure = np.ones((3,) * pred.ndim, bool)
    for c in range(1, num_classes):
        components, n = ndimage.label(pred == c, structure)
        if n > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            out[(components > 0) & (components != sizes.argmax())] = 0
    return out


def postprocess(pred: np.ndarray, how: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Apply ``how`` (one of :data:`POSTPROCESS`) to a (Z, H, W) label volume."""
    if how == "none":
        return pred
    if how == "lcc":
        return largest_components(pred, num_classes)
    raise ValueError(f"--postprocess must be one of {', '.join(POSTPROCESS)}, got {how!r}")
