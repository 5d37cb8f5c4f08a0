"""Intensity normalisation of scans, as the published ACDC h5 files have it: the one path from
raw voxel values to the network's [0, 1] input (conversions, phantoms, ``predict.py``, ``refine.py``)."""
from __future__ import annotations

import numpy as np

# After the min-max scaling the voxels above the lowest value start below 0.01 in every ACDC and
# MSCMR scan; a fill value far below the rest (e.g. -32768 padding: 0.98) would squeeze the scan.
MAX_LOW_GAP = 0.5
# After the normalisation 36% (MSCMR LGE) to 45% (ACDC cine) of a scan's voxels or more lie in the
# middle of the range, (0.05, 0.95); a padding fill far from the tissue (below it behind a ring of
# interpolated values, or above it and so the 99th percentile) leaves only that ring there.
MIN_MID_RANGE = 0.1
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
    when fewer than ``MIN_MID_RANGE`` of the voxels lie in the middle of the scaled range (a fill
    far above or below the tissue squeezed it into a sliver), or when it holds at most
    ``MAX_LABEL_LEVELS`` distinct values (a label mask given for a scan).
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
    v = ((v - lo) / (hi - lo)).astype(np.float32)
    mid = float(np.mean((v > 0.05) & (v < 0.95)))
    if mid < MIN_MID_RANGE:
        raise ValueError(f"{name}: after the intensity normalisation (a clip at the 99th percentile, then min-max) "
                         f"only {100 * mid:.1f}% of its voxels lie between 5% and 95% of the range (scans: 30% or "
                         "more), so the scan is squeezed into a sliver of it: a padding fill far above or below "
                         "the tissue? Give it the scan's background value")
    return v
