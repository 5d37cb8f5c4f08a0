"""Intensity normalisation of scans, as the published ACDC h5 files have it: the one path from
raw voxel values to the network's [0, 1] input (conversions, phantoms, ``predict.py``, ``refine.py``)."""
from __future__ import annotations

import numpy as np

# Statistics of a scan's "tissue": its voxels other than its lowest and its highest value (where
# a padding fill sits), after the normalisation. Their 10th percentile is 0.10 at most in every
# ACDC and MSCMR scan; a fill far below the tissue (e.g. -32768 or -1024 padding, also behind a
# ring of interpolated values, as resampling leaves it) puts it at 0.7-0.99.
MAX_LOW_GAP = 0.5
# Their 10th-90th percentile spread is 0.19 at least (MSCMR LGE; ACDC cine 0.29); a fill far above
# the tissue becomes the 99th-percentile clip and squeezes it towards 0 (32767 or 4095: under 0.1).
MIN_SPREAD = 0.1
# A label mask given for a scan (e.g. a folder's *_gt.nii.gz) holds a handful of values; a scan
# holds hundreds.
MAX_LABEL_LEVELS = 8


def normalise_intensity(volume: np.ndarray, name: str = "the image") -> np.ndarray:
    """ACDC intensity normalisation of one volume, as the published h5 files have it.

    Clips at the volume's 99th percentile, then min-max scales to [0, 1]. ``volume`` any real
    dtype and shape; returns float32 of the same shape in [0, 1]. ValueError naming ``name`` when
    nothing is left after the clip (99% or more of the voxels at the lowest value: an empty scan,
    or a small one padded onto a large canvas), which would be segmented as a blank image, when
    the voxels other than the lowest and highest value start above ``MAX_LOW_GAP`` of the scaled
    range (10th percentile: a padding fill far below the tissue) or spread over less than
    ``MIN_SPREAD`` of it (10th to 90th percentile: a fill far above), or when it holds at most
    ``MAX_LABEL_LEVELS`` distinct values (a label mask given for a scan).
    """
    raw = np.asarray(volume, dtype=np.float64)
    levels = np.unique(raw.ravel()[:: max(1, raw.size // 1_000_000)])  # a subsample bounds the time on large scans
    v = np.clip(raw, None, np.percentile(raw, 99))
    lo, hi = v.min(), v.max()
    if hi <= lo:
        raise ValueError(f"{name}: 99% or more of its voxels hold its lowest value {lo:g}, so the intensity "
                         "normalisation (a clip at the 99th percentile) leaves a blank image; an empty or "
                         "padded scan?")
    if len(levels) <= MAX_LABEL_LEVELS:
        raise ValueError(f"{name}: only {len(levels)} distinct values ({', '.join(f'{x:g}' for x in levels)}): "
                         "a label mask, not a scan?")
    v = ((v - lo) / (hi - lo)).astype(np.float32)
    tissue = v[(raw > raw.min()) & (raw < raw.max())]
    low, high = np.percentile(tissue, [10, 90]) if tissue.size else (0.0, 1.0)
    if low > MAX_LOW_GAP:
        raise ValueError(f"{name}: its lowest value {lo:g} lies far below its other voxels (90% of them from "
                         f"{lo + low * (hi - lo):.4g} up), so the intensity normalisation would squeeze the scan into "
                         f"[{low:.2f}, 1]; a padding fill? Give it the scan's background value")
    if high - low < MIN_SPREAD:
        raise ValueError(f"{name}: after the intensity normalisation (a clip at the 99th percentile, {hi:g}, "
                         "then min-max) 80% of its voxels other than its lowest and highest value lie within "
                         f"{high - low:.3f} of the range (scans: 0.19 or more): a padding fill far above the "
                         "tissue? Give it the scan's background value")
    return v
