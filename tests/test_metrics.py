"""Tests of code/metrics.py: hand-computed values, medpy equality, empty masks, crop, bad input."""
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import metrics
from metrics import binary_metrics, summarize, surface_distances, units_of, volume_metrics

medpy_binary = pytest.importorskip("medpy.metric.binary")  # GPL: test oracle only


def _medpy(pred, gt, spacing):
    return (medpy_binary.dc(pred, gt),
            medpy_binary.hd95(pred, gt, voxelspacing=spacing, connectivity=1),
            medpy_binary.asd(pred, gt, voxelspacing=spacing, connectivity=1))


def _blobs(rng, shape, sigma, frac):
    """Smoothed-noise blobs: a bool mask with about ``frac`` of the voxels set (several parts)."""
    f = gaussian_filter(rng.standard_normal(shape), sigma)
    return f > np.quantile(f, 1.0 - frac)


# ---------------------------------------------------------------- hand-computed values

def test_1d_segments_by_hand():
    # pred = x in 1..4, gt = x in 3..6. Overlap {3, 4}: dice = 2*2/(4+4) = 0.5.
    # Surfaces: pred {1, 4}, gt {3, 6}. d(P->G) = [|1-3|, |4-3|] = [2, 1];
    # d(G->P) = [|3-4|, |6-4|] = [1, 2]. Pooled sorted [1, 1, 2, 2]; 95th pct at rank
    # 0.95*3 = 2.85 -> between 2 and 2 = 2. asd = mean(d(P->G)) = 1.5.
    pred = np.zeros(10, bool)
    gt = np.zeros(10, bool)
    pred[1:5] = True
    gt[3:7] = True
    assert binary_metrics(pred, gt) == pytest.approx((0.5, 2.0, 1.5), abs=1e-12)
    # 2.5 mm voxels scale every distance by 2.5: hd95 = 5, asd = 3.75.
    assert binary_metrics(pred, gt, (2.5,)) == pytest.approx((0.5, 5.0, 3.75), abs=1e-12)


def test_2d_squares_offset_by_hand():
    # 4x4 squares, pred at rows 2..5 cols 2..5, gt shifted 2 columns right (cols 4..7).
    # Overlap 4x2 = 8: dice = 16/32 = 0.5. Each surface is the 12-pixel ring.
    # d(P->G): top row (2,2..5) -> 2,1,0,0; bottom row the same; left col rows 3,4 -> 2,2
    # (nearest gt ring pixel (r,4)); right col rows 3,4 -> 1,1 (gt ring pixel one row up/down or
    # one column left). Sum 12 over 12 pixels: asd = 1. By symmetry d(G->P) has the same values,
    # pooled 24 values = 8 x {0, 1, 2}; 95th pct rank 0.95*23 = 21.85 -> 2. hd95 = 2.
    pred = np.zeros((12, 12), bool)
    gt = np.zeros((12, 12), bool)
    pred[2:6, 2:6] = True
    gt[2:6, 4:8] = True
    assert binary_metrics(pred, gt) == pytest.approx((0.5, 2.0, 1.0), abs=1e-12)
    # Spacing (y, x) = (1, 3): x steps cost 3. d(P->G): top row 6,3,0,0; bottom 6,3,0,0;
    # left col 6,6; right col 1,1 (one row step beats one column step). Sum 32: asd = 32/12 = 8/3.
    # Pooled: {0 x8, 1 x4, 3 x4, 6 x8}; ranks 21, 22 are 6: hd95 = 6.
    assert binary_metrics(pred, gt, (1.0, 3.0)) == pytest.approx((0.5, 6.0, 8 / 3), abs=1e-12)


def test_3d_slabs_anisotropic_by_hand():
    # Two 1-voxel-thick 2x2 plates at z=1 and z=3: no overlap (dice 0), every voxel is surface,
    # every nearest distance is 2 slices = 2 * 5 mm = 10 mm -> hd95 = asd = 10.
    pred = np.zeros((5, 4, 4), bool)
    gt = np.zeros((5, 4, 4), bool)
    pred[1, 1:3, 1:3] = True
    gt[3, 1:3, 1:3] = True
    assert binary_metrics(pred, gt, (5.0, 1.0, 1.0)) == pytest.approx((0.0, 10.0, 10.0), abs=1e-12)
    assert binary_metrics(pred, gt) == pytest.approx((0.0, 2.0, 2.0), abs=1e-12)


def test_asd_is_directed_pred_to_gt():
    # gt is a single pixel at (0,0); pred adds a far pixel at (0,9). d(P->G) = [0, 9] -> asd 4.5,
    # while d(G->P) = [0] would give 0: the prediction-to-truth direction is the one averaged.
    pred = np.zeros((1, 10), bool)
    gt = np.zeros((1, 10), bool)
    pred[0, [0, 9]] = True
    gt[0, 0] = True
    assert binary_metrics(pred, gt)[2] == pytest.approx(4.5, abs=1e-12)
    assert binary_metrics(gt, pred)[2] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- medpy oracle

@pytest.mark.parametrize("shape,spacing,sigma", [
    ((40, 50), None, 2.0),
    ((40, 50), (0.7, 1.9), 2.0),
    ((8, 40, 36), None, (0.8, 2.5, 2.5)),
    ((8, 40, 36), (5.0, 1.3, 0.9), (0.8, 2.5, 2.5)),
    ((6, 30, 30), (10.0, 1.5625, 1.5625), (0.5, 1.5, 1.5)),
])
def test_equals_medpy_on_random_blobs(shape, spacing, sigma):
    rng = np.random.default_rng(sum(shape))
    for _ in range(6):
        pred = _blobs(rng, shape, sigma, rng.uniform(0.05, 0.3))
        gt = _blobs(rng, shape, sigma, rng.uniform(0.05, 0.3))
        ours = binary_metrics(pred, gt, spacing)
        ref = _medpy(pred, gt, spacing)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_volume_metrics_equal_medpy_on_heart_like_labels():
    # Nested discs per slice (LV inside a MYO ring, RV beside), pred shifted/thinned.
    z, h, w = 6, 48, 48
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((z, h, w), np.uint8)
    pred = np.zeros_like(gt)
    for k in range(z):
        r = 10 - k
        gt[k][(yy - 24) ** 2 + (xx - 26) ** 2 < (r + 3) ** 2] = 2
        gt[k][(yy - 24) ** 2 + (xx - 26) ** 2 < r ** 2] = 3
        gt[k][(yy - 24) ** 2 + (xx - 12) ** 2 < (r - 1) ** 2 + 4] = 1
        pred[k][(yy - 25) ** 2 + (xx - 27) ** 2 < (r + 2) ** 2] = 2
        pred[k][(yy - 25) ** 2 + (xx - 27) ** 2 < (r - 1) ** 2] = 3
        if k < 4:  # RV missed in the apical slices
            pred[k][(yy - 23) ** 2 + (xx - 13) ** 2 < r ** 2] = 1
    spacing = (8.0, 1.4, 1.4)
    res = volume_metrics(pred, gt, spacing)
    assert sorted(res) == [1, 2, 3]
    for c in (1, 2, 3):
        ref = _medpy(pred == c, gt == c, spacing)
        got = (res[c]["dice"], res[c]["hd95"], res[c]["asd"])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- crop == full array

def test_crop_equals_full_array_including_border_contact():
    rng = np.random.default_rng(7)
    shape = (7, 33, 29)
    for spacing in (None, (4.0, 1.2, 0.8)):
        for _ in range(4):
            pred = _blobs(rng, shape, (0.8, 2.0, 2.0), 0.1)
            gt = _blobs(rng, shape, (0.8, 2.0, 2.0), 0.1)
            pred[:, :3, :] = True  # touches the array border: border voxels must stay surface
            cropped = surface_distances(pred, gt, spacing, crop=True)
            full = surface_distances(pred, gt, spacing, crop=False)
            for a, b in zip(cropped, full):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # A small object far from the border: the crop is much smaller, results still equal.
    pred = np.zeros((9, 60, 60), bool)
    gt = np.zeros_like(pred)
    pred[3:6, 20:30, 22:31] = True
    gt[4:7, 23:33, 20:29] = True
    for a, b in zip(surface_distances(pred, gt, (6.0, 1.0, 1.0)),
                    surface_distances(pred, gt, (6.0, 1.0, 1.0), crop=False)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- empty masks

def test_both_empty_is_a_correct_absent():
    z = np.zeros((3, 5, 5), bool)
    assert binary_metrics(z, z, (2.0, 1.0, 1.0)) == (1.0, 0.0, 0.0)


def test_one_empty_costs_the_volume_diagonal():
    # shape (10, 20, 30), spacing (2, 1, 0.5): farthest voxel centres are
    # (9*2, 19*1, 29*0.5) = (18, 19, 14.5) apart -> sqrt(324 + 361 + 210.25) = sqrt(895.25).
    shape, spacing = (10, 20, 30), (2.0, 1.0, 0.5)
    some = np.zeros(shape, bool)
    some[4, 5:8, 5:8] = True
    none = np.zeros(shape, bool)
    worst = math.sqrt(895.25)
    assert binary_metrics(none, some, spacing) == pytest.approx((0.0, worst, worst), abs=1e-12)
    assert binary_metrics(some, none, spacing) == pytest.approx((0.0, worst, worst), abs=1e-12)
    # voxel units: sqrt(9^2 + 19^2 + 29^2) = sqrt(1283)
    assert binary_metrics(none, some)[1] == pytest.approx(math.sqrt(1283), abs=1e-12)
    # a missed class in volume_metrics uses the same penalty
    gt = some.astype(np.uint8) * 2
    res = volume_metrics(np.zeros(shape, np.uint8), gt, spacing)
    assert res[2] == pytest.approx({"dice": 0.0, "hd95": worst, "asd": worst})
    assert res[1] == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}


# ---------------------------------------------------------------- summarize / units

def test_summarize_means_by_hand():
    rows = [
        {1: {"dice": 0.8, "hd95": 2.0, "asd": 1.0}, 2: {"dice": 0.6, "hd95": 4.0, "asd": 2.0},
         3: {"dice": 0.9, "hd95": 1.0, "asd": 0.5}},
        {1: {"dice": 0.4, "hd95": 6.0, "asd": 3.0}, 2: {"dice": 0.8, "hd95": 2.0, "asd": 1.0},
         3: {"dice": 0.7, "hd95": 3.0, "asd": 1.5}},
    ]
    s = summarize(rows)
    # RV dice (0.8+0.4)/2 = 0.6, MYO 0.7, LV 0.8; mean of the three = 0.7
    assert s["dice"] == pytest.approx({"RV": 0.6, "MYO": 0.7, "LV": 0.8, "mean": 0.7})
    # hd95: RV 4, MYO 3, LV 2 -> mean 3; asd: RV 2, MYO 1.5, LV 1 -> mean 1.5
    assert s["hd95"] == pytest.approx({"RV": 4.0, "MYO": 3.0, "LV": 2.0, "mean": 3.0})
    assert s["asd"] == pytest.approx({"RV": 2.0, "MYO": 1.5, "LV": 1.0, "mean": 1.5})


def test_units_of():
    assert units_of(None) == "voxel"
    assert units_of((10.0, 1.5, 1.5)) == "mm"


# ---------------------------------------------------------------- bad input

def test_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        binary_metrics(np.ones((4, 5), bool), np.ones((4, 6), bool))
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(2, 4, 6\)"):
        volume_metrics(np.ones((2, 4, 5), np.uint8), np.ones((2, 4, 6), np.uint8))


def test_wrong_spacing_names_shape():
    with pytest.raises(ValueError, match=r"spacing.*\(2, 4, 5\)"):
        binary_metrics(np.ones((2, 4, 5), bool), np.ones((2, 4, 5), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing.*\(2, 4, 5\)"):
        volume_metrics(np.ones((2, 4, 5), np.uint8), np.ones((2, 4, 5), np.uint8), (1.0,) * 4)
    with pytest.raises(ValueError, match="> 0"):
        binary_metrics(np.ones((4, 5), bool), np.ones((4, 5), bool), (1.0, 0.0))


def test_other_bad_input():
    with pytest.raises(ValueError, match="integers"):
        volume_metrics(np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="no per-volume"):
        summarize([])
    with pytest.raises(ValueError, match="class 3"):
        summarize([{1: {"dice": 1, "hd95": 0, "asd": 0}, 2: {"dice": 1, "hd95": 0, "asd": 0}}])


def test_code_does_not_import_medpy():
    import glob
    import os

    # medpy is GPL: a test oracle only, never imported by the project's code
    code = os.path.dirname(metrics.__file__)
    files = glob.glob(os.path.join(code, "**", "*.py"), recursive=True)
    assert len(files) > 30
    for path in files:
        src = open(path).read()
        assert "import medpy" not in src and "from medpy" not in src, path


def test_summarize_is_the_mean_over_volumes_not_the_median():
    # A mutation audit found this unpinned: summarize used np.median (equal to the mean for the existing
    # 2-row test).
    from metrics import summarize

    row = lambda d: {c: {"dice": d, "hd95": 10 * d, "asd": d} for c in (1, 2, 3)}  # noqa: E731
    s = summarize([row(0.9), row(0.8), row(0.1)])  # one failed volume pulls the mean down
    assert s["dice"]["RV"] == pytest.approx(0.6) and s["dice"]["mean"] == pytest.approx(0.6)
    assert s["hd95"]["LV"] == pytest.approx(6.0)
