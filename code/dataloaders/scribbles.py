"""Hand-drawn-looking scribbles derived from dense masks.

A scribble is a few thin (one pixel, 8-connected) strokes per slice, as in the ACDC scribbles of
Valvano et al.: one stroke inside every foreground class (1 RV, 2 MYO, 3 LV) and a stroke of
background (0) looping around the heart at some distance, sometimes a second one elsewhere. Every
scribble pixel carries its true class; all other pixels are ``UNLABELED`` (4).

Each stroke is a random connected piece of a skeleton: the class region is eroded by a random
fraction of its maximal depth (so strokes keep off the boundaries, where annotators also stay),
the inner contour of the eroded region is skeletonised (a ring for the LV blood pool, the mid-line
for the thin myocardium and RV) and a geodesic neighbourhood of a random skeleton point, of random
length, is kept.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from dataloaders.io import UNLABELED

MIN_CLASS_AREA = 20
"""A class region with fewer pixels than this in a slice may get no stroke (too small to draw in)."""

_EIGHT = np.ones((3, 3), dtype=bool)


def _random_piece(skel: np.ndarray, rng: np.random.Generator, frac: tuple[float, float]) -> np.ndarray:
    """A random connected piece of a skeleton.

    ``skel`` bool (H, W). Picks a connected component (larger ones more likely), a random pixel in
    it and keeps the pixels within a geodesic distance drawn so that the piece covers a fraction
    in ``frac`` of the component. Returns bool (H, W), a subset of ``skel`` (empty if it is).
    """
    comps, n = ndi.label(skel, structure=_EIGHT)
    if n == 0:
        return skel.copy()
    sizes = np.bincount(comps.ravel())[1:].astype(float)
    k = rng.choice(n, p=sizes**2 / np.sum(sizes**2)) + 1
    comp = comps == k
    ys, xs = np.nonzero(comp)
    i = rng.integers(len(ys))
    seed = np.zeros_like(comp)
    seed[ys[i], xs[i]] = True
    # A geodesic dilation by r steps grows the seed by up to r pixels each way along the curve.
    reach = max(1, int(np.ceil(rng.uniform(*frac) * len(ys) / 2)))
    return ndi.binary_dilation(seed, structure=_EIGHT, iterations=reach, mask=comp)


def _stroke_skeleton(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Skeleton of the inner contour of ``mask`` eroded by a random depth; bool (H, W).

    Falls back to shallower erosion, then to the skeleton of the raw region, so a non-empty
    ``mask`` always gives a non-empty skeleton.
    """
    # Padding makes the image border count as the region's boundary.
    depth = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    for t in (rng.uniform(0.35, 0.6) * depth.max(), 1.0, 0.0):
        inner = depth > t
        if not inner.any():
            continue
        contour = inner & ~ndi.binary_erosion(inner)
        skel = skeletonize(contour)  # bool, not 0/255
        if skel.any():
            return skel
    return mask.copy()


def _background_skeleton(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Skeleton of a background band around the heart (or of the background if there is none)."""
    h, w = label.shape
    inside = np.zeros((h, w), dtype=bool)
    margin = max(2, min(h, w) // 32)
    inside[margin:h - margin, margin:w - margin] = True
    heart = label > 0
    if heart.any():
        dist = ndi.distance_transform_edt(~heart)
        size = np.sqrt(heart.sum())
        r = rng.uniform(0.15, 0.4) * size + 2
        band = (dist >= r) & (dist < r + 2) & inside
        if band.any():
            return skeletonize(band)
    return _stroke_skeleton((label == 0) & inside, rng)


def scribble_from_label(label2d: np.ndarray, rng: np.random.Generator,
                        min_area: int = MIN_CLASS_AREA, extra_background: float = 0.5) -> np.ndarray:
    """Scribble of one slice.

    ``label2d`` uint8 (H, W), values 0..3. Every class 1..3 with at least ``min_area`` pixels gets
    at least one stroke; the background gets a stroke around the heart and, with probability
    ``extra_background``, a short one elsewhere. Returns uint16 (H, W) with values in {0..3} on
    the strokes (each equal to ``label2d`` there) and ``UNLABELED`` (4) elsewhere. Deterministic
    given the state of ``rng``.
    """
    label2d = np.asarray(label2d)
    if label2d.ndim != 2:
        raise ValueError(f"label2d must be 2-D (H, W), got shape {label2d.shape}")
    out = np.full(label2d.shape, UNLABELED, dtype=np.uint16)
    if (label2d == 0).any():
        bg = _random_piece(_background_skeleton(label2d, rng), rng, (0.6, 1.0))
        if rng.random() < extra_background:
            far = (label2d == 0) & (ndi.distance_transform_edt(label2d == 0) > 3)
            if far.any():
                bg |= _random_piece(skeletonize(far), rng, (0.05, 0.15))
        out[skeletonize(bg) & (label2d == 0)] = 0  # thin again where two strokes run side by side
    for c in (1, 2, 3):
        mask = label2d == c
        if mask.sum() < max(min_area, 1):
            continue
        stroke = _random_piece(_stroke_skeleton(mask, rng), rng, (0.5, 0.95))
        out[stroke & mask] = c
    return out


def scribble_volume(label3d: np.ndarray, seed: int | np.random.Generator,
                    min_area: int = MIN_CLASS_AREA) -> np.ndarray:
    """Scribbles of a (Z, H, W) uint8 label volume, slice by slice; uint16 (Z, H, W), values 0..4.

    ``seed`` (an int or a Generator) makes the result reproducible.
    """
    label3d = np.asarray(label3d)
    if label3d.ndim != 3:
        raise ValueError(f"label3d must be 3-D (Z, H, W), got shape {label3d.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.stack([scribble_from_label(s, rng, min_area) for s in label3d]).astype(np.uint16)
