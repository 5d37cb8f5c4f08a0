import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import inference
import test_2D_fully
from dataloaders import io
from dataloaders.acdc import fold_split, make_split


@pytest.fixture
def pred(tmp_path):
    """A folder for predictions; results go beside it (--out_json inside --pred_dir is refused)."""
    (tmp_path / "pred").mkdir()
    return tmp_path / "pred"


def fold1_test_cases(root):
    return fold_split(io.list_cases(root), "fold1").test


def score(root, pred_dir, out):
    return test_2D_fully.main(["--root_path", root, "--fold", "fold1", "--pred_dir", str(pred_dir),
                               "--out_json", str(out)])


def test_perfect_predictions_score_perfectly(phantom_root, pred, tmp_path, capsys):
    cases = fold1_test_cases(phantom_root)
    for i, c in enumerate(cases):
        label = io.read_case(phantom_root, c).label
        if i % 2:  # one prediction as NIfTI, the other as h5
            sitk.WriteImage(sitk.GetImageFromArray(label), str(pred / f"{c}.nii.gz"))
        else:
            io.write_h5(str(pred / f"{c}.h5"), {"label": label})
    summary = score(phantom_root, pred, tmp_path / "out" / "r.json")
    assert summary["dice"] == {"RV": 1.0, "MYO": 1.0, "LV": 1.0, "mean": 1.0}
    assert summary["hd95"]["mean"] == 0 and summary["n_volumes"] == len(cases)
    assert summary["units"] == "mm"
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == summary
    rows = list(csv.DictReader(open(tmp_path / "out" / "r.csv")))
    assert len(rows) == 3 * len(cases) and {r["class"] for r in rows} == {"RV", "MYO", "LV"}
    assert "MYO" in capsys.readouterr().out


def test_an_unreadable_volume_elsewhere_in_the_root_is_named_before_scoring(phantom_root, pred, tmp_path, capsys):
    # Found by a review: the root's digest, taken after predicting, read every volume of the root:
    # a broken case outside the split ended in a traceback and no results file.
    import shutil

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    broken = root / io.VOLUME_DIR / "zz_partial.h5"
    broken.write_bytes(b"not an h5 file")
    for c in fold1_test_cases(phantom_root):
        io.write_h5(str(pred / f"{c}.h5"), {"label": io.read_case(phantom_root, c).label})
    with pytest.raises(SystemExit) as e:
        score(str(root), pred, tmp_path / "r.json")
    assert e.value.code == 2 and f"error: {broken}: cannot read h5" in capsys.readouterr().err


def test_a_missed_class_is_penalised_not_skipped(phantom_root, pred, tmp_path):
    cases = fold1_test_cases(phantom_root)
    for c in cases:
        label = io.read_case(phantom_root, c).label.copy()
        label[label == 1] = 0  # RV never predicted
        io.write_h5(str(pred / f"{c}.h5"), {"label": label})
    summary = score(phantom_root, pred, tmp_path / "r.json")
    assert summary["dice"]["RV"] == 0 and summary["hd95"]["RV"] > 100
    assert summary["dice"]["LV"] == 1


def test_missing_prediction_names_the_case(phantom_root, pred, tmp_path, capsys):
    first = fold1_test_cases(phantom_root)[0]
    with pytest.raises(SystemExit):
        score(phantom_root, pred, tmp_path / "r.json")
    assert f"no prediction for case {first}" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_wrong_shape_is_an_error(phantom_root, pred, tmp_path, capsys):
    for c in fold1_test_cases(phantom_root):
        io.write_h5(str(pred / f"{c}.h5"), {"label": np.zeros((2, 8, 8), np.uint8)})
    with pytest.raises(SystemExit):
        score(phantom_root, pred, tmp_path / "r.json")
    assert "shape (2, 8, 8) differs from case" in capsys.readouterr().err


def test_needs_exactly_one_source(phantom_root, tmp_path):
    with pytest.raises(SystemExit):
        test_2D_fully.main(["--root_path", phantom_root, "--out_json", str(tmp_path / "r.json")])


def test_corrupt_prediction_file_is_named(phantom_root, pred, tmp_path, capsys):
    first = fold1_test_cases(phantom_root)[0]
    (pred / f"{first}.nii.gz").write_bytes(b"garbage")
    with pytest.raises(SystemExit):
        score(phantom_root, pred, tmp_path / "r.json")
    assert f"{first}.nii.gz: corrupt or truncated NIfTI" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [9, -1])
def test_prediction_values_outside_the_classes_are_named(phantom_root, pred, tmp_path, capsys, bad):
    cases = fold1_test_cases(phantom_root)
    for c in cases:
        label = io.read_case(phantom_root, c).label.astype(np.int16)
        if c == cases[0]:
            label[0, 0, 0] = bad
        sitk.WriteImage(sitk.GetImageFromArray(label), str(pred / f"{c}.nii.gz"))
    with pytest.raises(SystemExit) as e:
        score(phantom_root, pred, tmp_path / "r.json")
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{cases[0]}.nii.gz: values must lie in 0..3, found {bad}" in err
    assert not (tmp_path / "r.json").exists()


def test_results_say_what_was_scored(phantom_root, tmp_path, capsys, monkeypatch):
    import engine
    from conftest import tiny_cfg
    from methods import get_method

    cfg = tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run")
    engine.train(cfg, get_method("pce"))
    summary = test_2D_fully.main(["--root_path", phantom_root, "--model_dir", str(tmp_path / "run"),
                                  "--checkpoint", "last", "--out_json", str(tmp_path / "r.json")])
    scored = json.loads((tmp_path / "r.json").read_text())["scored"]
    assert scored == summary["scored"]
    assert scored["method"] == "pce" and scored["iteration"] == 4 and scored["fold"] == "fold1"
    assert scored["checkpoint"] == str(tmp_path / "run" / "last.pth")
    assert scored["root_path"] == phantom_root and len(scored["config_sha256"]) == 16 and scored["tta"] is False
    assert scored["resize_back"] == "scores" and scored["amp"] == "off" and scored["selected_on_test"] is False
    assert scored["setting"]["sup_type"] == "scribble" and scored["setting"]["max_iterations"] == 4
    assert scored["setting"]["world_size"] == 1  # a data-parallel fold trained with a larger batch
    assert not {"fold", "seed", "root_path", "out_dir", "device"} & set(scored["setting"])
    # A bf16 run is scored in bf16 only where bf16 is native, and the result says which.
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    ckpt["config"]["amp"] = "bf16"
    torch.save(ckpt, tmp_path / "bf16.pth")
    for native, amp in ((False, "off"), (True, "bf16")):
        monkeypatch.setattr(inference, "native_bf16", lambda device: native)
        assert test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "bf16.pth"),
                                   "--out_json", str(tmp_path / f"{amp}.json")])["scored"]["amp"] == amp
    # A checkpoint path alone names the run; --tta and --resize_back are recorded.
    flipped = test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "run" / "last.pth"),
                                  "--tta", "--resize_back", "labels", "--out_json", str(tmp_path / "t.json")])["scored"]
    assert flipped["tta"] is True and flipped["resize_back"] == "labels" and flipped["checkpoint"] == scored["checkpoint"]
    # The scores of one checkpoint are not replaced by another's (train_wss.sh scored a run of
    # another --sup_type into the first run's results file).
    kept = (tmp_path / "t.json").read_text()
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "bf16.pth"),
                            "--out_json", str(tmp_path / "t.json")])
    assert e.value.code == 2 and f"t.json holds the scores of {tmp_path / 'run' / 'last.pth'}" in capsys.readouterr().err
    assert (tmp_path / "t.json").read_text() == kept
    # Another fold's test cases, or those of a data root whose folds shifted, include volumes
    # this checkpoint trained on.
    last = str(tmp_path / "run" / "last.pth")
    for extra in (["--fold", "fold2"], ["--root_path", str(without_first_patient(phantom_root, tmp_path))]):
        with pytest.raises(SystemExit) as e:
            test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", last, "--out_json",
                                str(tmp_path / "x.json"), *extra])
        assert e.value.code == 2 and "last.pth trained on" in capsys.readouterr().err
    # Test cases the run chose its model on (a splits.json edited to move validation cases into
    # test); a run that selected on the test fold (--select_on_test) says so in its split.
    ckpt = torch.load(last, weights_only=False)
    ckpt["split"]["val"] = ckpt["split"]["test"][:1]
    torch.save(ckpt, tmp_path / "peeked.pth")
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "peeked.pth"), "--out_json",
                            str(tmp_path / "x.json")])
    assert e.value.code == 2 and "peeked.pth chose its model on 1 of the" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    ckpt["split"]["val"] = ckpt["split"]["test"]
    torch.save(ckpt, tmp_path / "on_test.pth")
    test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "on_test.pth"), "--out_json",
                        str(tmp_path / "x.json")])


def without_first_patient(root, tmp_path):
    """A copy of the phantom root whose patient001 became patient099: its folds shift by one
    patient, so fold 1 now tests patient002, a training patient of fold 1 before."""
    import os
    import shutil

    copy = tmp_path / "shifted"
    shutil.copytree(root, copy)
    for d in (io.VOLUME_DIR, io.SLICE_DIR):
        for f in os.listdir(copy / d):
            if f.startswith("patient001_"):
                os.rename(copy / d / f, copy / d / f.replace("patient001_", "patient099_"))
    return copy


def test_scoring_a_checkpoint_on_its_training_cases_is_refused(phantom_root, tmp_path, capsys):
    import engine
    from conftest import tiny_cfg
    from methods import get_method

    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run", "--fold", "fold2"), get_method("pce"))
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--fold", "fold1", "--checkpoint",
                            str(tmp_path / "run" / "last.pth"), "--out_json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "last.pth trained on 2 of the 2 cases to score (e.g. patient001_frame01)" in err
    # A checkpoint older than the records of its split and training images was scored (found by a probe).
    old = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    del old["split"], old["train_images"]
    torch.save(old, tmp_path / "old.pth")
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--fold", "fold1", "--checkpoint",
                            str(tmp_path / "old.pth"), "--out_json", str(tmp_path / "r.json")])
    assert e.value.code == 2 and "old.pth trained on 2 of the 2 cases to score" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_training_scan_scored_under_a_test_name_is_refused(phantom_root, tmp_path, capsys):
    # Cases were matched by name: a root whose test names hold training scans (files swapped by
    # name, or one scan under two names) was scored on them at exit 0.
    import shutil

    import engine
    from conftest import tiny_cfg
    from dataloaders.acdc import make_split
    from methods import get_method

    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run"), get_method("pce"))
    split = make_split(phantom_root, "fold1")
    swapped = tmp_path / "swapped"
    shutil.copytree(phantom_root, swapped)
    shutil.copy(io.volume_path(phantom_root, split.train[0]), io.volume_path(str(swapped), split.test[1]))
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", str(swapped), "--fold", "fold1", "--checkpoint",
                            str(tmp_path / "run" / "last.pth"), "--out_json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"last.pth trained on the image of slice 0 of {swapped}" in err
    assert f"{split.test[1]}.h5 (a training scan under another case name" in err
    assert not (tmp_path / "r.json").exists()
    assert test_2D_fully.main(["--root_path", phantom_root, "--fold", "fold1", "--checkpoint",
                               str(tmp_path / "run" / "last.pth"), "--out_json", str(tmp_path / "r.json")])


def test_on_val_scores_the_runs_own_validation_split(phantom_root, tmp_path, capsys):
    import engine
    import torch
    from conftest import tiny_cfg
    from methods import get_method

    for name, fraction in (("half", "0.5"), ("none", "0")):
        engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / name, "--val_fraction", fraction),
                     get_method("pce"))
    val = torch.load(tmp_path / "half" / "last.pth", weights_only=False)["split"]["val"]
    assert len(val) > len(make_split(phantom_root, "fold1").val)  # more than the default fraction holds
    summary = test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "half" / "last.pth"),
                                  "--on", "val", "--out_json", str(tmp_path / "v.json")])
    assert summary["n_volumes"] == len(val)
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "none" / "last.pth"),
                            "--on", "val", "--out_json", str(tmp_path / "n.json")])
    assert e.value.code == 2 and "has no val cases" in capsys.readouterr().err


def test_outputs_never_replace_other_files(phantom_root, tmp_path, capsys):
    for c in fold1_test_cases(phantom_root):
        io.write_h5(str(tmp_path / f"{c}.h5"), {"label": io.read_case(phantom_root, c).label})
    for args, message in [(["--out_json", str(tmp_path / "r.csv")], "--out_json"),
                          (["--out_json", str(tmp_path / "r.json"), "--save_nii", str(tmp_path)], "--save_nii")]:
        with pytest.raises(SystemExit) as e:
            test_2D_fully.main(["--root_path", phantom_root, "--pred_dir", str(tmp_path), *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{c}.h5" for c in fold1_test_cases(phantom_root))


def test_settings_of_a_trained_run_s_predictions_are_refused_with_pred_dir(phantom_root, tmp_path, capsys):
    # --postprocess lcc with --pred_dir was ignored: the folder's predictions were scored as they
    # were, and the result did not say so (exit 0).
    for args in (["--postprocess", "lcc"], ["--tta"], ["--resize_back", "labels"]):
        with pytest.raises(SystemExit) as e:
            test_2D_fully.main(["--root_path", phantom_root, "--pred_dir", str(tmp_path),
                                "--out_json", str(tmp_path / "r.json"), *args])
        assert e.value.code == 2 and f"{args[0]} applies to a trained run's predictions" in capsys.readouterr().err


def test_a_bare_state_dict_is_a_one_line_error(phantom_root, tmp_path, capsys):
    import torch

    torch.save({"net.weight": torch.zeros(1)}, tmp_path / "bare.pth")
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--model_dir", str(tmp_path),
                            "--checkpoint", str(tmp_path / "bare.pth"), "--out_json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "bare.pth: not a checkpoint of this project" in err and "Traceback" not in err


def test_nifti_predictions_may_store_whole_numbers_as_float(phantom_root, pred, tmp_path):
    for c in fold1_test_cases(phantom_root):
        sitk.WriteImage(sitk.GetImageFromArray(io.read_case(phantom_root, c).label.astype(np.float32)),
                        str(pred / f"{c}.nii.gz"))
    assert score(phantom_root, pred, tmp_path / "r.json")["dice"]["mean"] == 1.0


def test_a_checkpoint_with_other_classes_or_existing_outputs_is_refused(phantom_root, tmp_path, capsys):
    import engine
    import torch
    from conftest import tiny_cfg
    from methods import get_method

    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run"), get_method("pce"))
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    ckpt["config"]["num_classes"] = 2
    torch.save(ckpt, tmp_path / "binary.pth")
    base = ["--root_path", phantom_root, "--out_json", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main([*base, "--checkpoint", str(tmp_path / "binary.pth")])
    assert e.value.code == 2 and "binary.pth predicts 2 classes, " in capsys.readouterr().err
    # The same three classes numbered in another order: its RV would be scored as the root's LV.
    import shutil

    swapped = tmp_path / "swapped"
    shutil.copytree(phantom_root, swapped)
    io.write_dataset_json(str(swapped), ("LV", "MYO", "RV"))
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", str(swapped), "--out_json", str(tmp_path / "r.json"),
                            "--checkpoint", str(tmp_path / "run" / "last.pth")])
    assert e.value.code == 2 and f"last.pth predicts labels 1..3 as RV, MYO, LV, {swapped} numbers its classes " \
        "LV, MYO, RV" in capsys.readouterr().err
    with pytest.raises(ValueError, match="predicts labels 1..3 as RV, MYO, LV"):  # nor may a resume switch them
        engine.train(tiny_cfg(get_method("pce"), str(swapped), tmp_path / "run", "--resume"), get_method("pce"))
    first = fold1_test_cases(phantom_root)[0]
    (tmp_path / "nii").mkdir()
    (tmp_path / "nii" / f"{first}.nii.gz").write_bytes(b"a scan kept here")
    last = ["--checkpoint", str(tmp_path / "run" / "last.pth"), "--save_nii", str(tmp_path / "nii")]
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main([*base, *last])
    assert e.value.code == 2 and f"{first}.nii.gz exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "nii" / f"{first}.nii.gz").read_bytes() == b"a scan kept here"
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(SystemExit):  # not a segmentation this project wrote: kept with --overwrite too
        test_2D_fully.main([*base, *last, "--overwrite"])
    assert (tmp_path / "nii" / f"{first}.nii.gz").read_bytes() == b"a scan kept here"
    (tmp_path / "nii" / f"{first}.nii.gz").unlink()
    test_2D_fully.main([*base, *last])
    test_2D_fully.main([*base, *last, "--overwrite"])  # its own segmentations are replaced
    assert sitk.ReadImage(str(tmp_path / "nii" / f"{first}.nii.gz")).GetSize()[::-1] == \
        io.read_case(phantom_root, first).label.shape
    written = str(tmp_path / "nii" / f"{first}.nii.gz")
    voxels = sitk.GetArrayFromImage(sitk.ReadImage(written))
    assert io.nifti_description(written) == \
        f"{io.SEGMENTATION_NOTE} {io.labels_digest(voxels)} {io.classes_digest(['RV', 'MYO', 'LV'])}"
    # a prediction corrected by hand since (ITK keeps the descrip): its edits are kept
    corrected = sitk.ReadImage(written)
    corrected[0, 0, 0] = 3
    sitk.WriteImage(corrected, written)
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main([*base, *last, "--overwrite"])
    assert e.value.code == 2 and "its voxels have changed since" in capsys.readouterr().err
    assert sitk.ReadImage(written)[0, 0, 0] == 3
    # --save_nii aimed at the scans' folder: --overwrite replaced a user's scan with a prediction;
    # aimed at the masks' folder (labels/, same names), it replaced the ground truth
    scan = (io.read_case(phantom_root, first).image * 700).astype(np.int16)
    for theirs in (scan, io.read_case(phantom_root, first).label):
        io.write_nifti(str(tmp_path / "nii" / f"{first}.nii.gz"), theirs)
        with pytest.raises(SystemExit) as e:
            test_2D_fully.main([*base, *last, "--overwrite"])
        assert e.value.code == 2 and f"{first}.nii.gz exists and is not a segmentation this project wrote" in \
            capsys.readouterr().err
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nii" / f"{first}.nii.gz"))), theirs)


def test_volumes_with_and_without_a_spacing_are_refused(phantom_root, pred, tmp_path, capsys):
    # Their HD95 and ASD would be in voxels and mm, and the mean of the two meaningless.
    import shutil

    import h5py

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    cases = fold1_test_cases(str(root))
    for c in cases:
        io.write_h5(str(pred / f"{c}.h5"), {"label": io.read_case(str(root), c).label})
    with h5py.File(io.volume_path(str(root), cases[0]), "a") as f:
        del f.attrs["spacing"]
    with pytest.raises(SystemExit) as e:
        score(str(root), pred, tmp_path / "r.json")
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{cases[0]}.h5 has no spacing attribute but " in err
    assert f"{cases[1]}.h5 has one: HD95 and ASD would average voxels with mm" in err
    assert not (tmp_path / "r.json").exists()
    for c in cases[1:]:
        with h5py.File(io.volume_path(str(root), c), "a") as f:
            del f.attrs["spacing"]
    assert score(str(root), pred, tmp_path / "r.json")["units"] == "voxel"


def test_two_predictions_of_a_case_are_refused_and_capital_extensions_read(phantom_root, pred, tmp_path, capsys):
    import os

    cases = fold1_test_cases(phantom_root)
    for c in cases:
        io.write_h5(str(pred / f"{c}.h5"), {"label": io.read_case(phantom_root, c).label})
    # Which one was meant? The NIfTI was scored silently before.
    io.write_nifti(str(pred / f"{cases[0]}.nii.gz"), np.zeros_like(io.read_case(phantom_root, cases[0]).label))
    with pytest.raises(SystemExit) as e:
        score(phantom_root, pred, tmp_path / "r.json")
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{cases[0]}.h5 and {cases[0]}.nii.gz are predictions of the same case" in err
    assert not (tmp_path / "r.json").exists()
    os.remove(pred / f"{cases[0]}.h5")
    io.write_nifti(str(pred / f"{cases[0]}.nii.gz"), io.read_case(phantom_root, cases[0]).label)
    os.rename(pred / f"{cases[0]}.nii.gz", pred / f"{cases[0]}.NII.GZ")
    os.rename(pred / f"{cases[1]}.h5", pred / f"{cases[1]}.H5")
    assert score(phantom_root, pred, tmp_path / "r.json")["dice"]["mean"] == 1.0


def test_out_json_never_replaces_an_input(phantom_root, pred, tmp_path, capsys):
    import shutil

    import engine
    from conftest import tiny_cfg
    from methods import get_method

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    (root / "splits.json").write_text("the data's split")
    for c in fold1_test_cases(str(root)):
        io.write_h5(str(pred / f"{c}.h5"), {"label": io.read_case(str(root), c).label})
    for out, message in [(root / "splits.json", f"splits.json lies inside --root_path {root}"),
                         (pred / "r.json", f"r.json lies inside --pred_dir {pred}")]:
        with pytest.raises(SystemExit) as e:
            score(str(root), pred, out)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert (root / "splits.json").read_text() == "the data's split" and not (root / "splits.csv").exists()
    assert not (pred / "r.json").exists()
    # A run's own files, or one beside the CSV name; an earlier result may be replaced.
    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run"), get_method("pce"))
    (tmp_path / "run" / "notes.csv").write_text("my notes")
    before = {f: (tmp_path / "run" / f).read_bytes() for f in ("config.json", "best.json", "notes.csv")}
    for name in ("config.json", "best.json", "notes.json"):
        with pytest.raises(SystemExit) as e:
            test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "run" / "last.pth"),
                                "--out_json", str(tmp_path / "run" / name)])
        expected = name.replace("notes.json", "notes.csv")
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"{expected} exists and is not a result of test_2D_fully.py" in err
    assert before == {f: (tmp_path / "run" / f).read_bytes() for f in before}
    # Outside any run folder too (scoring a --pred_dir): a table of the user's beside the JSON's name.
    (tmp_path / "mine.csv").write_text("my table")
    with pytest.raises(SystemExit) as e:
        score(phantom_root, pred, tmp_path / "mine.json")
    assert e.value.code == 2 and "mine.csv exists and is not a result of" in capsys.readouterr().err
    assert (tmp_path / "mine.csv").read_text() == "my table" and not (tmp_path / "mine.json").exists()
    for _ in range(2):
        test_2D_fully.main(["--root_path", phantom_root, "--model_dir", str(tmp_path / "run"),
                            "--out_json", str(tmp_path / "run" / "test.json")])


def test_the_data_folder_given_for_the_predictions_is_refused(phantom_root, tmp_path, capsys):
    # Its CASE.h5 volumes were read as predictions and scored against their own labels: Dice 1.
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--pred_dir", f"{phantom_root}/{io.VOLUME_DIR}",
                            "--out_json", str(tmp_path / "r.json")])
    assert e.value.code == 2 and ".h5 is the case's own volume (with its labels), not a prediction" in \
        capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    import shutil  # a copy of that folder scored Dice 1 too

    shutil.copytree(f"{phantom_root}/{io.VOLUME_DIR}", tmp_path / "copy")
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--pred_dir", str(tmp_path / "copy"),
                            "--out_json", str(tmp_path / "r.json")])
    assert e.value.code == 2 and "holds 'image' and 'scribble' beside its labels: a data volume" in \
        capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_nifti_prediction_off_the_grid_save_nii_writes_is_refused(phantom_root, pred, tmp_path, capsys):
    # Phantom cases have a spacing but no origin or direction; a prediction reoriented by its
    # tool (W reversed, the direction says so) was read in array order and scored Dice 0.22.
    cases = fold1_test_cases(phantom_root)
    for c in cases:
        case = io.read_case(phantom_root, c)
        img = sitk.GetImageFromArray(case.label[:, :, ::-1].copy())
        img.SetSpacing(tuple(reversed(case.spacing)))
        img.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        img.SetOrigin(((case.label.shape[2] - 1) * case.spacing[2], 0.0, 0.0))
        sitk.WriteImage(img, str(pred / f"{c}.nii.gz"))
    with pytest.raises(SystemExit) as e:
        score(phantom_root, pred, tmp_path / "r.json")
    assert e.value.code == 2 and "direction" in capsys.readouterr().err
    for c in cases:  # what --save_nii writes (the case's spacing, at the origin, unrotated) is read
        case = io.read_case(phantom_root, c)
        io.write_nifti(str(pred / f"{c}.nii.gz"), case.label, case.spacing, None, None)
    assert score(phantom_root, pred, tmp_path / "r.json")["dice"]["mean"] == 1.0
    scored = json.loads((tmp_path / "r.json").read_text())["scored"]
    assert scored["cases"] == sorted(cases)
    from dataloaders.acdc import volumes_digest  # what summarize_results compares across results

    assert scored["volumes_sha256"] == volumes_digest([io.read_case(phantom_root, c) for c in sorted(cases)])
    assert scored["root_sha256"] == io.root_digest(phantom_root)


def test_on_val_scores_the_cases_the_run_chose_its_model_on(phantom_root, tmp_path, capsys):
    # With an edited splits.json, --on val scored the validation cases of today's file, not the
    # run's, exit 0.
    import engine
    from conftest import tiny_cfg
    from methods import get_method

    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run"), get_method("pce"))
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    chose_on = ckpt["split"]["val"]
    ckpt["split"]["val"] = ckpt["split"]["test"][:1]
    torch.save(ckpt, tmp_path / "moved.pth")
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "moved.pth"), "--on", "val",
                            "--out_json", str(tmp_path / "v.json")])
    assert e.value.code == 2 and "moved.pth chose its model on other validation cases" in capsys.readouterr().err
    summary = test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "run" / "last.pth"),
                                  "--on", "val", "--out_json", str(tmp_path / "v.json")])
    assert summary["scored"]["cases"] == sorted(chose_on)
    last = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    assert summary["scored"]["best_model"] == (last["iteration"] == last["best"]["iteration"])
    best = test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "run" / "best.pth"),
                               "--out_json", str(tmp_path / "b.json")])
    assert best["scored"]["best_model"] is True


def test_results_record_what_the_run_trained_on(phantom_root, tmp_path):
    # A mutation audit found this unpinned: scored.trained_on recorded the scoring flags (--root_path,
    # --fold), not the run's.
    import engine
    import test_2D_fully
    from conftest import tiny_cfg
    from methods import get_method

    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run"), get_method("pce"))
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    ckpt["config"]["root_path"] = "/data/elsewhere"  # trained on a copy of this root elsewhere
    torch.save(ckpt, tmp_path / "moved.pth")
    summary = test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(tmp_path / "moved.pth"),
                                  "--out_json", str(tmp_path / "r.json")])
    assert summary["scored"]["trained_on"] == {"root_path": "/data/elsewhere", "fold": "fold1"}
    assert json.loads((tmp_path / "r.json").read_text())["scored"]["trained_on"]["root_path"] == "/data/elsewhere"


def test_a_run_stopped_before_its_last_iteration_is_scored_only_when_asked(phantom_root, tmp_path, capsys,
                                                                            monkeypatch):
    # Found by a probe: a run stopped by SIGTERM (waiting for --resume) was scored without a word, and
    # summarize_results.py averaged it with finished folds, even after the run was resumed.
    import engine
    from conftest import Interrupt, stop_after_first_save, tiny_cfg
    from methods import get_method
    from summarize_results import read_result

    stop_after_first_save(monkeypatch)
    with pytest.raises(Interrupt):
        engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run"), get_method("pce"))
    monkeypatch.undo()
    score = ["--root_path", phantom_root, "--checkpoint", str(tmp_path / "run" / "last.pth"),
             "--out_json", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) as e:
        test_2D_fully.main(score)
    assert e.value.code == 2 and "last.pth: its run stopped at iteration 2 of 4 (interrupted" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    test_2D_fully.main([*score, "--unfinished"])
    (tmp_path / "run").rename(tmp_path / "moved")  # the result's record holds wherever the run went
    with pytest.raises(ValueError, match=r"r.json: scored a run that stopped at iteration 2 of 4 \(test_2D_fully.py "):
        read_result(str(tmp_path / "r.json"))
    (tmp_path / "moved").rename(tmp_path / "run")
    result = json.loads((tmp_path / "r.json").read_text())
    del result["scored"]["unfinished"]  # a result older than the record: the run folder tells
    (tmp_path / "r.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match="r.json: scored .*last.pth of a run that stopped at iteration 2 of 4"):
        read_result(str(tmp_path / "r.json"))
    engine.train(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run", "--resume"), get_method("pce"))
    with pytest.raises(ValueError, match="r.json: .*last.pth is no longer the checkpoint it scored"):
        read_result(str(tmp_path / "r.json"))
    test_2D_fully.main([*score, "--overwrite"])
    assert read_result(str(tmp_path / "r.json"))["scored"]["iteration"] == 4


def test_predictions_written_for_other_classes_are_refused(phantom_root, pred, tmp_path, capsys):
    # Found by a probe: an LV-only model's predictions (label 1 = LV), scored against an RV/MYO/LV
    # root, counted as RV (Dice 0.10, MYO and LV 0) at exit 0.
    for names in (["LV"], ["RV", "MYO", "LV"], None):
        for c in fold1_test_cases(phantom_root):
            case = io.read_case(phantom_root, c)
            io.write_segmentation(str(pred / f"{c}.nii.gz"), case.label, case, names)
        if names == ["LV"]:
            with pytest.raises(SystemExit) as e:
                score(phantom_root, pred, tmp_path / "r.json")
            assert e.value.code == 2 and "nii.gz: predicted by a model of other classes than" in capsys.readouterr().err
        else:  # the root's classes, or none recorded (files of an older version): scored
            assert score(phantom_root, pred, tmp_path / f"{len(names or [])}.json")["dice"]["mean"] == 1.0


def test_h5_predictions_on_another_grid_are_refused(phantom_root, pred, tmp_path, capsys):
    # A probe scored the truth stored in another array order (columns reversed, its direction and
    # origin saying so) at Dice 0.30, exit 0: h5 predictions were read without their geometry.
    import shutil

    import h5py

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    cases = fold1_test_cases(str(root))
    for c in cases:
        case = io.read_case(str(root), c)
        with h5py.File(io.volume_path(str(root), c), "a") as f:
            f.attrs["origin"], f.attrs["direction"] = np.zeros(3), np.eye(3).ravel()
        width = case.spacing[2] * (case.label.shape[2] - 1)
        io.write_h5(str(pred / f"{c}.h5"), {"label": case.label[..., ::-1]}, case.spacing, origin=(width, 0.0, 0.0),
                    direction=np.diag([-1.0, 1.0, 1.0]).ravel())
    with pytest.raises(SystemExit) as e:
        score(str(root), pred, tmp_path / "r.json")
    assert e.value.code == 2 and f"{cases[0]}.h5: direction (-1.0, 0.0, 0.0" in capsys.readouterr().err
    for c in cases:  # on the case's grid it is scored
        case = io.read_case(str(root), c)
        io.write_h5(str(pred / f"{c}.h5"), {"label": case.label}, case.spacing, origin=(0.0, 0.0, 0.0),
                    direction=np.eye(3).ravel())
    assert score(str(root), pred, tmp_path / "r.json")["dice"]["mean"] == 1.0
