import copy
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataloaders import io
from dataloaders.acdc import fold_split, make_split
from dataloaders.io import UNLABELED
from inference import Prediction
from refinement import (RefineSettings, anchor_mask, anchor_term, mean_dice, refine_volume, simulate_case,
                        simulate_strokes, summarize_simulation)

CPU = torch.device("cpu")


def test_simulated_strokes_skeleton_of_the_largest_wrong_region():
    truth = np.zeros((3, 20, 20), np.uint8)
    truth[1, 5:8, 2:15] = 3   # a 3 x 13 bar the prediction misses: skeleton = its middle row
    truth[1, 12:15, 12:15] = 1  # a smaller 3 x 3 miss
    truth[2, 0, 0] = 2          # one wrong pixel: below min_size
    pred = np.zeros_like(truth)
    s = simulate_strokes(pred, truth, k=1)
    assert s.dtype == np.uint8
    assert (s[1, 5:8, 2:15] != UNLABELED).sum() == (s[1] != UNLABELED).sum()  # inside the bar only
    assert (s[1, 6, 3:13] == 3).all() and (s[1] == 3).sum() < 20 and (s[[0, 2]] == UNLABELED).all()
    two = simulate_strokes(pred, truth, k=2)
    assert (two[1, 12:15, 12:15] == 1).any() and (two[1] == 1).sum() == (two[1, 12:15, 12:15] == 1).sum()
    # only the worst slice: slice 2 (one wrong pixel) is never stroked
    assert (simulate_strokes(pred, truth, k=2, worst_slices=1)[2] == UNLABELED).all()
    assert (simulate_strokes(truth, truth, k=3) == UNLABELED).all()
    with pytest.raises(ValueError, match="one"):
        simulate_strokes(pred[0], truth[0], 1)
    for k, worst in ((0, None), (-1, None), (1, 0), (1, -2)):  # -2 stroked all slices but two
        with pytest.raises(ValueError, match="k and worst_slices must be >= 1"):
            simulate_strokes(pred, truth, k, worst_slices=worst)


def test_anchor_mask_keeps_a_margin_around_strokes():
    strokes = np.full((2, 9, 9), UNLABELED, np.uint8)
    strokes[0, 4, 4] = 1
    away = anchor_mask(strokes, 2.0)
    assert away[1].all()
    assert not away[0, 4, 6] and away[0, 4, 7] and not away[0, 4, 4]


@pytest.fixture(scope="module")
def bad_model(phantom_root, tmp_path_factory):
    """pCE trained 20 iterations at 64x64: a deliberately bad model (mean Dice ~0.2)."""
    from conftest import tiny_cfg
    from engine import train
    from methods import get_method

    torch.manual_seed(0)
    pce = get_method("pce")
    out = tmp_path_factory.mktemp("bad") / "run"
    cfg = tiny_cfg(pce, phantom_root, out, "--max_iterations", "20", "--val_interval", "20",
                   "--patch_size", "64", "64", "--batch_size", "4")
    train(cfg, pce)
    return str(out / "last.pth")


def test_refinement_raises_dice_of_a_bad_model(phantom_root, bad_model):
    from checkpoint import load_method

    method, cfg = load_method(bad_model, torch.device("cpu"))
    case = io.read_case(phantom_root, fold_split(io.list_cases(phantom_root), "fold1").test[0])
    weights = {k: v.clone() for k, v in method.state_dict().items()}
    r = simulate_case(method.segmenter(), case, 1, Prediction(tuple(cfg.input_size), CPU), worst_slices=3,
                      settings=RefineSettings(iters=20, time_limit=1e6))  # no time cut on a loaded machine
    assert r["dice_after"] > r["dice_before"] + 0.05 and r["steps"] == 20 and r["stroked_voxels"] > 0
    # the simulation refines a copy: the loaded model is untouched
    assert all(torch.equal(weights[k], v) for k, v in method.state_dict().items())
    s = summarize_simulation([r, {**r, "dice_before": 0.5, "dice_after": 0.4, "seconds": 1e6}], worst=1)
    assert s["worst_before"] == r["dice_before"] and s["largest_drop"] == pytest.approx(0.1)
    assert s["seconds_max"] == 1e6
    # Found by a probe: with every volume improved the smallest gain was printed as a negative "drop".
    assert summarize_simulation([{**r, "dice_before": 0.5, "dice_after": 0.6}])["largest_drop"] == 0.0


def test_simulation_scores_the_classes_of_the_data_root(lv_root, phantom_root, tmp_path, capsys):
    # Classes 2 and 3, absent from a one-class root, once counted as Dice 1 in the mean.
    import refine
    from conftest import tiny_cfg
    from checkpoint import load_method
    from engine import train
    from inference import predict_volume
    from methods import get_method

    pce = get_method("pce")
    train(tiny_cfg(pce, lv_root, tmp_path / "run", "--num_classes", "2"), pce)
    ckpt = str(tmp_path / "run" / "last.pth")
    capsys.readouterr()
    refine.main(["--simulate", "1", "--checkpoint", ckpt, "--root", lv_root, "--split", "val", "--iters", "1"])
    name, dice_before = capsys.readouterr().out.splitlines()[1].split()[:2]
    case = io.read_case(lv_root, name)
    method, cfg = load_method(ckpt, torch.device("cpu"))
    before = predict_volume(method.segmenter(), case.image, cfg.input_size, torch.device("cpu"))
    assert float(dice_before) == pytest.approx(mean_dice(before, case.label, 2), abs=1e-4)
    with pytest.raises(SystemExit) as e:
        refine.main(["--simulate", "1", "--checkpoint", ckpt, "--root", phantom_root])
    assert e.value.code == 2 and "last.pth predicts 2 classes, " in capsys.readouterr().err


def stroked_case(phantom_root, bad_model, rows, label):
    """(method, cfg, case, strokes with ``label`` on slice 1, rows ``rows`` of column 30, the
    prediction before refinement) for the first phantom case."""
    from checkpoint import load_method
    from inference import predict_volume

    method, cfg = load_method(bad_model, torch.device("cpu"))
    case = io.read_case(phantom_root, io.list_cases(phantom_root)[0])
    strokes = np.full(case.image.shape, UNLABELED, np.uint8)
    strokes[1, rows, 30] = label
    before = predict_volume(method.segmenter(), case.image, cfg.input_size, torch.device("cpu"))
    return method, cfg, case, strokes, before


def test_a_diverging_fine_tuning_is_an_error_not_a_segmentation(phantom_root, bad_model):
    method, cfg, case, strokes, _ = stroked_case(phantom_root, bad_model, slice(10, 20), 2)
    with pytest.raises(ValueError, match="the fine-tuning diverged at step .*; lower --lr"):
        refine_volume(method.segmenter(), case.image, strokes, Prediction(tuple(cfg.input_size), CPU),
                      settings=RefineSettings(iters=20, lr=1e12))
    # One step to infinite weights: no loss after it to see them (a fresh model: the first diverged in place).
    method, *_ = stroked_case(phantom_root, bad_model, slice(10, 20), 2)
    with pytest.raises(ValueError, match="the fine-tuning diverged: NaN or inf scores after step 1; lower --lr"):
        refine_volume(method.segmenter(), case.image, strokes, Prediction(tuple(cfg.input_size), CPU),
                      settings=RefineSettings(iters=1, lr=1e30))


def test_strokes_win_and_zero_steps_changes_nothing_else(phantom_root, bad_model):
    method, cfg, case, strokes, before = stroked_case(phantom_root, bad_model, slice(10, 20), 2)
    out, info = refine_volume(method.segmenter(), case.image, strokes, Prediction(tuple(cfg.input_size), CPU),
                              settings=RefineSettings(iters=0))
    assert info["steps"] == 0 and (out[1, 10:20, 30] == 2).all()
    keep = strokes == UNLABELED
    assert np.array_equal(out[keep], before[keep])
    # A first prediction the caller has is taken as it is, not predicted again.
    given = np.full(case.image.shape, 3, np.uint8)
    out, _ = refine_volume(method.segmenter(), case.image, strokes, Prediction(tuple(cfg.input_size), CPU),
                           RefineSettings(iters=0, neighbours=1), initial=given)
    assert np.array_equal(out[3:], given[3:]) and (out[1, 10:20, 30] == 2).all()  # slices 0-2 predicted anew
    with pytest.raises(ValueError, match="shape"):
        refine_volume(method.segmenter(), case.image, strokes[:-1], Prediction(tuple(cfg.input_size), CPU))
    assert mean_dice(case.label, case.label) == 1.0


def test_refinement_of_a_target_spacing_model_sees_and_returns_slices_as_prediction_does(phantom_root, bad_model):
    # refine.py refused --target_spacing models (the MSCMR recipe's); its differentiable path must
    # resample slices as inference.predict_volume does, and bring the scores back the same way.
    from refinement import _inputs, _logits

    method, cfg, case, strokes, _ = stroked_case(phantom_root, bad_model, slice(10, 20), 2)
    model = method.segmenter().eval()
    for target in ((2.0, 2.0), (5.0, 5.0)):  # a crop of the resampled slice, and a padding
        how = Prediction(tuple(cfg.input_size), CPU, target_spacing=target)
        with torch.no_grad():
            scores = _logits(model, _inputs(case.image, how, case.spacing), case.image.shape[1:], how, case.spacing)
        agree = scores.argmax(1).numpy() == how.raw(model, case.image, case.spacing)
        assert agree.mean() > 0.995
        out, info = refine_volume(copy.deepcopy(model), case.image, strokes, how, RefineSettings(iters=2),
                                  spacing=case.spacing)
        assert info["steps"] == 2 and (out[1, 10:20, 30] == 2).all()
        assert np.array_equal(out[4:], how.labels(model, case.image, case.spacing)[4:])  # slices 0-3 refined
    with pytest.raises(ValueError, match="give the volume's spacing"):
        refine_volume(model, case.image, strokes, how)


def write_scan(path, array, spacing=(1.5, 1.25, 10.0), origin=(3.0, -2.0, 7.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    sitk.WriteImage(img, str(path))


def test_refine_cli_keeps_geometry_honours_strokes_never_writes_the_checkpoint(phantom_root, bad_model, tmp_path,
                                                                               capsys):
    import refine

    case = io.read_case(phantom_root, io.list_cases(phantom_root)[0])
    write_scan(tmp_path / "scan.nii.gz", (case.image * 700).astype(np.int16))
    strokes = np.full(case.image.shape, UNLABELED, np.uint8)
    strokes[2, 20:40, 32] = 3
    strokes[2, 5, 5:20] = 0
    write_scan(tmp_path / "strokes.nii.gz", strokes)
    ckpt_bytes = open(bad_model, "rb").read()
    out = refine.main(["--checkpoint", bad_model, "--input", str(tmp_path / "scan.nii.gz"), "--strokes",
                       str(tmp_path / "strokes.nii.gz"), "--output", str(tmp_path / "out"), "--iters", "3",
                       "--device", "cpu"])
    printed = capsys.readouterr().out  # the stroke codes as the checkpoint numbers its classes
    assert out == str(tmp_path / "out" / "scan_refined.nii.gz") and "3 steps" in printed
    assert "(strokes read as 0 background, 1 RV, 2 MYO, 3 LV)" in printed
    ref, res = sitk.ReadImage(str(tmp_path / "scan.nii.gz")), sitk.ReadImage(out)
    assert res.GetSpacing() == ref.GetSpacing() and res.GetOrigin() == ref.GetOrigin()
    assert res.GetDirection() == ref.GetDirection() and res.GetSize() == ref.GetSize()
    seg = sitk.GetArrayFromImage(res)
    assert (seg[2, 20:40, 32] == 3).all() and (seg[2, 5, 5:20] == 0).all()
    assert open(bad_model, "rb").read() == ckpt_bytes and sorted(os.listdir(tmp_path / "out")) == [
        "scan_refined.nii.gz"]
    saved = tmp_path / "refined.pth"
    again = ["--checkpoint", bad_model, "--input", str(tmp_path / "scan.nii.gz"), "--strokes",
             str(tmp_path / "strokes.nii.gz"), "--output", str(tmp_path / "out"), "--iters", "1",
             "--device", "cpu", "--save", str(saved)]
    with pytest.raises(SystemExit):  # the first result is not replaced unasked
        refine.main(again)
    assert "scan_refined.nii.gz exists; pass --overwrite" in capsys.readouterr().err and not saved.exists()
    refine.main(again + ["--overwrite"])
    from checkpoint import load_method

    # The refined model keeps the run's split, so scoring it on its training cases is refused too.
    assert torch.load(saved, weights_only=False)["split"] == torch.load(bad_model, weights_only=False)["split"]
    refined, _ = load_method(str(saved), torch.device("cpu"))
    original, _ = load_method(bad_model, torch.device("cpu"))
    assert any(not torch.equal(a, b) for a, b in zip(refined.state_dict().values(),
                                                      original.state_dict().values()))
    # Its weights saw strokes on a scan, which may be a test case: no tool scores it as the run.
    import test_2D_fully

    assert torch.load(saved, weights_only=False)["refined_on"] == [str(tmp_path / "scan.nii.gz")]
    # Refined again: it names the run's checkpoint and both scans (it named the refined one only),
    # and keeps the record of the training images.
    twice = tmp_path / "twice.pth"
    refine.main(["--checkpoint", str(saved), "--input", str(tmp_path / "scan.nii.gz"), "--strokes",
                 str(tmp_path / "strokes.nii.gz"), "--output", str(tmp_path / "out2"), "--iters", "1",
                 "--device", "cpu", "--save", str(twice)])
    record = torch.load(twice, weights_only=False)
    assert record["refined_from"] == os.path.abspath(bad_model) and len(record["refined_on"]) == 2
    assert record["train_images"] == torch.load(bad_model, weights_only=False)["train_images"]
    # A time limit the first prediction used up ran no step: the strokes pasted on the prediction
    # passed for a refinement, and --save wrote the unchanged weights as refined, exit 0.
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        refine.main(["--checkpoint", bad_model, "--input", str(tmp_path / "scan.nii.gz"), "--strokes",
                     str(tmp_path / "strokes.nii.gz"), "--output", str(tmp_path / "out3"), "--time_limit", "1e-9",
                     "--device", "cpu", "--save", str(tmp_path / "none.pth")])
    assert e.value.code == 2 and "no fine-tuning step ran" in capsys.readouterr().err
    assert not (tmp_path / "none.pth").exists() and not (tmp_path / "out3" / "scan_refined.nii.gz").exists()
    for score in (lambda: test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(saved),
                                              "--out_json", str(tmp_path / "r.json")]),
                  lambda: refine.main(["--checkpoint", str(saved), "--simulate", "1", "--root", phantom_root,
                                       "--device", "cpu"])):
        with pytest.raises(SystemExit) as e:
            score()
        assert e.value.code == 2 and "was fine-tuned by refine.py on" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_refine_cli_errors(phantom_root, bad_model, tmp_path, capsys):
    import refine

    write_scan(tmp_path / "scan.nii.gz", np.random.default_rng(0).integers(0, 400, (3, 8, 8)).astype(np.int16))
    write_scan(tmp_path / "strokes.nii.gz", np.zeros((3, 8, 9), np.uint8))
    args = ["--checkpoint", bad_model, "--input", str(tmp_path / "scan.nii.gz"), "--strokes",
            str(tmp_path / "strokes.nii.gz"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    with pytest.raises(SystemExit):
        refine.main(args)
    assert "strokes.nii.gz: shape (3, 8, 9) differs" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(SystemExit):
        refine.main(["--checkpoint", bad_model, "--input", "x.nii.gz"])
    assert "--strokes, --output required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        refine.main(["--checkpoint", str(tmp_path / "none.pth"), "--simulate", "1", "--root", phantom_root])
    assert "none.pth: no such checkpoint" in capsys.readouterr().err
    ckpt = torch.load(bad_model, weights_only=False)
    ckpt["config"]["target_spacing"] = [1.5, 1.5]
    torch.save(ckpt, tmp_path / "spaced.pth")
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)),
                    str(tmp_path / "bare.nii.gz"))  # no geometry: read as 1 mm voxels
    with pytest.raises(SystemExit):
        refine.main(["--checkpoint", str(tmp_path / "spaced.pth"), "--input", str(tmp_path / "bare.nii.gz"), *args[4:]])
    assert "bare.nii.gz: no geometry in its header" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
    # with geometry it is refined (refused before 2026-12-06), and simulated on volumes with a spacing
    case = io.read_case(phantom_root, io.list_cases(phantom_root)[0])
    write_scan(tmp_path / "real.nii.gz", (case.image * 700).astype(np.int16))
    strokes = np.full(case.image.shape, UNLABELED, np.uint8)
    strokes[2, 20:40, 32] = 3
    write_scan(tmp_path / "real_strokes.nii.gz", strokes)
    out = refine.main(["--checkpoint", str(tmp_path / "spaced.pth"), "--input", str(tmp_path / "real.nii.gz"),
                       "--strokes", str(tmp_path / "real_strokes.nii.gz"), "--output", str(tmp_path / "sp"),
                       "--iters", "2", "--device", "cpu"])
    assert (sitk.GetArrayFromImage(sitk.ReadImage(out))[2, 20:40, 32] == 3).all()
    assert "2 steps" in capsys.readouterr().out
    assert refine.main(["--checkpoint", str(tmp_path / "spaced.pth"), "--simulate", "1", "--root", phantom_root,
                        "--iters", "1", "--device", "cpu"])["n"] == len(make_split(phantom_root, "fold1").test)
    capsys.readouterr()
    import shutil

    import h5py

    bare_root = tmp_path / "bare_root"
    shutil.copytree(phantom_root, bare_root)
    for name in os.listdir(bare_root / io.VOLUME_DIR):
        with h5py.File(bare_root / io.VOLUME_DIR / name, "r+") as f:
            del f.attrs["spacing"]
    with pytest.raises(SystemExit):  # it said "--target_spacing needs volumes with a spacing", a training flag
        refine.main(["--checkpoint", str(tmp_path / "spaced.pth"), "--simulate", "1", "--root", str(bare_root),
                     "--device", "cpu"])
    assert "h5 has no spacing attribute, but " in capsys.readouterr().err
    ckpt["config"].update(target_spacing=None, val_fraction=0.0)  # a run that held out no validation
    torch.save(ckpt, tmp_path / "noval.pth")
    with pytest.raises(SystemExit):
        refine.main(["--checkpoint", str(tmp_path / "noval.pth"), "--simulate", "1", "--root", phantom_root,
                     "--split", "val", "--device", "cpu"])
    assert f"--fold fold1 of {phantom_root} has no val cases" in capsys.readouterr().err
    for extra, message in [(["--worst_slices", "0"], "--worst_slices must be >= 1"),
                           (["--worst_slices", "-2"], "--worst_slices must be >= 1"),
                           (["--anchor_weight", "-1"], "--anchor_weight must be >= 0"),
                           (["--anchor_margin", "-5"], "--anchor_margin must be >= 0"),
                           (["--neighbours", "-1"], "--neighbours must be >= 0"),
                           (["--lr", "-1"], "--lr must lie in (0, 1]"), (["--lr", "1e39"], "--lr must lie in (0, 1]")]:
        with pytest.raises(SystemExit):
            refine.main(["--checkpoint", bad_model, "--simulate", "1", "--root", phantom_root, *extra])
        assert message in capsys.readouterr().err


def test_refine_refuses_what_would_give_wrong_output_or_lose_files(phantom_root, bad_model, tmp_path, capsys):
    import refine

    write_scan(tmp_path / "scan.nii.gz", np.random.default_rng(0).integers(0, 400, (3, 16, 16)).astype(np.int16))
    strokes = np.full((3, 16, 16), UNLABELED, np.uint8)
    strokes[1, 4, 2:9] = 3
    write_scan(tmp_path / "moved.nii.gz", strokes, origin=(3.0, -2.0, 17.0))  # one slice further up
    write_scan(tmp_path / "zero_free.nii.gz", np.where(strokes == UNLABELED, 0, strokes).astype(np.uint8))
    write_scan(tmp_path / "strokes.nii.gz", strokes)
    write_scan(tmp_path / "empty.nii.gz", np.full((3, 16, 16), UNLABELED, np.uint8))
    (tmp_path / "keep.pth").write_bytes(b"an earlier model")
    base = ["--checkpoint", bad_model, "--input", str(tmp_path / "scan.nii.gz"), "--output", str(tmp_path / "out"),
            "--device", "cpu", "--iters", "1"]
    for extra, message in [(["--strokes", str(tmp_path / "moved.nii.gz")], "moved.nii.gz: origin (3.0, -2.0, 17.0) differs"),
                           (["--strokes", str(tmp_path / "zero_free.nii.gz")], "zero_free.nii.gz: 100% of the voxels are stroked"),
                           (["--strokes", str(tmp_path / "empty.nii.gz")], "empty.nii.gz: no voxel is stroked"),
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save", str(tmp_path / "keep.pth")],
                            "--save {} exists".format(tmp_path / "keep.pth")),
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save", bad_model], "exists"),
                           # the model once replaced the refined segmentation it had just written
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save",
                             str(tmp_path / "out" / "scan_refined.nii.gz")], "is the refined segmentation's path"),
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save",
                             str(tmp_path / "keep.pth" / "m.pth")], "keep.pth is a file, not a folder"),
                           # a folder, made only after the refinement: the model failed to save then
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save", str(tmp_path / "out")],
                            "names a folder"),
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save", str(tmp_path / "m") + "/"],
                            "names a folder"),
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save", str(tmp_path / "m") + "/."],
                            "names a folder"),
                           # an unset shell variable: no model was saved, exit 0
                           (["--strokes", str(tmp_path / "strokes.nii.gz"), "--save", ""], "names a folder")]:
        with pytest.raises(SystemExit) as e:
            refine.main(base + extra)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert (tmp_path / "keep.pth").read_bytes() == b"an earlier model" and not os.path.exists(tmp_path / "out")
    # Strokes named as the refined segmentation would be, in --output or behind a link to it.
    (tmp_path / "drawn").mkdir()
    named = tmp_path / "drawn" / "scan_refined.nii.gz"
    write_scan(named, strokes)
    os.symlink(tmp_path / "drawn", tmp_path / "link")
    for output in ("drawn", "link"):
        with pytest.raises(SystemExit) as e:
            refine.main([*base[:4], "--output", str(tmp_path / output), "--strokes", str(named), "--overwrite",
                         "--device", "cpu", "--iters", "1"])
        assert e.value.code == 2 and "scan_refined.nii.gz" in capsys.readouterr().err.split("would overwrite")[1]
    assert io.read_scan(str(named)).image.tolist() == strokes.tolist()
    # The simulated user on another fold would refine volumes the model trained on.
    with pytest.raises(SystemExit) as e:
        refine.main(["--checkpoint", bad_model, "--simulate", "1", "--root", phantom_root, "--fold", "fold2",
                     "--device", "cpu"])
    assert e.value.code == 2 and "trained on" in capsys.readouterr().err


def test_strokes_must_be_classes_of_the_model():
    from refinement import check_strokes

    strokes = np.full((2, 8, 8), UNLABELED, np.uint8)
    strokes[0, 1, 1:4] = 1
    assert check_strokes(strokes, (2, 8, 8), "s.nii.gz", num_classes=2).dtype == np.uint8
    strokes[1, 2, 2] = 3
    with pytest.raises(ValueError, match=r"s.nii.gz: stroke values must be classes 0..1 of the model, or 4 "
                                         r"\(no stroke\); found 3"):
        check_strokes(strokes, (2, 8, 8), "s.nii.gz", num_classes=2)


def test_refine_cli_simulate_prints_the_table(phantom_root, bad_model, capsys):
    import refine

    s = refine.main(["--checkpoint", bad_model, "--simulate", "1", "--root", phantom_root, "--fold", "fold1",
                     "--iters", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert s["n"] == 2 and "patient001_frame01" in out and "s per refinement" in out
    val = refine.main(["--checkpoint", bad_model, "--simulate", "1", "--root", phantom_root, "--fold", "fold1",
                       "--split", "val", "--iters", "1", "--device", "cpu"])
    val_cases = make_split(phantom_root, "fold1").val
    assert val["n"] == len(val_cases) and val_cases[0] in capsys.readouterr().out


def test_refine_simulate_uses_the_runs_select_on_test(phantom_root, bad_model, tmp_path, capsys):
    import refine

    # A run with --select_on_test trained on every non-test patient and validated on the test fold,
    # so its "val" volumes are the test ones, not the default held-out (trained-on) patients.
    split = make_split(phantom_root, "fold1")
    ckpt = torch.load(bad_model, weights_only=False)
    ckpt["config"]["select_on_test"] = True
    ckpt["split"] = {"train": split.train + split.val, "val": split.test, "test": split.test}
    torch.save(ckpt, tmp_path / "on_test.pth")
    s = refine.main(["--checkpoint", str(tmp_path / "on_test.pth"), "--simulate", "1", "--root", phantom_root,
                     "--split", "val", "--iters", "1", "--device", "cpu"])
    assert s["n"] == len(split.test) and split.test[0] in capsys.readouterr().out


def test_scope_slices_changes_the_stroked_slices_and_their_neighbours_only(phantom_root, bad_model):
    method, cfg, case, strokes, before = stroked_case(phantom_root, bad_model, slice(10, 40), 1)
    how = Prediction(tuple(cfg.input_size), CPU)
    out, info = refine_volume(copy.deepcopy(method.segmenter()), case.image, strokes, how,
                              settings=RefineSettings(iters=5, lr=1e-2, neighbours=0))
    assert info["steps"] == 5 and not np.array_equal(out[1], before[1])
    assert np.array_equal(np.delete(out, 1, 0), np.delete(before, 1, 0))
    # Two neighbours on each side (the default): slices 0, 2 and 3 follow the fix, 4 and beyond stay.
    out, _ = refine_volume(method.segmenter(), case.image, strokes, how, settings=RefineSettings(iters=5, lr=1e-2))
    assert not np.array_equal(out[[0, 2, 3]], before[[0, 2, 3]]) and np.array_equal(out[4:], before[4:])
    # A --model_ema average is stored without gradients; it is fine-tuned all the same.
    frozen = copy.deepcopy(method.segmenter()).requires_grad_(False)
    out, _ = refine_volume(frozen, case.image, strokes, how, settings=RefineSettings(iters=5, lr=1e-2, neighbours=0))
    assert not np.array_equal(out[1], before[1])
    with pytest.raises(ValueError, match="scope"):
        RefineSettings(scope="everything")
    with pytest.raises(ValueError, match="neighbours"):
        RefineSettings(neighbours=-1)


def test_post_processing_as_predict_py_and_unstroked_slices_as_it_gave_them(phantom_root, bad_model):
    # refine.py skipped the run's --postprocess: slices never stroked gained the stray blobs
    # that predict.py's lcc had removed.
    from postprocess import postprocess

    method, cfg, case, strokes, before = stroked_case(phantom_root, bad_model, slice(10, 40), 1)
    first = postprocess(before, "lcc")
    # The bad model leaves stray blobs for lcc to remove on slices nobody strokes.
    assert not np.array_equal(np.delete(first, 1, 0), np.delete(before, 1, 0))
    out, _ = refine_volume(method.segmenter(), case.image, strokes, Prediction(tuple(cfg.input_size), CPU, post="lcc"),
                           settings=RefineSettings(iters=5, lr=1e-2, neighbours=0))
    assert np.array_equal(np.delete(out, 1, 0), np.delete(first, 1, 0))


def test_refine_bound_fixes_only_the_regions_a_stroke_touches():
    from conftest import benchmark

    bound = benchmark("refine_bound")
    truth = np.zeros((2, 6, 6), np.uint8)
    truth[0, 0:2, 0:2] = 1   # missed, stroked with class 1
    truth[0, 4:6, 4:6] = 1   # missed, not stroked
    truth[1, 0:2, 0:2] = 3   # missed, stroked with the wrong class (2): not fixed
    pred = np.zeros_like(truth)
    strokes = np.full(truth.shape, UNLABELED, np.uint8)
    strokes[0, 0, 0] = 1
    strokes[1, 0, 0] = 2
    fixed = bound.fix_stroked_regions(pred, truth, strokes)
    assert (fixed[0, 0:2, 0:2] == 1).all() and (fixed[0, 4:6, 4:6] == 0).all() and (fixed[1] == 0).all()
    assert (fixed != pred).sum() == 4 and (pred == 0).all()
    for flag in ("--simulate", "--worst_slices"):  # -2 gave a bound with all slices but two stroked
        with pytest.raises(SystemExit) as e:
            bound.main(["--checkpoint", "x.pth", "--root", "r", flag, "-2"])
        assert e.value.code == 2


def test_the_simulated_user_refuses_a_class_no_reference_volume_holds(phantom_root, bad_model, tmp_path, capsys):
    # Masks without RV under the default RV/MYO/LV: refine.py --simulate and refine_bound.py
    # scored the absent RV as Dice 1 in every volume (a mean of 0.355 for 0.033), exit 0.
    import refine
    from conftest import benchmark

    root = str(tmp_path / "no_rv")
    for name in io.list_cases(phantom_root):
        case = io.read_case(phantom_root, name)
        case.label[case.label == 1] = 0
        case.scribble[case.scribble == 1] = 0
        io.write_case(root, case)
    for run in (lambda: refine.main(["--checkpoint", bad_model, "--simulate", "1", "--root", root, "--iters", "1"]),
                lambda: benchmark("refine_bound").main(["--checkpoint", bad_model, "--root", root])):
        with pytest.raises(SystemExit) as e:
            run()
        assert e.value.code == 2 and "label 1 occurs in none of the" in capsys.readouterr().err


def test_the_anchor_counts_only_the_pixels_away_from_the_strokes():
    # A mutation audit found that the anchor over every pixel (strokes included) passed every test.
    p0 = torch.full((1, 4, 1, 2), 0.25)
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 2, 0, 1] = 9.0  # the stroked pixel moved to class 2; the other kept p0
    away = torch.tensor([[[True, False]]])
    assert anchor_term(logits, p0, away).item() == pytest.approx(0, abs=1e-7)
    moved = float(torch.sum(p0[0, :, 0, 1] * (p0[0, :, 0, 1].log() - logits[0, :, 0, 1].log_softmax(0))))
    assert anchor_term(logits, p0, ~away).item() == pytest.approx(moved, rel=1e-5) and moved > 1
    assert anchor_term(logits, p0, torch.zeros_like(away)).item() == 0

