import numpy as np
import pytest

from postprocess import largest_components, postprocess


def test_only_each_class_largest_3d_component_survives():
    pred = np.zeros((3, 8, 8), np.uint8)
    pred[0:3, 1:4, 1:4] = 3      # LV: 27 voxels across three slices
    pred[1, 6, 6] = 3            # an LV island: removed
    pred[0, 6, 0:3] = 1          # RV: 3 voxels
    pred[2, 7, 7] = 1            # an RV island of 1 voxel: removed
    pred[1, 5, 4] = 2            # MYO touching LV diagonally: its own class, kept
    out = largest_components(pred)
    expected = pred.copy()
    expected[1, 6, 6] = expected[2, 7, 7] = 0
    assert np.array_equal(out, expected)
    assert pred[1, 6, 6] == 3  # the input is not modified


def test_components_connect_across_slices_diagonally():
    pred = np.zeros((2, 4, 4), np.uint8)
    pred[0, 0, 0] = pred[1, 1, 1] = 2  # 26-connected: one component
    assert np.array_equal(largest_components(pred), pred)


def test_postprocess_names_its_choices():
    pred = np.ones((1, 2, 2), np.uint8)
    assert postprocess(pred, "none") is pred
    with pytest.raises(ValueError, match="--postprocess must be one of none, lcc"):
        postprocess(pred, "crf")
