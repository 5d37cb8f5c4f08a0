import json
import os

import numpy as np
import pytest

import annotation_effort
from conftest import tiny_cfg
from config import save_config
from dataloaders import io
from dataloaders.acdc import contour_pixels, fold_split, labeled_patients, make_split
from methods import get_method


def fake_run(tmp_path, root, name, *extra):
    """A run folder with a config.json and an untrained best.pth that records the fold's split as
    the root gives it now, and a result JSON that scored that checkpoint."""
    import torch

    import checkpoint
    import engine

    cfg = tiny_cfg(get_method("pce"), root, tmp_path / name, *extra)
    cfg.labeled_patient_ids = []
    os.makedirs(cfg.out_dir)
    save_config(cfg, os.path.join(cfg.out_dir, "config.json"))
    method = get_method("pce")(cfg)
    optimizers = method.configure_optimizers()
    checkpoint.save_checkpoint(os.path.join(cfg.out_dir, "best.pth"), cfg, method, optimizers, {},
                               engine.TrainState(cfg, torch.device("cpu"), optimizers), {},
                               make_split(root, cfg.fold, cfg.val_fraction, cfg.select_on_test))
    setting = checkpoint.training_setting({"config": vars(cfg), "method": "pce"})
    result = {"dice": {"RV": 0.5, "MYO": 0.4, "LV": 0.6, "mean": 0.5}, "hd95": {"mean": 7.0}, "asd": {"mean": 2.0},
              "units": "mm", "scored": {"checkpoint": os.path.join(cfg.out_dir, "best.pth"), "method": "pce",
                                        "setting": setting}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(result))
    return str(path)


def slice_arrays(root, cases, key):
    """(case, array) of every slice of ``cases``."""
    return [(c, io.read_h5(os.path.join(root, io.SLICE_DIR, f"{c}_slice_{z}.h5"))[key])
            for c in cases for z in range(io.num_slices(root, c))]


def test_contour_pixels_by_hand():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    assert contour_pixels(mask) == 12  # the ring of a 4x4 square; its 2x2 inside is not drawn
    mask[3:5, 3:5] = 3
    assert contour_pixels(mask) == 16  # a 2x2 LV inside: all its pixels and the whole ring
    assert contour_pixels(np.full((5, 5), 2, np.uint8)) == 0  # the image edge is no border
    assert contour_pixels(np.zeros((5, 5), np.uint8)) == 0


def test_annotation_is_counted_as_the_engine_trains(phantom_root, tmp_path, capsys):
    train = fold_split(io.list_cases(phantom_root), "fold1").train
    dense = labeled_patients(train, 1, 2022)
    scribbles = slice_arrays(phantom_root, train, "scribble")
    labels = slice_arrays(phantom_root, train, "label")
    total = sum(s.size for _, s in scribbles)
    stroked = [int(np.count_nonzero(s != io.UNLABELED)) for _, s in scribbles]
    outlines = [contour_pixels(m) for _, m in labels]
    is_dense = [io.patient_of(c) in dense for c, _ in scribbles]
    dense_pixels = sum(s.size for (_, s), d in zip(scribbles, is_dense) if d)
    expected = [
        {"labelled": sum(stroked), "drawn": sum(stroked), "pixels": total},
        {"labelled": sum(s.size if d else n for (_, s), n, d in zip(scribbles, stroked, is_dense)),
         "drawn": sum(o if d else n for n, o, d in zip(stroked, outlines, is_dense)), "pixels": total},
        {"labelled": dense_pixels, "drawn": sum(o for o, d in zip(outlines, is_dense) if d), "pixels": dense_pixels},
    ]
    results = [fake_run(tmp_path, phantom_root, "scribble"),
               fake_run(tmp_path, phantom_root, "plus1", "--labeled_patients", "1"),
               fake_run(tmp_path, phantom_root, "fully1", "--sup_type", "label", "--labeled_patients", "1")]
    rows = annotation_effort.effort_rows(results, ["s", "s+1", "f1"])
    assert [{k: r[k] for k in ("labelled", "drawn", "pixels")} for r in rows] == expected
    assert 0 < expected[0]["labelled"] < expected[1]["labelled"] < total and expected[2]["drawn"] > 0
    assert [r["supervision"] for r in rows] == ["scribble", "scribble + 1 dense", "dense, 1 patients only"]
    out = tmp_path / "effort.png"
    assert annotation_effort.main([*results, "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    # Without --labels each row is named by its result file.
    assert [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()[2:5]] == ["| scribble", "| plus1", "| fully1"]


def test_bad_inputs_are_one_line_errors(phantom_root, tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps({"dice": {}}))
    with pytest.raises(SystemExit) as e:
        annotation_effort.main([str(tmp_path / "x.json"), "--out", str(tmp_path / "e.png")])
    assert e.value.code == 2 and "x.json: not a test_2D_fully.py result" in capsys.readouterr().err
    metrics = {m: {"mean": 1.0} for m in ("dice", "hd95", "asd")}
    (tmp_path / "p.json").write_text(json.dumps({**metrics, "scored": {"pred_dir": "preds"}}))
    with pytest.raises(SystemExit):
        annotation_effort.main([str(tmp_path / "p.json"), "--out", str(tmp_path / "e.png")])
    assert "p.json: a test_2D_fully.py result of predictions, not of a checkpoint" in capsys.readouterr().err
    orphan = {**metrics, "scored": {"checkpoint": str(tmp_path / "gone" / "best.pth")}}
    (tmp_path / "o.json").write_text(json.dumps(orphan))
    with pytest.raises(SystemExit):
        annotation_effort.main([str(tmp_path / "o.json"), "--out", str(tmp_path / "e.png")])
    assert "gone/config.json: no run config" in capsys.readouterr().err
    result = fake_run(tmp_path, phantom_root, "moved")
    with pytest.raises(SystemExit):
        annotation_effort.main([result, "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e.png")])
    assert "nowhere: data root of the run not found" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    for name, says in [("list.json", "list.json: expected a JSON object, got list"),
                       ("broken.json", "broken.json: not readable JSON")]:
        with pytest.raises(SystemExit):
            annotation_effort.main([str(tmp_path / name), "--out", str(tmp_path / "e.png")])
        assert says in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


def test_a_replaced_run_a_validation_result_or_a_result_twice_is_refused(phantom_root, tmp_path, capsys):
    import engine
    import test_2D_fully

    run = tmp_path / "run"
    engine.train(tiny_cfg(get_method("pce"), phantom_root, run), get_method("pce"))
    scored = {}
    for part in ("test", "val"):
        scored[part] = str(tmp_path / f"{part}.json")
        test_2D_fully.main(["--root_path", phantom_root, "--checkpoint", str(run / "last.pth"), "--on", part,
                            "--out_json", scored[part]])
    assert len(annotation_effort.effort_rows([scored["test"]], ["t"])) == 1
    with open(scored["test"]) as f:
        fold2 = json.load(f)
    fold2["scored"]["fold"] = "fold2"  # another fold's test volumes, once drawn on the same curve
    (tmp_path / "fold2.json").write_text(json.dumps(fold2))
    lcc = json.loads(open(scored["test"]).read())
    lcc["scored"]["postprocess"] = "lcc"  # predicted otherwise: once drawn on the same curve, exit 0
    (tmp_path / "lcc.json").write_text(json.dumps(lcc))
    for results, message in [([scored["val"]], "val.json: scored the validation part"),
                             ([scored["test"], scored["test"]], "test.json: given twice"),
                             ([scored["test"], str(tmp_path / "fold2.json")], "fold2.json: its scored fold fold2 differ"),
                             ([scored["test"], str(tmp_path / "lcc.json")], "lcc.json: its scoring (post-processing")]:
        with pytest.raises(SystemExit) as e:
            annotation_effort.main([*results, "--out", str(tmp_path / "e.png")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    # The run folder now holds another run: its counts would no longer belong to the Dice scored.
    engine.train(tiny_cfg(get_method("pce"), phantom_root, run, "--sup_type", "points", "--overwrite"),
                 get_method("pce"))
    with pytest.raises(SystemExit) as e:
        annotation_effort.main([scored["test"], "--out", str(tmp_path / "e.png")])
    assert e.value.code == 2 and "last.pth is no longer the checkpoint it scored" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


def test_one_methods_points_differ_only_in_their_supervision(phantom_root, tmp_path, capsys):
    plain, points = fake_run(tmp_path, phantom_root, "a"), fake_run(tmp_path, phantom_root, "p", "--sup_type", "points")
    assert len(annotation_effort.effort_rows([plain, points], ["a", "p"])) == 2
    # points sampled by nearest neighbour (runs saved before --point_resize) are told apart
    nearest = fake_run(tmp_path, phantom_root, "n", "--sup_type", "points", "--point_resize", "nearest")
    rows = annotation_effort.effort_rows([points, nearest], ["p", "n"])
    assert [r["supervision"] for r in rows] == ["points", "points (nearest)"]
    averaged = fake_run(tmp_path, phantom_root, "e", "--model_ema", "0.9")  # joined into one curve, exit 0
    with pytest.raises(SystemExit) as e:
        annotation_effort.main([plain, averaged, "--out", str(tmp_path / "e.png")])
    assert e.value.code == 2 and "e.json: trained with --model_ema 0.9, " in capsys.readouterr().err


def test_points_of_the_best_and_of_another_model_are_refused(phantom_root, tmp_path, capsys):
    # summarize_results.py refused a best.pth and a last.pth in one row; the curves joined them, exit 0.
    best, other = fake_run(tmp_path, phantom_root, "b"), fake_run(tmp_path, phantom_root, "l", "--sup_type", "points")
    for path, chosen in ((best, True), (other, False)):
        result = json.loads(open(path).read())
        result["scored"]["best_model"] = chosen
        open(path, "w").write(json.dumps(result))
    with pytest.raises(SystemExit) as e:
        annotation_effort.main([best, other, "--out", str(tmp_path / "e.png")])
    assert e.value.code == 2 and "l.json: scored a model other than its run's best" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


def test_results_of_other_data_roots_are_noted(phantom_root, tmp_path, capsys):
    results = [fake_run(tmp_path, phantom_root, "a"), fake_run(tmp_path, phantom_root, "b")]
    annotation_effort.effort_rows(results, ["a", "b"])
    assert "note:" not in capsys.readouterr().err
    other = json.loads(open(results[1]).read())
    other["scored"]["root_path"] = "/elsewhere/ACDC"
    open(results[1], "w").write(json.dumps(other))
    annotation_effort.effort_rows(results, ["a", "b"])
    assert "note: the results scored data roots /elsewhere/ACDC, None" in capsys.readouterr().err


def test_the_cases_counted_are_those_the_run_trained_on(phantom_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    patients = sorted({io.patient_of(c) for c in io.list_cases(str(root))})
    cases = lambda *ps: [c for c in io.list_cases(str(root)) if io.patient_of(c) in ps]  # noqa: E731
    (root / "splits.json").write_text(json.dumps({"train": cases(*patients[:2]), "val": cases(patients[2]),
                                                  "test": cases(*patients[3:])}))
    result = fake_run(tmp_path, str(root), "split", "--fold", "split")
    stroked = sum(int(np.count_nonzero(s != io.UNLABELED))
                  for _, s in slice_arrays(str(root), cases(*patients[:2]), "scribble"))
    # The splits.json edited after training: the count stays that of the run's own training cases.
    (root / "splits.json").write_text(json.dumps({"train": cases(*patients[:3]), "val": cases(patients[3]),
                                                  "test": cases(patients[4])}))
    assert annotation_effort.effort_rows([result], ["s"])[0]["drawn"] == stroked


def test_counts_on_other_data_with_the_same_cases_are_refused(phantom_root, tmp_path, capsys):
    import shutil

    import h5py

    import engine
    import test_2D_fully

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    engine.train(tiny_cfg(get_method("pce"), str(root), tmp_path / "run"), get_method("pce"))
    scored = str(tmp_path / "r.json")
    test_2D_fully.main(["--root_path", str(root), "--checkpoint", str(tmp_path / "run" / "last.pth"),
                        "--out_json", scored])
    assert len(annotation_effort.effort_rows([scored], ["r"])) == 1
    for folder in (io.SLICE_DIR, io.VOLUME_DIR):  # the data converted again, otherwise
        for name in os.listdir(root / folder):
            with h5py.File(root / folder / name, "r+") as f:
                scribble = f["scribble"][:]  # RV strokes thinned: every other column dropped
                f["scribble"][...] = np.where((scribble == 1) & (np.arange(scribble.shape[-1]) % 2 == 0), 4, scribble)
    with pytest.raises(SystemExit) as e:
        annotation_effort.main([scored, "--out", str(tmp_path / "e.png")])
    assert e.value.code == 2 and "root: the training data differ from those the run trained on" in capsys.readouterr().err


def test_a_config_json_that_disagrees_with_the_checkpoint_scored_is_refused(phantom_root, tmp_path):
    # A mutation audit found this unpinned: check_same_run could return at once and every test passed;
    # the counts come from config.json, so a sup_type edited there would have counted another supervision
    # against the Dice of the checkpoint.
    import checkpoint

    path = fake_run(tmp_path, phantom_root, "run")
    result = json.loads(open(path).read())
    ckpt = checkpoint.read_checkpoint(result["scored"]["checkpoint"])
    result["scored"].update(config_sha256=checkpoint.config_digest(ckpt["config"]), iteration=ckpt["iteration"])
    open(path, "w").write(json.dumps(result))
    annotation_effort.result_and_config(path)  # still the checkpoint scored, config.json agreeing
    config = tmp_path / "run" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sup_type": "points"}))
    with pytest.raises(ValueError, match="config.json: --sup_type 'points' differs from the checkpoint's 'scribble'"):
        annotation_effort.result_and_config(path)
