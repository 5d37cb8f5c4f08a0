import numpy as np
import pytest
import torch

from dataloaders import io
from dataloaders.spacing import (median_spacing, parse_target_spacing,
                                 resampled_shape, slices_to_target, to_target)
from inference import back_to_slice, predict_volume


def test_resampling_to_a_coarser_target_halves_the_grid():
    assert resampled_shape((100, 60), (0.5, 1.0), (1.0, 1.0)) == (50, 60)
    image = np.zeros((40, 40), np.float32)
    label = np.zeros((40, 40), np.int64)
    label[10:30, 10:30] = 2  # a 10 mm square at 0.5 mm
    img, (lab,) = to_target(image, [label], [4], (0.5, 0.5), (1.0, 1.0), (32, 32))
    assert img.shape == lab.shape == (32, 32)
    assert (lab == 2).sum() == 100 and (lab == 4).sum() == 32 * 32 - 20 * 20  # padding: unlabeled


@pytest.mark.parametrize("resize_back", ["labels", "scores"])
def test_predictions_come_back_to_the_scan_grid(resize_back):
    x = torch.rand(3, 1, 50, 70)
    t = slices_to_target(x, (0.8, 0.8), (1.0, 1.0), (48, 48))
    assert t.shape == (3, 1, 48, 48)
    scores = torch.zeros(3, 4, 48, 48)
    scores[:, 0] = 1.0
    scores[:, 3, 20:28, 20:28] = 2.0
    back = back_to_slice(scores, (50, 70), resize_back, (0.8, 0.8), (1.0, 1.0))
    assert back.shape == (3, 1, 50, 70) and set(back.unique().tolist()) == {0.0, 3.0}
    ys, xs = np.nonzero(back[0, 0].numpy() == 3)
    # the centre of the 50x70 grid stays the centre: 8 px at 1 mm = 10 px at 0.8 mm
    assert (ys.min() + ys.max()) / 2 == pytest.approx(24.5, abs=1) and (xs.min() + xs.max()) / 2 == pytest.approx(34.5, abs=1)
    assert len(set(ys)) == 10 and len(set(xs)) == 10


def test_same_physical_size_whatever_the_field_of_view():
    """An identity model that labels bright pixels: a 20 mm disc is predicted as 20 mm on a
    0.5 mm and a 1.25 mm grid alike."""
    model = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        model.weight[:] = torch.tensor([[[[-10.0]]], [[[10.0]]]])
        model.bias.zero_()
    model.eval()
    for sp, n in ((0.5, 120), (1.25, 48)):
        yy, xx = np.mgrid[:n, :n]
        disc = (((yy - n / 2) * sp) ** 2 + ((xx - n / 2) * sp) ** 2 < 10 ** 2).astype(np.float32)
        image = np.stack([disc - 0.5] * 2)
        pred = predict_volume(model, image, (64, 64), torch.device("cpu"), spacing=(5.0, sp, sp),
                              target_spacing=[1.0, 1.0])
        assert pred.shape == image.shape
        area_mm2 = (pred[0] == 1).sum() * sp * sp
        assert area_mm2 == pytest.approx(np.pi * 100, rel=0.1)


def test_parse_target_spacing(tmp_path):
    for i, sp in enumerate((0.7, 0.8, 1.2)):
        io.write_h5(io.volume_path(str(tmp_path), f"c{i}"), {"image": np.zeros((1, 4, 4), np.float32)},
                    spacing=(5.0, sp, sp))
    assert median_spacing(str(tmp_path)) == [0.8, 0.8]
    assert parse_target_spacing("median", str(tmp_path)) == [0.8, 0.8]
    assert parse_target_spacing("median", str(tmp_path), ["c1", "c2"]) == [1.0, 1.0]  # the training cases'
    assert parse_target_spacing("off", "") is None and parse_target_spacing("1.5", "") == [1.5, 1.5]
    assert parse_target_spacing("1,2", "") == [1.0, 2.0] and parse_target_spacing([1.0, 2.0], "") == [1.0, 2.0]
    with pytest.raises(ValueError, match="--target_spacing must be"):
        parse_target_spacing("big", "")
    for bad in ("0", "-1", "inf", "nan", "1,nan", "500", "1.5,150", "100"):  # 150: a typo for 1.50 (2x3-pixel slices)
        with pytest.raises(ValueError, match="values from 0.05 to 10 mm \\(an MRI pixel\\)"):
            parse_target_spacing(bad, "")
    io.write_h5(io.volume_path(str(tmp_path), "nospacing"), {"image": np.zeros((1, 4, 4), np.float32)})
    with pytest.raises(ValueError, match="nospacing.h5 has no spacing"):
        median_spacing(str(tmp_path))


@pytest.mark.parametrize("shape, size", [((5, 7), (8, 10)), ((8, 10), (5, 7)), ((6, 9), (9, 6))])
def test_tensor_fit_uses_the_same_offsets_as_fit(shape, size):
    # A mutation audit found this unpinned: _fit_tensor put the odd pixel of a pad/crop on the other side
    # than fit: undo_fit then shifts predictions by one pixel against the training slices.
    from dataloaders.spacing import _fit_tensor, fit, undo_fit

    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    t = _fit_tensor(torch.from_numpy(a)[None, None], size)[0, 0].numpy()
    assert np.array_equal(t, fit(a, size, 0.0))
    # fit, then undo_fit (target spacing = own spacing: no resampling) gives the slice back
    back = undo_fit(torch.from_numpy(fit(a, size, 0.0))[None, None], shape, (1.0, 1.0), (1.0, 1.0))
    if size[0] >= shape[0] and size[1] >= shape[1]:
        assert np.array_equal(back[0, 0].numpy(), a)
