"""Intensity normalisation of scans, as the published ACDC h5 files have it: the one path from
raw voxel values to the network's [0, 1] input (conversions, phantoms, ``predict.py``, ``refine.py``)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# A padding fill is the fullest of 1000 intensity bins in the lowest or the highest quarter of the
# voxels, with no more voxels beyond it than in it: resampling leaves it a band (float noise, and
# cubic or Lanczos overshoot beyond it, up to 5% of the voxels) and a ring of in-between values
# next to the tissue. The voxels above a low fill start (10th percentile) at 0.10 of the scaled
# range at most in every ACDC and MSCMR scan; a fill far below the tissue (-32768, -1024) puts
# them at 0.7-0.99.
MAX_LOW_GAP = 0.5
# A high fill on 1% of the voxels or more holds (or, lifted by cubic overshoot, lies just below)
# the 99th-percentile clip. The voxels below it, leaving out the in-plane ring of ``RING`` that
# resampling blends with the fill, reach (95th percentile) 0.40 of the range at least in the 163
# ACDC and MSCMR scans whose top band holds the clip (ACDC as published is clipped), but 0.01-0.23
# under a fill far above the tissue (32767, 4095; cubic resampling included).
MIN_HIGH_REACH = 0.25
RING = (5, 5)
FILL_BINS = 1000
# A label mask given for a scan (e.g. a folder's *_gt.nii.gz) holds a handful of values; a scan
# holds hundreds.
MAX_LABEL_LEVELS = 8


def normalise_intensity(volume: np.ndarray, name: str = "the image") -> np.ndarray:
    """ACDC intensity normalisation of one volume, as the published h5 files have it.

    Clips at the volume's 99th percentile, then min-max scales to [0, 1]. ``volume`` any real
    dtype and shape; returns float32 of the same shape in [0, 1]. ValueError naming ``name`` when
    nothing is left after the clip (99% or more of the voxels at the lowest value: an empty scan,
    or a small one padded onto a large canvas), which would be segmented as a blank image, when
    the voxels above a low fill (:func:`fill_band`) start above ``MAX_LOW_GAP`` of the scaled range
    (a padding fill far below the tissue), or a high fill on 1% of the voxels or more leaves the
    others below ``MIN_HIGH_REACH`` of it (a fill far above the tissue), or when it holds at most
    ``MAX_LABEL_LEVELS`` distinct values (a label mask given for a scan).
    """
    raw = np.asarray(volume, dtype=np.float64)
    sample = raw.ravel()[:: max(1, raw.size // 1_000_000)]  # bounds the time on large scans
    levels = np.unique(sample)
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
    low_band, high_band = fill_band(sample, low=True), fill_band(sample, low=False)
    # Without a low fill band the lowest value itself may be a fill on a few voxels.
    above = v[raw > (low_band[1] if low_band else lo)]
    start = float(np.percentile(above, 10)) if above.size else 0.0
    if start > MAX_LOW_GAP:
        raise ValueError(f"{name}: its lowest value {lo:g} lies far below its other voxels (90% of them from "
                         f"{lo + start * (hi - lo):.4g} up), so the intensity normalisation would squeeze the scan "
                         f"into [{start:.2f}, 1]; a padding fill? Give it the scan's background value")
    # Only a band in the top half of the clipped range squeezes the rest (an air band never lies
    # there): one that holds the 99th-percentile clip, or lies below it where cubic overshoot
    # beyond the fill lifts the clip.
    if high_band and lo + 0.5 * (hi - lo) <= high_band[0] <= hi:
        filled = raw >= high_band[0]
        # Resampling blends the fill into the tissue beside it: that ring is no tissue.
        ring = ndimage.binary_dilation(filled, np.ones((1,) * max(0, raw.ndim - 2) + RING[-raw.ndim:], bool))
        below = v[~ring]
        reach = float(np.percentile(below, 95)) if below.size else 1.0
        if reach < MIN_HIGH_REACH:
            share = float(np.mean((raw >= high_band[0]) & (raw <= high_band[1])))
            raise ValueError(f"{name}: {100 * share:.0f}% of its voxels lie at {high_band[0]:.6g} to "
                             f"{high_band[1]:.6g}, far above the others (95% of them below "
                             f"{lo + reach * (hi - lo):.4g}), so the intensity normalisation (a clip at the 99th "
                             f"percentile, then min-max) would squeeze the scan into [0, {reach:.2f}]; a padding "
                             "fill? Give it the scan's background value")
    return v


def fill_band(values: np.ndarray, low: bool) -> tuple[float, float] | None:
    """(lower, upper) edges of the fullest of ``FILL_BINS`` equal bins over the range of ``values``
    among those holding their lowest (``low``) or highest quarter, where a padding fill would sit;
    None when more of ``values`` lie beyond that bin than in it (no fill: tissue)."""
    counts, edges = np.histogram(values, FILL_BINS)
    k = int(np.clip(np.searchsorted(edges, np.percentile(values, 25 if low else 75), side="right") - 1,
                    0, FILL_BINS - 1))
    b = int(np.argmax(counts[:k + 1])) if low else k + int(np.argmax(counts[k:]))
    beyond = counts[:b].sum() if low else counts[b + 1:].sum()
    return (float(edges[b]), float(edges[b + 1])) if beyond <= counts[b] else None
