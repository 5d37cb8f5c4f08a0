import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from dataloaders import io
from dataloaders.shape_prior import ShapePrior, check_not_training_labels


def test_prior_from_h5_and_nifti_is_one_hot_at_patch_size(tmp_path):
    label = np.zeros((3, 40, 40), np.uint8)
    label[1, 10:30, 10:30] = 3
    label[1, 15:25, 15:25] = 1
    label[1, 12:14, 12:28] = 2
    io.write_h5(str(tmp_path / "a" / "x.h5"), {"label": label})
    sitk.WriteImage(sitk.GetImageFromArray(label.astype(np.int16)), str(tmp_path / "a" / "y.nii.gz"))
    prior = ShapePrior.from_source(str(tmp_path / "a"), (32, 32))
    assert len(prior) == 2  # empty slices dropped, one heart slice per file
    masks = prior.sample(5, torch.device("cpu"), seed=[0, 7])
    assert masks.shape == (5, 4, 32, 32)
    assert torch.equal(masks.sum(1), torch.ones(5, 32, 32))
    assert torch.equal(masks, prior.sample(5, torch.device("cpu"), seed=[0, 7]))


def test_prior_is_cropped_like_the_training_slices():
    label = np.zeros((64, 64), np.uint8)
    label[40:50, 40:50] = 3
    label[42:44, 40:50], label[50:54, 40:50] = 2, 1
    prior = ShapePrior([label], (32, 32), input_size=(64, 64), fg_prob=1.0)
    masks = prior.sample(6, torch.device("cpu"), seed=[0, 1])
    assert masks.shape == (6, 4, 32, 32)
    assert torch.equal(masks.sum(1), torch.ones(6, 32, 32))
    assert (masks[:, 3].flatten(1).sum(1) > 0).all()  # every crop is centred on the heart


def test_prior_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--shape_prior .*no such"):
        ShapePrior.from_source(str(tmp_path / "missing"), (32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .h5"):
        ShapePrior.from_source(str(tmp_path / "empty"), (32, 32))
    with pytest.raises(ValueError, match="no slice with a heart"):
        ShapePrior([np.zeros((8, 8))], (16, 16))
    with pytest.raises(ValueError, match="0..3, found 7"):
        ShapePrior([np.full((8, 8), 7)], (16, 16))
    heart = np.zeros((8, 8), np.uint8)
    heart[2:6, 2:6] = 1
    with pytest.raises(ValueError, match="no voxel of class 2, 3 of 1..3"):  # binary heart masks
        ShapePrior([heart], (16, 16))
    heart[3:5, 3:5] = 2
    heart[0, 0] = 3
    assert len(ShapePrior([heart], (16, 16))) == 1
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(OSError, match="bad.nii.gz"):
        ShapePrior.from_source(str(tmp_path / "bad.nii.gz"), (16, 16))
    (tmp_path / "flat").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.uint8)), str(tmp_path / "flat" / "x_gt.nii.gz"))
    with pytest.raises(ValueError, match=r"x_gt.nii.gz: expected a 3-D stack of 2-D slices, got a 2-D image"):
        ShapePrior.from_source(str(tmp_path / "flat"), (16, 16))


def heart_volume(radius: float, size: int = 64) -> np.ndarray:
    """(3, size, size) labels: a disc of LV in a MYO ring with an RV beside it, centred."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    label = np.zeros((3, size, size), np.uint8)
    label[:, r < radius * 1.4] = 2
    label[:, r < radius] = 3
    label[:, (r >= radius * 1.4) & (r < radius * 2) & (xx < 0)] = 1
    return label


def heart_area(prior: ShapePrior) -> float:
    return float((prior.masks > 0).float().mean())


def test_prior_hearts_take_the_training_scale_under_target_spacing(tmp_path):
    # The masks were resized whole to the input size whatever their spacing, while --target_spacing
    # resamples the training slices: the README's MSCMR recipe met hearts of about half the size.
    for name, spacing in (("fine", 0.75), ("coarse", 1.5)):
        img = sitk.GetImageFromArray(heart_volume(6 if name == "coarse" else 12).astype(np.int16))
        img.SetSpacing((spacing, spacing, 8.0))
        (tmp_path / name).mkdir()
        sitk.WriteImage(img, str(tmp_path / name / "m.nii.gz"))
    # The same heart, 18 mm across, drawn at two pixel sizes: equal at the target spacing.
    fine, coarse = (ShapePrior.from_source(str(tmp_path / n), (64, 64), target_spacing=(1.5, 1.5))
                    for n in ("fine", "coarse"))
    assert heart_area(fine) == pytest.approx(heart_area(coarse), rel=0.1)
    unscaled = ShapePrior.from_source(str(tmp_path / "fine"), (64, 64))
    assert heart_area(unscaled) == pytest.approx(4 * heart_area(fine), rel=0.1)
    # Masks without a spacing: refused under --target_spacing unless --prior_spacing gives it.
    io.write_h5(str(tmp_path / "h5" / "m.h5"), {"label": heart_volume(12)})
    with pytest.raises(ValueError, match=r"m.h5 has no spacing, and --target_spacing resamples .* --prior_spacing"):
        ShapePrior.from_source(str(tmp_path / "h5"), (64, 64), target_spacing=(1.5, 1.5))
    given = ShapePrior.from_source(str(tmp_path / "h5"), (64, 64), target_spacing=(1.5, 1.5), prior_spacing=(0.75, 0.75))
    assert heart_area(given) == pytest.approx(heart_area(fine), rel=0.01)
    # A NIfTI file without geometry reads as 1 mm: its spacing is unknown too, not 1 mm.
    (tmp_path / "bare").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(heart_volume(12).astype(np.int16)), str(tmp_path / "bare" / "m.nii.gz"))
    with pytest.raises(ValueError, match=r"m.nii.gz has no spacing"):
        ShapePrior.from_source(str(tmp_path / "bare"), (64, 64), target_spacing=(1.5, 1.5))


def test_a_nifti_prior_stored_across_the_slice_axis_is_refused(tmp_path):
    # Masks saved as (W, H, Z) with their spacing passed for 64 long-axis "slices" of 3 x 64.
    img = sitk.GetImageFromArray(np.ascontiguousarray(heart_volume(12).transpose(2, 1, 0)).astype(np.int16))
    img.SetSpacing((8.0, 1.5, 1.5))
    sitk.WriteImage(img, str(tmp_path / "t.nii.gz"))
    with pytest.raises(ValueError, match="t.nii.gz: voxel axis i is 8 mm thick"):
        ShapePrior.from_source(str(tmp_path / "t.nii.gz"), (32, 32))


def test_prior_numbered_unlike_the_data_root_is_refused(tmp_path, phantom_root):
    # MSCMR-like masks with LV and MYO swapped trained the discriminator on swapped shapes, exit 0
    masks = [io.read_case(phantom_root, c).label for c in io.list_cases(phantom_root)[:2]]
    swapped = [np.choose(m, [0, 1, 3, 2]).astype(np.uint8) for m in masks]
    sitk.WriteImage(sitk.GetImageFromArray(swapped[0]), str(tmp_path / "swapped.nii.gz"))
    with pytest.raises(ValueError, match=r"^--shape_prior .*swapped.nii.gz: the shape prior's MYO \(class 2\) touches "
                                         r"only \d+% of its LV's \(class 3\) border"):
        ShapePrior.from_source(str(tmp_path / "swapped.nii.gz"), (32, 32), class_names=io.CLASS_NAMES)
    slices = [s for m in masks for s in m]
    assert len(ShapePrior(slices, (32, 32), class_names=io.CLASS_NAMES)) > 0
    assert len(ShapePrior(slices, (32, 32), class_names=("rv", "myo", "lv"))) > 0
    # a data root that numbers its classes LV, MYO, RV: an ACDC-ordered prior is refused
    with pytest.raises(ValueError, match=r"as the data root does \(1 LV, 2 MYO, 3 RV\)"):
        ShapePrior(slices, (32, 32), class_names=("LV", "MYO", "RV"))
    assert len(ShapePrior([np.choose(s, [0, 3, 2, 1]) for s in slices], (32, 32),
                          class_names=("LV", "MYO", "RV"))) > 0
    assert len(ShapePrior(swapped[0], (32, 32), class_names=("A", "B", "C"))) > 0  # no LV, MYO: unchecked


def test_training_labels_are_refused_as_prior_by_place_and_by_content(tmp_path, phantom_root):
    import shutil

    from dataloaders.phantoms import write_phantoms

    with pytest.raises(ValueError, match="lies inside --root_path"):
        check_not_training_labels(os.path.join(phantom_root, io.VOLUME_DIR), phantom_root)
    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(phantom_root, io.VOLUME_DIR), copy)
    with pytest.raises(ValueError, match=r"slice \d+ of .*copy/patient\d+_frame\d+.h5 equals slice"):
        check_not_training_labels(str(copy), phantom_root)
    # the raw masks of one patient (a test patient too), as NIfTI: refused
    case = io.list_cases(phantom_root)[-1]
    (tmp_path / "raw").mkdir()
    io.write_nifti(str(tmp_path / "raw" / f"{case}_gt.nii.gz"), io.read_case(phantom_root, case).label)
    with pytest.raises(ValueError, match=f"{case}_gt.nii.gz equals slice"):
        check_not_training_labels(str(tmp_path / "raw"), phantom_root)
    other = tmp_path / "other"
    write_phantoms(str(other), patients=2, seed=99, size=64)
    check_not_training_labels(str(other / io.VOLUME_DIR), phantom_root)


def test_samples_are_dihedral_variants_or_small_rotations_of_the_mask():
    mask = np.zeros((32, 32), np.int64)
    mask[6:20, 8:14] = 1  # asymmetric, off-centre
    mask[20:26, 8:24] = 3
    mask[0, 31] = 2  # the prior must hold every class
    prior = ShapePrior([mask], (32, 32))
    variants = [np.flip(np.rot90(mask, k), a) for k in range(4) for a in (0, 1)]
    exact = 0
    for seed in range(40):
        lab = prior.sample(1, torch.device("cpu"), seed=seed)[0].argmax(0).numpy()
        exact += any(np.array_equal(lab, v) for v in variants)
        for c in (1, 3):  # a rotation by at most 20 degrees keeps each area within 15%
            assert abs((lab == c).sum() - (mask == c).sum()) <= 0.15 * (mask == c).sum()
    assert 10 < exact < 40  # about half rot/flip, a quarter untouched, a quarter rotated


def test_small_rotations_of_a_non_square_prior_are_rigid():
    # Found by a review: a rotation matrix on the grid's per-axis normalised coordinates sheared a
    # 64 x 160 map (a disc of radius 20 turned by 20 degrees had a 38 x 52 bounding box).
    from dataloaders.shape_prior import _rotate_and_zoom

    yy, xx = np.mgrid[:64, :160]
    disc = torch.from_numpy(((yy - 31.5) ** 2 + (xx - 79.5) ** 2 <= 20 ** 2).astype(np.float32))
    turned = _rotate_and_zoom(disc[None], torch.tensor([np.deg2rad(20.0)]), torch.ones(1))[0].numpy() > 0
    rows, cols = np.flatnonzero(turned.any(1)), np.flatnonzero(turned.any(0))
    assert abs(len(rows) - 40) <= 1 and abs(len(cols) - 40) <= 1
    assert abs(int(turned.sum()) - int(disc.sum())) <= 0.02 * disc.sum()
    bar = torch.zeros(64, 160)
    bar[30:34, 40:120] = 1  # 80 pixels long: turned by 20 degrees it spans 80 cos 20 = 75 columns
    turned = _rotate_and_zoom(bar[None], torch.tensor([np.deg2rad(20.0)]), torch.ones(1))[0]
    cols = np.flatnonzero((turned > 0).numpy().any(0))
    assert abs(len(cols) - 77) <= 2


def test_a_zoom_of_the_prior_by_hand():
    from dataloaders.shape_prior import _rotate_and_zoom

    square = torch.zeros(1, 16, 16)
    square[0, 6:10, 6:10] = 1
    twice = _rotate_and_zoom(square, torch.zeros(1), torch.tensor([2.0]))[0]
    assert torch.equal(twice, F.pad(torch.ones(8, 8), (4, 4, 4, 4)))  # 4x4 -> 8x8, about the centre
    half = _rotate_and_zoom(F.pad(torch.ones(1, 8, 8), (4, 4, 4, 4)), torch.zeros(1), torch.tensor([0.5]))[0]
    assert torch.equal(half, square[0])


def test_the_prior_is_zoomed_as_the_training_slices_are():
    # Found by a review: with --aug_scale the predictions of zoomed slices showed hearts 0.64-1.44 times
    # the prior's area, so the discriminator could tell them apart by size alone.
    mask = np.zeros((64, 64), np.int64)
    mask[24:40, 24:40], mask[28:36, 28:36], mask[30:34, 30:34] = 1, 2, 3
    areas = {s: sorted(int((ShapePrior([mask], (64, 64), scale=s).sample(1, torch.device("cpu"), seed=k)[0, 0] == 0)
                           .sum()) for k in range(40)) for s in (0.0, 0.4)}
    assert areas[0.0][0] > 0.85 * 256 and areas[0.0][-1] < 1.15 * 256  # rotations only
    assert areas[0.4][0] < 0.6 * 256 and areas[0.4][-1] > 1.5 * 256


def test_a_rotation_and_a_zoom_together_by_hand():
    # A mutation audit found this unpinned: the sine terms left unzoomed passed every test at angle 0
    # but turned a zoom by 2 at 90 degrees into a plain quarter turn.
    from dataloaders.shape_prior import _rotate_and_zoom

    square = torch.zeros(1, 16, 16)
    square[0, 6:10, 6:10] = 1  # a quarter turn about the centre keeps it; the zoom doubles it
    out = _rotate_and_zoom(square, torch.tensor([np.pi / 2]), torch.tensor([2.0]))[0]
    assert torch.equal(out, F.pad(torch.ones(8, 8), (4, 4, 4, 4)))


def test_a_prior_read_from_files_keeps_its_zoom(tmp_path):
    # A mutation audit found this unpinned: from_source dropped ``scale``, so a --shape_prior was never zoomed.
    label = np.zeros((1, 32, 32), np.uint8)
    label[0, 8:24, 8:24], label[0, 12:20, 12:20], label[0, 8:24, 4:8] = 2, 3, 1
    io.write_h5(str(tmp_path / "a" / "x.h5"), {"label": label})
    assert ShapePrior.from_source(str(tmp_path / "a"), (32, 32), scale=0.3).scale == 0.3
