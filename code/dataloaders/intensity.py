"""Intensity normalisation of scans, as the published ACDC h5 files have it: the one path from
raw voxel values to the network's [0, 1] input (conversions, phantoms, ``predict.py``, ``refine.py``)."""
from __future__ import annotations

import numpy as np

# After the min-max scaling the voxels above the lowest value start below 0.01 in every ACDC and
# MSCMR scan; a fill value far below the rest (e.g. -32768 padding: 0.98) would squeeze the scan.
MAX_LOW_GAP = 0.5
# A label mask given for a scan (e.g. a folder's *_gt.nii.gz) holds a handful of values; a scan
# holds hundreds.
MAX_LABEL_LEVELS = 8


def normalise_intensity(volume: np.ndarray, name: str = "the image") -> np.ndarray:
    """ACDC intensity normalisation of one volume, as the published h5 files have it.

    Clips at the volume's 99th percentile, then min-max scales to [0, 1]. ``volume`` any real
    dtype and shape; returns float32 of the same shape in [0, 1]. ValueError naming ``name`` when
    nothing is left after the clip (99% or more of the voxels at the lowest value: an empty scan,
    or a small one padded onto a large canvas), which would be segmented as a blank image, when
    the lowest value lies more than ``MAX_LOW_GAP`` of the range below all others (a padding fill),
    or when it holds at most ``MAX_LABEL_LEVELS`` distinct values (a label mask given for a scan).
    """
    v = np.asarray(volume, dtype=np.float64)
    levels = np.unique(v.ravel()[:: max(1, v.size // 1_000_000)])  # a subsample bounds the time on large scans
    v = np.clip(v, None, np.percentile(v, 99))
    lo, hi = v.min(), v.max()
    if hi <= lo:
        raise ValueError(f"{name}: 99% or more of its voxels hold its lowest value {lo:g}, so the intensity "
                         "normalisation (a clip at the 99th percentile) leaves a blank image; an empty or "
                         "padded scan?")
    if len(levels) <= MAX_LABEL_LEVELS:
        raise ValueError(f"{name}: only {len(levels)} distinct values ({', '.join(f'{x:g}' for x in levels)}): "
                         "a label mask, not a scan?")
    rest = v[v > lo].min()
    if rest - lo > MAX_LOW_GAP * (hi - lo):
        raise ValueError(f"{name}: its lowest value {lo:g} lies far below all its other voxels ({rest:g} and up), "
                         f"so the intensity normalisation would squeeze the scan into "
                         f"[{(rest - lo) / (hi - lo):.2f}, 1]; a padding fill? Give it the scan's background value")
    return ((v - lo) / (hi - lo)).astype(np.float32)
