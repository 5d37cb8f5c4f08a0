"""Spacing-aware input (``--target_spacing``): every slice at one physical scale.

Without it (the default) each slice is resized to the input size whatever its field of view, so
a heart looks smaller on a 512-pixel, 380 mm LGE slice than on a 256-pixel ACDC slice. With it,
as nnU-Net does, each slice is first resampled in-plane from its own spacing to the target
spacing (mm per pixel; ``median`` = the median in-plane spacing of the training cases), then centre
cropped or zero padded to the input size (so the input covers input size x target spacing mm);
predictions are padded or cropped back and resampled to the scan's own grid before they are
scored or written.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dataloaders import io
from dataloaders.augment import centre_offset, fit, points_fills, resize


# In-plane pixel sides a target spacing may have, in mm: MRI pixels are 0.1-3 mm; 10 mm still
# leaves a 380 mm field of view 38 pixels, while 100 (a typed 1.00) left a 256-pixel slice 4.
IN_PLANE_MM = (0.05, 10.0)
IN_PLANE_TEXT = f"from {IN_PLANE_MM[0]:g} to {IN_PLANE_MM[1]:g} mm (an MRI pixel)"


def in_plane(values) -> bool:
    """Whether every value of ``values`` (mm) is a plausible in-plane pixel side (``IN_PLANE_MM``)."""
    return all(IN_PLANE_MM[0] <= v <= IN_PLANE_MM[1] for v in values)


def median_spacing(root: str, cases: list[str] | None = None) -> list[float]:
    """Median in-plane spacing (y, x) in mm of the volumes ``cases`` of ``root`` (default: all);
    ValueError naming a volume without a spacing."""
    spacings = []
    for case in io.list_cases(root) if cases is None else cases:
        sp = io.read_h5(io.volume_path(root, case), keys=())["spacing"]
        if sp is None:
            raise ValueError(f"--target_spacing: {io.volume_path(root, case)} has no spacing attribute")
        spacings.append(sp[1:])
    return [float(v) for v in np.median(np.asarray(spacings), axis=0)]


def parse_target_spacing(value, root: str, training_cases: list[str] | None = None) -> list[float] | None:
    """``--target_spacing`` as (y, x) mm: None for ``off``/None, for ``median`` the median of the
    ``training_cases`` of ``root`` (as nnU-Net takes it: nothing of the test cases, not even their
    spacing, shapes the model; default: every case), else one or two finite positive numbers (a
    list is kept, e.g. a saved config's)."""
    if value is None or value == "off":
        return None
    if value == "median":
        return median_spacing(root, training_cases)
    try:
        vals = [float(v) for v in (value if isinstance(value, (list, tuple)) else str(value).split(","))]
    except ValueError as e:
        raise ValueError(f"--target_spacing must be off, median, or mm (e.g. 1.0 or 1.0,1.0), got {value!r}") from e
    if len(vals) not in (1, 2) or not in_plane(vals):
        # inf (or 500) resampled every slice to one pixel: the run trained on padding and exited 0.
        raise ValueError(f"--target_spacing must be off, median, or one or two values {IN_PLANE_TEXT}, got {value!r}")
    return vals * 2 if len(vals) == 1 else vals


def resampled_shape(shape, spacing, target) -> tuple[int, int]:
    """(H, W) of a slice of ``shape`` (H, W) at ``spacing`` (y, x) resampled to ``target``."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def to_target(image: np.ndarray, masks: list[np.ndarray], fills: list[int], spacing, target, size,
              points: list[bool] | None = None):
    """One training slice resampled from ``spacing`` (y, x) to ``target`` (image linear, masks
    nearest; ``points`` as :func:`dataloaders.augment.augment`'s) and fitted to ``size``: (image
    (h, w) float32, masks (h, w))."""
    shape = resampled_shape(image.shape, spacing, target)
    image = resize(image.astype(np.float32), shape, order=1)
    return fit(image, size, 0.0), [mask_to_target(m, spacing, target, size, f, pf)
                                   for m, f, pf in zip(masks, fills, points_fills(fills, points))]


def mask_to_target(mask: np.ndarray, spacing, target, size, fill: int = 0,
                   points_fill: int | None = None) -> np.ndarray:
    """An (h, w) label map resampled from ``spacing`` (y, x) to ``target`` (nearest; with
    ``points_fill``, the value its isolated points sit on, every point kept:
    :func:`dataloaders.augment.keep_points`) and fitted to ``size`` (``fill`` where it pads), as
    :func:`to_target` does a training slice's masks."""
    shape = resampled_shape(mask.shape, spacing, target)
    return fit(resize(mask, shape, order=0, points_fill=points_fill), size, fill)


def slices_to_target(x: torch.Tensor, spacing, target, size) -> torch.Tensor:
    """(B, 1, H, W) slices -> (B, 1, *size): bilinear resampling to ``target``, centre crop/pad."""
    shape = resampled_shape(x.shape[-2:], spacing, target)
    x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False)
    return _fit_tensor(x, size)


def undo_fit(x: torch.Tensor, shape, spacing, target) -> torch.Tensor:
    """(B, C, h, w) labels or class scores at the target grid -> (B, C, h', w') on the grid of the
    (H, W) = ``shape`` slice resampled to ``target``: the inverse crop/pad, zeros outside the input
    (the background label, or equal scores whose argmax is class 0). Resizing to (H, W) is left
    to the caller (nearest for labels, bilinear for scores)."""
    return _fit_tensor(x, resampled_shape(shape, spacing, target))


def _fit_tensor(x: torch.Tensor, size) -> torch.Tensor:
    """Centre crop or zero-pad the last two dims of ``x`` to ``size`` (the same offsets as :func:`fit`)."""
    pads = []
    for n, m in zip(reversed(x.shape[-2:]), reversed(tuple(size))):
        off = centre_offset(n, m)
        sign = 1 if m > n else -1  # negative padding crops
        pads += [sign * off, sign * (abs(n - m) - off)]
    return F.pad(x, pads)
