"""Training augmentation of one 2-D slice, as in the scribble-supervised literature.

With probability 1/2 a random rot90 + flip; otherwise, with probability 1/2, a random rotation in
[-20, 20] degrees; then a resize to the input size (``--input_size``), optionally zoomed about the
centre (``--aug_scale``) and with its gamma and contrast jittered (``--aug_intensity``; both off
by default, as in WSL4MIS and the MaskMixAdv release), and, when the patch is
smaller than that, a random crop of the patch (``--patch_size``), centred with probability
``fg_prob`` on a random labelled foreground pixel (as nnU-Net oversamples foreground). Images are
interpolated linearly, masks and scribbles with nearest neighbour; pixels that a rotation brings
in from outside are background (0) in a dense mask and unlabeled (4) in a scribble. Isolated
points (``--sup_type points``) are kept by the resize (:func:`keep_points`), which nearest
neighbour would thin to one in (H/h)(W/w); a rotation still drops about 2% of them, and a crop
those outside it.
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


def resize(a: np.ndarray, size: tuple[int, int], order: int, points_fill: int | None = None) -> np.ndarray:
    """(H, W) -> ``size`` with spline ``order`` (0 = nearest, for labels). ``points_fill``: ``a``
    is a map of isolated labelled points on this unlabeled value, every one of which is kept
    (:func:`keep_points`)."""
    if a.shape == tuple(size):
        return a
    out = ndimage.zoom(a, (size[0] / a.shape[0], size[1] / a.shape[1]), order=order,
                       grid_mode=True, mode="grid-constant" if order == 0 else "nearest")
    return out if points_fill is None else keep_points(out, a, points_fill)


def centre_offset(n: int, m: int) -> int:
    """Where the smaller of lengths n, m sits inside the larger: the same rule both ways, so
    padding undoes cropping exactly."""
    return abs(n - m) // 2


def fit(a: np.ndarray, size, fill) -> np.ndarray:
    """Centre crop or pad (with ``fill``) an (H, W) array to ``size``."""
    out = np.full(tuple(size), fill, dtype=a.dtype)
    src, dst = [], []
    for n, m in zip(a.shape, size):
        off, k = centre_offset(n, m), min(n, m)
        src.append(slice(off, off + k) if n > m else slice(0, n))
        dst.append(slice(off, off + k) if m > n else slice(0, m))
    out[tuple(dst)] = a[tuple(src)]
    return out


def keep_points(resized: np.ndarray, a: np.ndarray, unlabeled: int) -> np.ndarray:
    """``resized``, the (h, w) nearest-neighbour resize of the (H, W) label map ``a``, with every
    labelled pixel of ``a`` (not ``unlabeled``) that the sampling missed put on the target pixel
    whose cell holds its centre, where that pixel is unlabeled. Nearest neighbour keeps about
    one isolated point in (H/h)(W/w): 3 clicks per class became fewer than one at 128x128."""
    ys, xs = np.nonzero(a != unlabeled)
    ty = np.minimum(((ys + 0.5) * resized.shape[0] / a.shape[0]).astype(int), resized.shape[0] - 1)
    tx = np.minimum(((xs + 0.5) * resized.shape[1] / a.shape[1]).astype(int), resized.shape[1] - 1)
    free = resized[ty, tx] == unlabeled
    resized = resized.copy()
    resized[ty[free], tx[free]] = a[ys[free], xs[free]]
    return resized


def crop_origin(foreground: np.ndarray, patch: tuple[int, int], fg_prob: float,
                rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``patch`` inside an (H, W) slice with H, W >= patch: centred on a
    random ``True`` pixel of ``foreground`` with probability ``fg_prob`` (when there is one),
    uniform otherwise; always inside the slice."""
    (h, w), (ph, pw) = foreground.shape, patch
    if rng.random() < fg_prob:
        ys, xs = np.nonzero(foreground)
        if len(ys):
            i = int(rng.integers(0, len(ys)))
            return (int(np.clip(ys[i] - ph // 2, 0, h - ph)), int(np.clip(xs[i] - pw // 2, 0, w - pw)))
    return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))


def points_fills(fills: list[int], points: list[bool] | None = None) -> list[int | None]:
    """For each mask, the fill value its isolated points sit on when ``points`` says it holds
    points (each must survive a resize: :func:`keep_points`), else None (nearest neighbour)."""
    return [f if p else None for f, p in zip(fills, points or [False] * len(fills))]


def resize_zoomed(a: np.ndarray, size: tuple[int, int], zoom: float, order: int, fill,
                  points_fill: int | None = None) -> np.ndarray:
    """(H, W) -> ``size``: :func:`resize` to ``zoom`` times ``size`` (rounded), then centre
    cropped or padded with ``fill`` back to ``size`` (:func:`fit`): the resized slice zoomed about
    its centre. Zoom 1 is the plain resize."""
    zoomed = tuple(max(1, round(n * zoom)) for n in size)
    return fit(resize(a, zoomed, order, points_fill), size, fill)


def draw_scale(scale: float, rng: np.random.Generator) -> float:
    """The zoom of one slice under ``--aug_scale scale``: 1 with probability 1/2 (and always for
    scale 0, which draws nothing), else uniform in [1 - scale, 1 + scale]."""
    if scale and rng.random() < 0.5:
        return float(rng.uniform(1.0 - scale, 1.0 + scale))
    return 1.0


def jitter_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``--aug_intensity``: an (H, W) image in [0, 1], each with probability 1/2 raised to a gamma
    uniform in [0.7, 1.5] (MR intensities are not calibrated: the myocardium's contrast to the
    blood pool varies between scanners), then its contrast about its mean scaled by a factor
    uniform in [0.75, 1.25]; clipped to [0, 1] before and after."""
    image = np.clip(image, 0.0, 1.0)  # h5 images may lie 1e-4 outside (io.IMAGE_SLACK): a negative power is NaN
    if rng.random() < 0.5:
        image = image ** np.float32(rng.uniform(0.7, 1.5))
    if rng.random() < 0.5:
        mean = image.mean(dtype=np.float32)
        image = (image - mean) * np.float32(rng.uniform(0.75, 1.25)) + mean
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def augment(image: np.ndarray, masks: list[np.ndarray], fills: list[int], size: tuple[int, int],
            rng: np.random.Generator, patch: tuple[int, int] | None = None, fg_prob: float = 0.5,
            points: list[bool] | None = None, scale: float = 0.0, intensity: bool = False):
    """Augment one slice.

    Args:
        image: (H, W) float32 in [0, 1].
        masks: list of (H, W) integer maps that move with the image (labels, scribbles); the
            first one's classes 1..3 are the foreground that crops are centred on.
        fills: for each mask, the value of pixels rotated in from outside.
        size: (h, w) the slice is resized to.
        rng: the source of randomness (seeded by the caller for reproducibility).
        patch: (ph, pw) <= size, the crop returned; None = the whole resized slice.
        fg_prob: probability that a crop is centred on a foreground pixel.
        points: for each mask, whether it holds isolated points (on its fill value), each of
            which must survive the resize (:func:`keep_points`).
        scale: with probability 1/2 the slice is zoomed about its centre by a factor in
            [1 - scale, 1 + scale] (:func:`draw_scale`; hearts differ in size), cropped or padded
            back to ``size`` (image 0, masks their fill); 0 = never (the literature's default).
        intensity: whether to jitter the image's gamma and contrast (:func:`jitter_intensity`).
    Returns:
        (image (ph, pw) float32, list of (ph, pw) masks with their dtypes kept).
    """
    if rng.random() > 0.5:
        image, *masks = rot_flip_arrays([image, *masks], rng)
    elif rng.random() > 0.5:
        image, masks = rotate(image, masks, fills, rng)
    zoom = draw_scale(scale, rng)
    image = resize_zoomed(np.ascontiguousarray(image, dtype=np.float32), size, zoom, 1, 0.0)
    masks = [resize_zoomed(np.ascontiguousarray(m), size, zoom, 0, f, pf)
             for m, f, pf in zip(masks, fills, points_fills(fills, points))]
    if intensity:
        image = jitter_intensity(image, rng)
    if patch is not None and tuple(patch) != tuple(size):
        fg = (masks[0] >= 1) & (masks[0] <= 3)
        y, x = crop_origin(fg, tuple(patch), fg_prob, rng)
        window = (slice(y, y + patch[0]), slice(x, x + patch[1]))
        image, masks = image[window], [m[window] for m in masks]
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
