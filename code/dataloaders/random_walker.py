"""Dense pseudo labels grown from scribbles with the random walker (Grady, 2006), and a disk cache.

``random_walker_labels`` turns one 2-D slice and its scribble into a dense uint8 label map with
skimage's ``random_walker``. Solving the sparse system costs a few tenths of a second per ACDC slice, so
``RandomWalkerCache`` (a :class:`~dataloaders.slice_cache.SliceCache`) stores each result as
``<cache_dir>/<key>.npz`` together with a digest of everything it depends on (image, scribble,
beta, mode, tol) and recomputes when that changes.
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage
from skimage.segmentation import random_walker

from dataloaders.io import UNLABELED
from dataloaders.slice_cache import SliceCache

MODES = ("cg", "cg_j", "cg_mg", "bf")
# Bump when the labelling logic changes, so old cache files are recomputed.
_CACHE_VERSION = "rw1"


def _check_inputs(image, scribble) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    scribble = np.asarray(scribble)
    if image.ndim != 2 or scribble.shape != image.shape:
        raise ValueError(f"random walker: image {image.shape} and scribble {scribble.shape} "
                         "must be the same 2-D (H, W) shape")
    if not np.issubdtype(scribble.dtype, np.integer):
        raise ValueError(f"random walker: scribble must be an integer array, got {scribble.dtype}")
    if scribble.size and (scribble.min() < 0 or scribble.max() > UNLABELED):
        raise ValueError(f"random walker: scribble values must be in 0..{UNLABELED}, "
                         f"got {scribble.min()}..{scribble.max()}")
    if not np.isfinite(image).all():
        raise ValueError("random walker: image has non-finite values")
    return image.astype(np.float32, copy=False), scribble.astype(np.uint16, copy=False)


def random_walker_labels(image: np.ndarray, scribble: np.ndarray, beta: float = 130.0,
                         mode: str = "bf", tol: float = 1e-3) -> np.ndarray:
    """Dense pseudo label of one slice, grown from its scribble by the random walker.

    Args:
        image: float (H, W), intensities in [0, 1].
        scribble: integer (H, W), 0 background, 1 RV, 2 MYO, 3 LV, ``UNLABELED`` (4) elsewhere.
        beta: edge sharpness of ``skimage.segmentation.random_walker`` (its default, 130; skimage
            divides it by 10 * image std, so it is insensitive to the intensity scale).
        mode: solver, one of ``MODES`` ("cg_mg" needs pyamg). The default "bf" (direct sparse
            solve) is the fastest for 2-D slices of this size: about 0.25 s for 256 x 216 against
            1.5-3 s for "cg"/"cg_j", which also warn that probabilities leave [0, 1].
        tol: tolerance of the iterative solvers (unused by "bf").

    Returns uint8 (H, W) with values 0..3; every scribbled pixel keeps its class. Conventions:

    - no scribble at all: an array full of ``UNLABELED`` (4), so a partial cross-entropy ignores
      the slice rather than learning an invented background;
    - a single scribbled class: the scribble itself (4 elsewhere), since the walker would
      trivially paint the whole slice with that class;
    - a flat image (zero std, where skimage's edge weights are undefined): each pixel takes the
      class of its nearest scribbled pixel.
    """
    if mode not in MODES:
        raise ValueError(f"random walker: mode must be one of {MODES}, got {mode!r}")
    image, scribble = _check_inputs(image, scribble)
    labeled = scribble != UNLABELED
    classes = np.unique(scribble[labeled])
    if classes.size == 0:
        return np.full(scribble.shape, UNLABELED, np.uint8)
    if classes.size == 1:
        return scribble.astype(np.uint8)
    if image.std() == 0:
        _, (iy, ix) = ndimage.distance_transform_edt(~labeled, return_indices=True)
        return scribble[iy, ix].astype(np.uint8)
    # random_walker reads 0 as "unlabeled", so seeds are the classes shifted by one.
    seeds = np.where(labeled, scribble.astype(np.int32) + 1, 0)
    # Full probabilities (one map per seed value, in sorted order) rather than the label output,
    # which skimage renumbers to consecutive integers when the seed values have gaps.
    prob = random_walker(image.astype(np.float64), seeds, beta=beta, mode=mode, tol=tol,
                         return_full_prob=True)
    out = classes[np.argmax(prob, axis=0)].astype(np.uint8)
    out[labeled] = scribble[labeled]
    return out


class RandomWalkerCache(SliceCache):
    """Random-walker pseudo labels stored one file per slice: ``<cache_dir>/<key>.npz``
    (see :class:`dataloaders.slice_cache.SliceCache`).

    Each file holds ``label`` (uint8 (H, W), as ``random_walker_labels`` returns) and a digest of
    the image, scribble and solver settings. Inputs of ``get``, ``cached`` and ``build`` items:
    ``(key, image, scribble)``.
    """

    desc = "random walker"

    def __init__(self, cache_dir: str, beta: float = 130.0, mode: str = "bf",
                 tol: float = 1e-3):
        if mode not in MODES:
            raise ValueError(f"RandomWalkerCache: mode must be one of {MODES}, got {mode!r}")
        super().__init__(cache_dir)
        self.beta = float(beta)
        self.mode = mode
        self.tol = float(tol)

    def digest(self, image: np.ndarray, scribble: np.ndarray) -> str:
        """Hex digest of the inputs and solver settings that determine the label."""
        image, scribble = _check_inputs(image, scribble)
        h = hashlib.sha1()
        h.update(f"{_CACHE_VERSION}|{image.shape}|{self.beta!r}|{self.mode}|{self.tol!r}".encode())
        h.update(np.ascontiguousarray(image).tobytes())
        h.update(np.ascontiguousarray(scribble).tobytes())
        return h.hexdigest()

    def compute(self, image: np.ndarray, scribble: np.ndarray) -> np.ndarray:
        return random_walker_labels(image, scribble, self.beta, self.mode, self.tol)


__all__ = ["random_walker_labels", "RandomWalkerCache", "MODES"]
