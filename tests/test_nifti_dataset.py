"""A user's own NIfTI data set, end to end: conversion (geometry, splits.json, dataset.json),
training on ``--fold split``, scoring with test_2D_fully.py, and predict.py on new scans."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import acdc_data_processing
import predict
import test_2D_fully
from conftest import orientation_codes, tiny_cfg, without_orientation
from dataloaders import io
from dataloaders.acdc import VolumeSet, make_split
from dataloaders.phantoms import render_patient
from engine import train
from inference import predict_volume
from methods import get_method

SPACING_XYZ = (1.37, 0.91, 6.5)
ORIGIN = (-31.25, 12.5, 88.0)
# An oblique short-axis orientation: a rotation by 30 degrees about x, then 20 about z.
_a, _b = np.radians(30), np.radians(20)
_rot = np.array([[np.cos(_b), -np.sin(_b), 0], [np.sin(_b), np.cos(_b), 0], [0, 0, 1]]) @ \
    np.array([[1, 0, 0], [0, np.cos(_a), -np.sin(_a)], [0, np.sin(_a), np.cos(_a)]])
DIRECTION = tuple(_rot.ravel().tolist())
SPLITS = {"train": [0, 1, 2], "val": [3], "TestSet": [4]}


def write_scan(path, array):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="module")
def nifti_src(tmp_path_factory):
    """SRC/{train,val,TestSet}/{images,labels}: 5 phantom patients, 64x64, both frames, named
    ``subjectN_ED`` / ``subjectN_ES``; scribbles in train, dense masks elsewhere; an unusual
    spacing and an oblique direction."""
    src = tmp_path_factory.mktemp("nifti_src")
    for folder, patients in SPLITS.items():
        for sub in ("images", "labels"):
            (src / folder / sub).mkdir(parents=True)
        for p in patients:
            cases, raws = render_patient(p, seed=0, size=64)
            for case, raw, phase in zip(cases, raws, ("ED", "ES")):
                name = f"subject{p + 1}_{phase}"
                write_scan(src / folder / "images" / f"{name}.nii.gz", raw)
                if folder == "train":
                    write_scan(src / folder / "labels" / f"{name}_scribble.nii.gz", case.scribble)
                else:
                    write_scan(src / folder / "labels" / f"{name}_manual.nii.gz", case.label)
    return src


@pytest.fixture(scope="module")
def nifti_root(nifti_src, tmp_path_factory):
    root = tmp_path_factory.mktemp("nifti_root")
    assert acdc_data_processing.main(["--nifti", str(nifti_src), "--out", str(root),
                                      "--patient_pattern", r"(subject\d+)_"]) == 0
    return root


def test_conversion_keeps_geometry_splits_and_kinds(nifti_root):
    splits = json.loads((nifti_root / "splits.json").read_text())
    assert splits == {"train": [f"subject{p}_{f}" for p in (1, 2, 3) for f in ("ED", "ES")],
                      "val": ["subject4_ED", "subject4_ES"], "test": ["subject5_ED", "subject5_ES"]}
    assert io.class_names(str(nifti_root)) == ("RV", "MYO", "LV")
    train_case = io.read_case(str(nifti_root), "subject1_ED")
    assert train_case.label is None and train_case.scribble.max() == io.UNLABELED
    assert train_case.spacing == pytest.approx(SPACING_XYZ[::-1])
    assert train_case.origin == pytest.approx(ORIGIN) and train_case.direction == pytest.approx(DIRECTION, abs=1e-6)
    assert 0 <= train_case.image.min() and train_case.image.max() == 1
    val_case = io.read_case(str(nifti_root), "subject4_ES")
    assert val_case.scribble is None and set(np.unique(val_case.label)) == {0, 1, 2, 3}
    slice_file = io.read_h5(io.slice_path(str(nifti_root), "subject1_ED", 3))
    assert (slice_file["scribble"] == train_case.scribble[3]).all()


def test_unmatched_files_are_listed_in_one_error(nifti_src, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "train" / "images").mkdir(parents=True)
    (src / "train" / "labels").mkdir()
    for name in ("subject1_ED", "subject2_ED"):
        (src / "train" / "images" / f"{name}.nii.gz").write_bytes(
            (nifti_src / "train" / "images" / f"{name}.nii.gz").read_bytes())
    (src / "train" / "labels" / "subject1_ED_scribble.nii.gz").write_bytes(
        (nifti_src / "train" / "labels" / "subject1_ED_scribble.nii.gz").read_bytes())
    (src / "train" / "labels" / "other_scribble.nii.gz").write_bytes(b"x")
    with pytest.raises(SystemExit) as e:
        acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after argparse's usage lines: one error line for all
    assert e.value.code == 2 and "Traceback" not in err and "error: --nifti" in last
    assert "other_scribble.nii.gz (no image)" in last and "subject2_ED.nii.gz (no label)" in last
    assert not (tmp_path / "out").exists()


def test_folders_and_files_the_conversion_would_skip_are_named(nifti_src, tmp_path):
    # A Val/ or validation/ folder, or cases in a subfolder of images/, were skipped at exit 0
    # (the validation cases gone: training kept the last model without a word).
    import shutil

    from dataloaders import io

    src = tmp_path / "src"
    shutil.copytree(nifti_src, src)
    assert io.unread_entries(str(src)) == []
    shutil.move(src / "val", src / "Val")
    batch = src / "train" / "images" / "batch2"
    batch.mkdir()
    (src / "train" / "notes.txt").write_text("not read, not a scan")
    (src / "stray.nii.gz").write_bytes(b"x")
    with pytest.raises(ValueError) as e:
        io.find_nifti_dataset(str(src))
    assert f"{src}/Val/ (not a split folder: train, val, test, TestSet)" in str(e.value)
    assert f"{batch}/ (a folder: only files in images/ are read)" in str(e.value)
    assert f"{src}/stray.nii.gz (outside a split folder)" in str(e.value) and "notes.txt" not in str(e.value)


def test_scans_in_another_format_are_named_not_skipped(nifti_src, tmp_path, capsys):
    # A probe converted a split whose test case was .nrrd: "18 of 18 cases written", exit 0, and
    # every later test table scored 2 of the 4 test volumes; predict.py skipped such scans too.
    import shutil

    from dataloaders import io

    src = tmp_path / "src"
    shutil.copytree(nifti_src, src)
    images = src / "val" / "images"
    first = sorted(images.iterdir())[0]
    sitk.WriteImage(sitk.ReadImage(str(first)), str(images / "subject9_ED.nrrd"))
    for other in ("subject4_ED.json", "Info.cfg", "Thumbs.db", "README"):  # no scans: let be
        (images / other).write_text("{}")
    (images / "IM0001").write_bytes(bytes(128) + b"DICM" + bytes(64))  # DICOM has no extension to go by
    with pytest.raises(ValueError) as e:
        io.find_nifti_dataset(str(src))
    assert f"{images}/subject9_ED.nrrd (not a NIfTI file: .nii or .nii.gz)" in str(e.value)
    assert f"{images}/IM0001 (not a NIfTI file" in str(e.value)
    assert not any(other in str(e.value) for other in (".json", "Info.cfg", "Thumbs.db", "README"))
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", "unused.pth", "--input", str(images), "--output", str(tmp_path / "out")])
    assert e.value.code == 2 and "IM0001 and 1 other file(s) not NIfTI (.nii, .nii.gz)" in capsys.readouterr().err


def test_a_case_name_with_a_space_is_refused_at_the_conversion(nifti_src, tmp_path, capsys):
    # it converted, then random-walker training stopped on the name
    import shutil

    src = tmp_path / "src"
    shutil.copytree(nifti_src, src)
    images = src / "train" / "images"
    first = sorted(os.listdir(images))[0]
    os.rename(images / first, images / ("my " + first))
    labels = src / "train" / "labels"
    stem = first.split(".nii")[0]
    for f in os.listdir(labels):
        if f.startswith(stem + "_") or f.split(".nii")[0] == stem:
            os.rename(labels / f, labels / ("my " + f))
    with pytest.raises(SystemExit):
        acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")])
    assert f"my {first}: case names may hold letters, digits" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_label_off_the_image_grid_is_named(nifti_src, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "train" / "images").mkdir(parents=True)
    (src / "train" / "labels").mkdir()
    image = nifti_src / "train" / "images" / "subject1_ED.nii.gz"
    (src / "train" / "images" / "subject1_ED.nii.gz").write_bytes(image.read_bytes())
    scribble = sitk.ReadImage(str(nifti_src / "train" / "labels" / "subject1_ED_scribble.nii.gz"))
    scribble.SetOrigin(tuple(o + 500 for o in ORIGIN))  # the same voxels 50 cm away
    label = src / "train" / "labels" / "subject1_ED_scribble.nii.gz"
    sitk.WriteImage(scribble, str(label))
    assert acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert f"{label}: origin" in err and "differs from the image's" in err and "Traceback" not in err


def test_conversion_refuses_twin_names_scribbles_to_score_stray_4s_and_scribbles_without_4s(nifti_src, tmp_path, capsys):
    src = tmp_path / "src"
    for folder in ("train", "val"):
        for sub in ("images", "labels"):
            (src / folder / sub).mkdir(parents=True)
    image, dense = (nifti_src / "val" / "images" / "subject4_ED.nii.gz"), sitk.ReadImage(
        str(nifti_src / "val" / "labels" / "subject4_ED_manual.nii.gz"))
    scribble = nifti_src / "train" / "labels" / "subject1_ED_scribble.nii.gz"
    (src / "train" / "images" / "a.nii.gz").write_bytes((nifti_src / "train" / "images" / "subject1_ED.nii.gz").read_bytes())
    (src / "train" / "images" / "a.NII").write_bytes(b"a second file of that name")
    (src / "train" / "labels" / "a_scribble.nii.gz").write_bytes(scribble.read_bytes())
    with pytest.raises(SystemExit):
        acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")])
    assert "a.nii.gz (same name as a.NII)" in capsys.readouterr().err.splitlines()[-1]
    os.remove(src / "train" / "images" / "a.NII")
    stray = sitk.GetArrayFromImage(dense)
    stray[0, 0, 0] = 4  # one voxel of a dense mask marked unlabeled
    stray_image = sitk.GetImageFromArray(stray)
    stray_image.CopyInformation(dense)
    (src / "val" / "images" / "b.nii.gz").write_bytes(image.read_bytes())
    sitk.WriteImage(stray_image, str(src / "val" / "labels" / "b_manual.nii.gz"))
    zeros = sitk.GetArrayFromImage(sitk.ReadImage(str(scribble)))
    zeros[zeros == 4] = 0  # unstroked voxels marked 0: each would train as a background stroke
    zeros_image = sitk.GetImageFromArray(zeros)
    zeros_image.CopyInformation(sitk.ReadImage(str(scribble)))
    subject1 = sitk.ReadImage(str(nifti_src / "train" / "images" / "subject1_ED.nii.gz"))
    sitk.WriteImage(subject1 + 1, str(src / "train" / "images" / "d.nii.gz"))  # not a's file: another scan
    sitk.WriteImage(zeros_image, str(src / "train" / "labels" / "d_scribble.nii.gz"))
    (src / "val" / "images" / "c.nii.gz").write_bytes((nifti_src / "train" / "images" / "subject1_ED.nii.gz").read_bytes())
    (src / "val" / "labels" / "c_scribble.nii.gz").write_bytes(scribble.read_bytes())
    # a's scan again, as c: it could be trained on (train) and scored (val)
    with pytest.raises(SystemExit):
        acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")])
    assert "a.nii.gz and " in capsys.readouterr().err and not (tmp_path / "out").exists()
    sitk.WriteImage(subject1 + 2, str(src / "val" / "images" / "c.nii.gz"))
    assert acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "b_manual.nii.gz: 4 (unlabeled) on only 0.00% of the voxels" in err
    assert "c_scribble.nii.gz: a scribble, but val cases are scored and need a dense mask" in err
    assert "d_scribble.nii.gz: 4 (unlabeled) on only 0.00% of the voxels: a scribble leaves the voxels nobody" in err
    assert json.loads((tmp_path / "out" / "splits.json").read_text()) == {"train": ["a"], "val": []}


def test_a_scribble_with_a_class_the_data_set_lacks_is_named(nifti_src, tmp_path, capsys):
    # Scribbles were only checked against 0..4: a 3 in a one-class data set was converted, and
    # training then stopped with a traceback (a device-side assert on a GPU).
    src = tmp_path / "src"
    for sub in ("images", "labels"):
        (src / "train" / sub).mkdir(parents=True)
    for name in ("subject1_ED.nii.gz", "subject1_ED_scribble.nii.gz"):
        sub = "labels" if "scribble" in name else "images"
        (src / "train" / sub / name).write_bytes((nifti_src / "train" / sub / name).read_bytes())
    assert acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out"),
                                      "--class_names", "LV"]) != 0
    err = capsys.readouterr().err
    assert "subject1_ED_scribble.nii.gz: scribble (4 = unlabeled): values must lie in 0..1, found 2, 3" in err
    assert not os.path.exists(io.volume_path(str(tmp_path / "out"), "subject1_ED"))


def test_a_2d_or_blank_image_is_a_one_line_error_naming_it(tmp_path, capsys):
    src = tmp_path / "src"
    for sub in ("images", "labels"):
        (src / "val" / sub).mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.int16)), str(src / "val" / "images" / "flat.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.uint8)), str(src / "val" / "labels" / "flat_gt.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), str(src / "val" / "images" / "blank.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 8, 8), np.uint8)), str(src / "val" / "labels" / "blank_gt.nii.gz"))
    assert acdc_data_processing.main(["--nifti", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "flat.nii.gz: expected a 3-D stack of 2-D slices, got a 2-D image" in err
    assert "blank.nii.gz: 99% or more of its voxels hold its lowest value 0" in err
    assert json.loads((tmp_path / "out" / "splits.json").read_text()) == {"val": []}


def test_split_fold_and_bad_splits(nifti_root, tmp_path):
    split = make_split(str(nifti_root), "split")
    assert split.val == ["subject4_ED", "subject4_ES"] and len(split.train) == 6
    bad = tmp_path / "bad"
    bad.mkdir()
    os.symlink(nifti_root / io.VOLUME_DIR, bad / io.VOLUME_DIR)
    (bad / "splits.json").write_text(json.dumps({"train": ["subject1_ED"], "test": ["subject1_ED"]}))
    with pytest.raises(ValueError, match="'subject1_ED' is in both train and test"):
        make_split(str(bad), "split")
    # two frames of one patient (dataset.json's patient_pattern) in train and val
    shutil.copy(nifti_root / "dataset.json", bad / "dataset.json")
    (bad / "splits.json").write_text(json.dumps({"train": ["subject1_ED"], "val": ["subject1_ES"]}))
    with pytest.raises(ValueError, match=r"patient subject1's cases 'subject1_ED' \(train\) and 'subject1_ES' \(val\)"):
        make_split(str(bad), "split")
    (bad / "splits.json").write_text(json.dumps({"train": ["nobody"]}))
    with pytest.raises(ValueError, match="'nobody'"):
        make_split(str(bad), "split")
    os.remove(bad / "splits.json")
    with pytest.raises(ValueError, match="splits.json does not exist"):
        make_split(str(bad), "split")


def test_scribble_only_or_empty_masks_cannot_be_evaluated(nifti_root, tmp_path):
    with pytest.raises(ValueError, match="subject1_ED.h5: no dense 'label'"):
        VolumeSet(str(nifti_root), ["subject1_ED"])
    case = io.read_case(str(nifti_root), "subject4_ED")
    case.label = np.zeros_like(case.label)
    case.name = "empty"
    io.write_case(str(tmp_path), case, slices=False)
    with pytest.raises(ValueError, match="empty.h5: the dense 'label' is empty"):
        VolumeSet(str(tmp_path), ["empty"])


@pytest.fixture(scope="module")
def trained(nifti_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "pce"
    cfg = tiny_cfg(get_method("pce"), str(nifti_root), out, "--fold", "split")
    train(cfg, get_method("pce"))
    return out


def test_train_score_and_predict_a_nifti_data_set(nifti_src, nifti_root, trained, tmp_path, capsys):
    summary = test_2D_fully.main(["--root_path", str(nifti_root), "--fold", "split", "--model_dir", str(trained),
                                  "--out_json", str(tmp_path / "test.json"), "--save_nii", str(tmp_path / "nii")])
    assert summary["n_volumes"] == 2 and summary["units"] == "mm" and summary["scored"]["on"] == "test"
    saved = sitk.ReadImage(str(tmp_path / "nii" / "subject5_ED.nii.gz"))
    assert saved.GetOrigin() == pytest.approx(ORIGIN) and saved.GetDirection() == pytest.approx(DIRECTION, abs=1e-6)
    on_val = test_2D_fully.main(["--root_path", str(nifti_root), "--fold", "split", "--model_dir", str(trained),
                                 "--on", "val", "--out_json", str(tmp_path / "val.json")])
    assert on_val["n_volumes"] == 2 and on_val["scored"]["on"] == "val"
    # Predictions of NIfTI cases must be on the case's grid: a flipped copy of the truth holds
    # the same voxels in another array order.
    preds = tmp_path / "flipped"
    preds.mkdir()
    for name in ("subject5_ED", "subject5_ES"):
        truth = sitk.ReadImage(str(nifti_src / "TestSet" / "labels" / f"{name}_manual.nii.gz"))
        sitk.WriteImage(sitk.Flip(truth, [True, False, False]), str(preds / f"{name}.nii.gz"))
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", str(nifti_root), "--fold", "split", "--pred_dir", str(preds),
                            "--out_json", str(tmp_path / "flipped.json")])
    assert e.value.code == 2 and "subject5_ED.nii.gz: direction" in capsys.readouterr().err

    out = tmp_path / "pred"
    images = nifti_src / "TestSet" / "images"
    assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(images),
                         "--output", str(out), "--overlay", "--device", "cpu", "--tta"]) == 0
    for name in ("subject5_ED", "subject5_ES"):
        scan, pred = sitk.ReadImage(str(images / f"{name}.nii.gz")), sitk.ReadImage(str(out / f"{name}.nii.gz"))
        assert pred.GetSize() == scan.GetSize() and pred.GetSpacing() == scan.GetSpacing()
        # The direction passes through the header's float32 quaternion: equal to float32 precision.
        assert pred.GetOrigin() == scan.GetOrigin()
        assert pred.GetDirection() == pytest.approx(scan.GetDirection(), abs=1e-6)
        labels = sitk.GetArrayFromImage(pred)
        assert labels.dtype == np.uint8 and labels.max() <= 3
        assert (out / f"{name}.png").stat().st_size > 1000
    # --overwrite replaces the overlays it wrote, never a user's own picture of the same name
    assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(images), "--output", str(out),
                         "--overlay", "--device", "cpu", "--overwrite"]) == 0
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    overlay = out / "subject5_ES.png"
    with Image.open(overlay) as png:
        picture, note = png.convert("RGB"), png.info["Description"]
    for description, refused in (("my own figure", "exists and is not an overlay this project wrote"),
                                 (note, "was written by this project but its pixels have changed since")):
        info = PngInfo()
        info.add_text("Description", description)
        picture.putpixel((0, 0), (255, 0, 0))  # a user's own picture, or the overlay marked up
        picture.save(overlay, pnginfo=info)
        with pytest.raises(SystemExit) as e:
            predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(images), "--output", str(out),
                          "--overlay", "--device", "cpu", "--overwrite"])
        assert e.value.code == 2 and f"subject5_ES.png {refused}" in capsys.readouterr().err
    # test_2D_fully and predict share one prediction path: the saved and predicted labels agree
    # up to the normalisation of the raw scan (identical here) and TTA (off in test_2D_fully).
    assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(images / "subject5_ED.nii.gz"),
                         "--output", str(tmp_path / "notta"), "--device", "cpu"]) == 0
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "notta" / "subject5_ED.nii.gz")))
            == sitk.GetArrayFromImage(saved)).all()


def test_predict_writes_no_orientation_for_a_scan_without_one(nifti_src, trained, tmp_path):
    # Viewers place a header without orientation (qform_code = sform_code = 0) each by its own
    # convention; a prediction written with ITK's codes 1 showed mirrored on it in nibabel and FSL.
    scan = tmp_path / "in" / "old.nii.gz"
    scan.parent.mkdir()
    shutil.copy(nifti_src / "TestSet" / "images" / "subject5_ED.nii.gz", scan)
    without_orientation(scan)
    for inp, name in ((scan, "old"), (nifti_src / "TestSet" / "images" / "subject5_ED.nii.gz", "subject5_ED")):
        assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(inp),
                             "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
        assert orientation_codes(tmp_path / "out" / f"{name}.nii.gz") == orientation_codes(inp)
    assert orientation_codes(scan) == (0, 0) and orientation_codes(tmp_path / "out" / "subject5_ED.nii.gz") == (1, 1)


def test_predict_skips_a_bad_file_and_counts_it(nifti_src, trained, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "good.nii.gz").write_bytes((nifti_src / "val" / "images" / "subject4_ED.nii.gz").read_bytes())
    (inp / "broken.nii.gz").write_bytes((nifti_src / "val" / "images" / "subject4_ES.nii.gz").read_bytes()[:300])
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.int16)), str(inp / "flat.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), str(inp / "blank.nii.gz"))
    assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(inp),
                         "--output", str(tmp_path / "out"), "--device", "cpu"]) == 3
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "flat.nii.gz: expected a 3-D stack" in err and "Traceback" not in err
    assert "blank.nii.gz: 99% or more of its voxels hold its lowest value 0" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["good.nii.gz"]
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(inp), "--output", str(inp)])
    assert e.value.code == 2 and "would be overwritten" in capsys.readouterr().err


def test_the_overlay_shows_the_scan_as_it_was_normalised_for_the_prediction(nifti_src, trained, tmp_path,
                                                                           monkeypatch):
    import matplotlib.axes

    import inference

    calls, shown, real = [], [], inference.normalise_intensity
    monkeypatch.setattr(inference, "normalise_intensity", lambda v, *a: calls.append(1) or real(v, *a))
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, image, **k: shown.append(image))
    scan = nifti_src / "TestSet" / "images" / "subject5_ED.nii.gz"
    assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(scan), "--output",
                         str(tmp_path / "out"), "--overlay", "--device", "cpu"]) == 0
    image = real(sitk.GetArrayFromImage(sitk.ReadImage(str(scan))))
    assert len(calls) == 1 and shown and all(any(np.array_equal(s, z) for z in image) for s in shown)


def test_an_intensity_offset_does_not_change_what_is_segmented(nifti_src, trained, tmp_path, monkeypatch):
    # A float64 scan offset by 1e9 kept only ~10 grey levels once cast to float32 before its
    # normalisation; min-max scaling in float64 makes any offset irrelevant.
    scan = sitk.ReadImage(str(nifti_src / "val" / "images" / "subject4_ED.nii.gz"))
    (tmp_path / "in").mkdir()
    sitk.WriteImage(scan, str(tmp_path / "in" / "plain.nii.gz"))
    sitk.WriteImage(sitk.Cast(scan, sitk.sitkFloat64) + 1e9, str(tmp_path / "in" / "shifted.nii.gz"))
    seen, real = [], predict.Prediction.raw
    monkeypatch.setattr(predict.Prediction, "raw", lambda how, model, image, *a: seen.append(image) or real(
        how, model, image, *a))
    assert predict.main(["--checkpoint", str(trained / "best.pth"), "--input", str(tmp_path / "in"),
                         "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert len(seen) == 2 and len(np.unique(seen[0])) > 100 and np.array_equal(seen[0], seen[1])


def test_predict_never_writes_over_a_scan(nifti_src, trained, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    scan = (nifti_src / "val" / "images" / "subject4_ED.nii.gz").read_bytes()
    (inp / "a.nii.gz").write_bytes(scan)
    ckpt = str(trained / "best.pth")
    # The output folder holds the input file itself; a folder with a.nii and a.nii.gz; a file as --output.
    sitk.WriteImage(sitk.ReadImage(str(inp / "a.nii.gz")), str(tmp_path / "a.nii"))
    both = tmp_path / "both"
    both.mkdir()
    (both / "a.nii.gz").write_bytes(scan)
    (both / "a.nii").write_bytes((tmp_path / "a.nii").read_bytes())
    cased = tmp_path / "cased"  # one output file on macOS and Windows
    cased.mkdir()
    (cased / "a.nii.gz").write_bytes(scan)
    (cased / "A.nii").write_bytes((tmp_path / "a.nii").read_bytes())
    for args, message in [(["--input", str(inp / "a.nii.gz"), "--output", str(inp)], "is the input's folder"),
                          (["--input", str(both), "--output", str(tmp_path / "o")], "would both be written to"),
                          (["--input", str(cased), "--output", str(tmp_path / "o")], "where letter case is ignored"),
                          (["--input", str(inp), "--output", str(tmp_path / "a.nii")], "is a file, not a folder")]:
        with pytest.raises(SystemExit) as e:
            predict.main(["--checkpoint", ckpt, *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert (inp / "a.nii.gz").read_bytes() == scan and not (tmp_path / "o").exists()


def test_predict_keeps_existing_files_reads_any_letter_case_and_refuses_twins(nifti_src, trained, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    scan = (nifti_src / "val" / "images" / "subject4_ED.nii.gz").read_bytes()
    (inp / "a.nii.gz").write_bytes(scan)
    (inp / "B.NII.GZ").write_bytes(scan)
    ckpt = str(trained / "best.pth")
    assert predict.main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--device", "cpu"]) == 0
    assert sorted(os.listdir(out)) == ["B.nii.gz", "a.nii.gz"]
    (out / "a.nii.gz").write_bytes(b"an earlier result")
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--device", "cpu"])
    assert e.value.code == 2 and "B.nii.gz exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "a.nii.gz").read_bytes() == b"an earlier result"
    # a file ITK cannot read may be a user's mask that other tools open: kept too
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--device", "cpu", "--overwrite"])
    assert e.value.code == 2 and "a.nii.gz exists and is not a segmentation this project wrote (ITK cannot read" in \
        capsys.readouterr().err
    (out / "a.nii.gz").unlink()
    assert predict.main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--device", "cpu",
                         "--overwrite"]) == 0  # B.nii.gz, written by predict.py, replaced
    assert sitk.ReadImage(str(out / "a.nii.gz")).GetSize() == sitk.ReadImage(str(inp / "a.nii.gz")).GetSize()
    # --output aimed at the data set's labels/ (same names): --overwrite replaced the ground truth
    truth = (nifti_src / "val" / "labels" / "subject4_ED_manual.nii.gz").read_bytes()
    (out / "a.nii.gz").write_bytes(truth)
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--device", "cpu", "--overwrite"])
    assert e.value.code == 2 and "a.nii.gz exists and is not a segmentation this project wrote" in \
        capsys.readouterr().err
    assert (out / "a.nii.gz").read_bytes() == truth
    # ITK given a.nii.gz may read the voxels of an a.nii beside it.
    twins = tmp_path / "twins"
    twins.mkdir()
    (twins / "a.nii.gz").write_bytes(scan)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), str(twins / "a.nii"))
    assert predict.main(["--checkpoint", ckpt, "--input", str(twins / "a.nii.gz"), "--output", str(tmp_path / "o"),
                         "--device", "cpu"]) == 1
    assert "a.nii beside it has the same name" in capsys.readouterr().err


def test_a_split_without_validation_keeps_the_last_model(nifti_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(nifti_root / io.VOLUME_DIR, root / io.VOLUME_DIR)
    os.symlink(nifti_root / io.SLICE_DIR, root / io.SLICE_DIR)
    (root / "splits.json").write_text(json.dumps({"train": ["subject1_ED", "subject2_ES"]}))
    out = tmp_path / "run"
    best = train(tiny_cfg(get_method("pce"), str(root), out, "--fold", "split"), get_method("pce"))
    assert best["iteration"] == 4 and best["dice"] is None
    assert "no validation split" in (out / "log.txt").read_text()
    a, b = torch.load(out / "best.pth", weights_only=False), torch.load(out / "last.pth", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_tta_undoes_its_flips():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 4, 1).eval()  # pixel-wise: flip-equivariant, so TTA changes nothing
    image = np.random.default_rng(0).random((3, 24, 40), dtype=np.float32)
    plain = predict_volume(model, image, (32, 32), torch.device("cpu"))
    assert (predict_volume(model, image, (32, 32), torch.device("cpu"), tta=True) == plain).all()
    assert len(np.unique(plain)) > 1


def test_class_names_come_from_dataset_json(tmp_path):
    io.write_dataset_json(str(tmp_path), ("scar", "myo"))
    assert io.class_names(str(tmp_path)) == ("scar", "myo")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"2": "a"}}))
    with pytest.raises(ValueError, match="dataset.json: 'labels' must map"):
        io.class_names(str(tmp_path))


def test_target_spacing_median_trains_and_predicts_on_the_scan_grid(nifti_src, nifti_root, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(get_method("pce"), str(nifti_root), out, "--fold", "split", "--target_spacing", "median")
    assert cfg.target_spacing == pytest.approx([0.91, 1.37])  # (y, x) of every case here
    train(cfg, get_method("pce"))
    images = nifti_src / "val" / "images"
    assert predict.main(["--checkpoint", str(out / "best.pth"), "--input", str(images),
                         "--output", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    scan = sitk.ReadImage(str(images / "subject4_ED.nii.gz"))
    pred = sitk.ReadImage(str(tmp_path / "pred" / "subject4_ED.nii.gz"))
    assert pred.GetSize() == scan.GetSize() and pred.GetSpacing() == scan.GetSpacing()
    # A copy without header geometry (1 mm at the origin) was segmented at the wrong scale, exit 0.
    bare = tmp_path / "bare"
    bare.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(scan)), str(bare / "subject4_ED.nii.gz"))
    assert predict.main(["--checkpoint", str(out / "best.pth"), "--input", str(bare),
                         "--output", str(tmp_path / "pred_bare"), "--device", "cpu"]) == 1
    assert not (tmp_path / "pred_bare" / "subject4_ED.nii.gz").exists()
