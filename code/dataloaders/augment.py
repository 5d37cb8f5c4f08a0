"""Training augmentation of one 2-D slice, as in the scribble-supervised literature.

With probability 1/2 a random rot90 + flip; otherwise, with probability 1/2, a random rotation in
[-20, 20] degrees; then a resize to the patch size. Images are interpolated linearly, masks and
scribbles with nearest neighbour; pixels that a rotation brings in from outside are background
(0) in a dense mask and unlabeled (4) in a scribble.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def rot_flip_arrays(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random rot90 + flip of every (H, W) array."""
    k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
    return [np.flip(np.rot90(a, k), axis=axis) for a in arrays]


def rotate(image: np.ndarray, masks: list[np.ndarray], fills: list[int], rng: np.random.Generator):
    angle = float(rng.uniform(-20, 20))
    image = ndimage.rotate(image, angle, order=1, reshape=False, mode="constant", cval=0.0)
    masks = [ndimage.rotate(m, angle, order=0, reshape=False, mode="constant", cval=f)
             for m, f in zip(masks, fills)]
    return image, masks


def resize(a: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """(H, W) -> ``size`` with spline ``order`` (0 = nearest, for labels)."""
    if a.shape == tuple(size):
        return a
    return ndimage.zoom(a, (size[0] / a.shape[0], size[1] / a.shape[1]), order=order,
                        grid_mode=True, mode="grid-constant" if order == 0 else "nearest")


def augment(image: np.ndarray, masks: list[np.ndarray], fills: list[int], size: tuple[int, int],
            rng: np.random.Generator):
    """Augment one slice.

    Args:
        image: (H, W) float32 in [0, 1].
        masks: list of (H, W) integer maps that move with the image (labels, scribbles).
        fills: for each mask, the value of pixels rotated in from outside.
        size: output (h, w).
        rng: the source of randomness (seeded by the caller for reproducibility).
    Returns:
        (image (h, w) float32, list of (h, w) masks with their dtypes kept).
    """
    if rng.random() > 0.5:
        image, *masks = rot_flip_arrays([image, *masks], rng)
    elif rng.random() > 0.5:
        image, masks = rotate(image, masks, fills, rng)
    image = resize(np.ascontiguousarray(image, dtype=np.float32), size, order=1)
    masks = [resize(np.ascontiguousarray(m), size, order=0) for m in masks]
    return image, masks


# Tensor versions, for methods that transform whole batches on the training device.

def rot_flip(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """T(x): rotate the last two axes by k quarter turns, then mirror the last axis if ``flip``.
    (..., H, W) -> (..., H, W), or (..., W, H) for odd k."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def unrot_flip(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """T^-1 of :func:`rot_flip` with the same (k, flip): ``unrot_flip(rot_flip(x)) == x``."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, -k, dims=(-2, -1))


def random_rot_flip() -> tuple[int, bool]:
    """(k in 0..3, flip) drawn from the global torch RNG (seeded and restored by the engine)."""
    k, flip = torch.randint(0, 4, (2,)).tolist()
    return k, bool(flip % 2)
