import numpy as np
import pytest

from dataloaders.intensity import normalise_intensity


def test_normalise_intensity_hand_values():
    v = np.arange(101, dtype=np.float64)  # 99th percentile = 99 -> 100 clipped to 99
    n = normalise_intensity(v)
    assert n.dtype == np.float32
    assert n[0] == 0 and n[99] == 1 and n[100] == 1 and n[33] == pytest.approx(33 / 99)
    padded = np.zeros(1000)
    padded[:9] = 100  # a small scan on a large empty canvas: the 99th percentile is 0
    for blank in (np.full((2, 3), 5.0), padded):
        with pytest.raises(ValueError, match="scan.nii.gz: 99% or more of its voxels hold its lowest value"):
            normalise_intensity(blank, "scan.nii.gz")


def test_a_fill_far_below_the_scan_is_refused():
    # -32768 padding squeezed the tissue into [0.98, 1]: segmented as noise, exit 0.
    scan = np.tile(np.arange(601, dtype=np.int16), (2, 1))
    padded = scan.copy()
    padded[:, :6] = -32768
    with pytest.raises(ValueError, match=r"scan.nii.gz: its lowest value -32768 lies far below its other voxels "
                                         r"\(90% of them from 120 up\), so .* into \[0.99, 1\]"):
        normalise_intensity(padded, "scan.nii.gz")
    scan[0, 0] = -140  # a gap of 0.19 of the range (up to the 99th percentile, 594): kept
    assert normalise_intensity(scan)[1, 0] == pytest.approx(140 / 734)


@pytest.mark.parametrize("fill, resampling, refused", [
    (-32768, "ring", "lies far below its other voxels"), (-1024, "ring", "lies far below its other voxels"),
    (-32768, "cubic", "lies far below its other voxels"), (32767, "ring", "far above the others"),
    (4095, "ring", "far above the others"), (32767, "cubic", "far above the others"),
    (4095, "cubic", "far above the others")])
def test_a_fill_behind_a_ring_or_above_the_scan_is_refused(fill, resampling, refused):
    # Found by probes: -32768 padding behind a ring of interpolated values (as resampling leaves
    # it) passed the gap check (tissue in [0.987, 1]), and so did cubic resampling, whose overshoot
    # put a few voxels below the fill; a 32767 fill on over 1% of the voxels became the 99th
    # percentile (tissue in [0, 0.017]); all were segmented as noise, exit 0. A high fill resampled
    # with cubic interpolation passed until 2026-12-07: its overshoot lifted the clip above the
    # fill's band, and its blurred edge counted as tissue.
    from scipy import ndimage

    rng = np.random.default_rng(0)
    scan = rng.integers(0, 400, (2, 96, 96)).astype(np.int16)
    padded = np.full((2, 112, 112), fill, np.int16)
    if resampling == "ring":
        padded[:, 7:105, 7:105] = rng.integers(min(fill, 0), max(fill, 0), (2, 98, 98))
    padded[:, 8:104, 8:104] = scan
    if resampling == "cubic":
        padded = np.stack([ndimage.rotate(s.astype(np.float32), 7, order=3, reshape=False, cval=fill) for s in padded])
    with pytest.raises(ValueError, match=f"scan.nii.gz: .*{refused}"):
        normalise_intensity(padded, "scan.nii.gz")
    canvas = np.zeros((2, 256, 256), np.int16)
    canvas[:, 80:176, 80:176] = scan  # a small scan on a canvas of its background value: kept
    assert 0.4 < np.median(normalise_intensity(canvas)[:, 80:176, 80:176]) < 0.7


def test_scans_with_much_noisy_air_are_kept_and_a_fill_on_a_few_voxels_is_refused():
    # Found by a review: with 90% Rician air the air's band was taken for a high fill (refused),
    # and a -32768 fill on a few voxels of a scan without air passed once fills were judged by bands.
    rng = np.random.default_rng(0)
    air = np.abs(rng.normal(0, 2, (4, 192, 192)) + 1j * rng.normal(0, 2, (4, 192, 192)))
    air[:, 64:128, 64:128] = rng.gamma(2, 300, (4, 64, 64))
    assert normalise_intensity(air.astype(np.int16)).max() == 1
    tissue = rng.gamma(4, 200, (4, 64, 64)).astype(np.int16)
    tissue.ravel()[:3] = -32768
    with pytest.raises(ValueError, match="its lowest value -32768 lies far below its other voxels"):
        normalise_intensity(tissue)


def test_a_label_mask_given_for_a_scan_is_refused():
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[:, 2:6, 2:6], mask[:, 3:5, 3:5] = 2, 3
    with pytest.raises(ValueError, match=r"gt.nii.gz: only 3 distinct values \(0, 2, 3\): a label mask, not a scan"):
        normalise_intensity(mask, "gt.nii.gz")


def test_a_large_scan_whose_first_slice_is_blank_is_not_taken_for_a_label_mask():
    # The distinct values are counted on a subsample of large scans; it took every k-th slice
    # instead of every k-th voxel, so a 2-slice scan of 1000x1000 was judged by its blank slice 0.
    scan = np.zeros((2, 1000, 1000), np.float32)
    scan[1] = np.random.default_rng(0).random((1000, 1000)) * 500 + 10
    assert normalise_intensity(scan)[1].max() == 1.0


def test_a_band_low_in_the_range_is_no_high_fill():
    # A mutation audit found the guard untested: air (a band at 50) and a darker strip below it
    # were refused as a high fill when any band was judged.
    rng = np.random.default_rng(0)
    scan = np.abs(50 + rng.normal(0, 2, (4, 96, 96)))
    scan[:, :10] = rng.uniform(0, 5, (4, 10, 96))
    scan[:, 32:64, 32:64] = rng.gamma(2, 300, (4, 32, 32))
    assert normalise_intensity(scan.astype(np.float32)).max() == 1
