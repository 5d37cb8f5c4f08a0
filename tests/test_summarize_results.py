import json

import pytest

import summarize_results


def result(dice, hd95, fold="fold2"):
    per = lambda v: {"RV": v, "MYO": v, "LV": v, "mean": v}  # noqa: E731
    return {"dice": per(dice), "hd95": per(hd95), "asd": per(1.0), "n_volumes": 40, "units": "mm",
            "scored": {"fold": fold, "on": "test", "root_path": "/data/ACDC", "method": "pce"}}


def test_table_averages_folds_and_reports_missing_ones(tmp_path, capsys):
    (tmp_path / "pce_fold1.json").write_text(json.dumps(result(0.6, 10.0, "fold1")))
    (tmp_path / "pce_fold2.json").write_text(json.dumps(result(0.8, 20.0)))
    status = summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "dmpls",
                                     "--folds", "fold1", "fold2"])
    out, err = capsys.readouterr()
    assert status == 1 and "dmpls: no result for fold1" in err
    row = next(line for line in out.splitlines() if line.startswith("pce"))
    assert row.split()[1:] == ["2", "0.7000", "0.7000", "0.7000", "0.7000", "15.00", "1.00"]
    spread = out.splitlines()[out.splitlines().index(row) + 1]  # sample std: 0.1 * sqrt(2), 5 * sqrt(2)
    assert spread.split() == ["+-", "std", "0.1414", "0.1414", "0.1414", "0.1414", "7.07", "0.00"]
    assert "distances (HD95, ASD) in mm" in out


def test_results_that_cannot_share_a_table_are_named(tmp_path, capsys):
    (tmp_path / "pce_fold1.json").write_text(json.dumps(result(0.6, 10.0, "fold1")))
    voxels = {**result(0.8, 20.0), "units": "voxel"}
    other_fold = {**result(0.8, 20.0), "scored": {"fold": "fold1", "on": "test"}}
    unrecorded = {k: v for k, v in result(0.8, 20.0).items() if k != "scored"}
    nan = result(float("nan"), 20.0)
    other_method = {**result(0.8, 20.0), "scored": {"fold": "fold2", "on": "test", "method": "maskmixadv"}}
    post_processed = {**result(0.8, 20.0), "scored": {"fold": "fold2", "on": "test", "postprocess": "lcc"}}
    for bad, message in [(voxels, "pce_fold2.json: its distance units voxel differ from"),
                         (other_fold, "pce_fold2.json: scored the test part of fold1, not the test part of fold2"),
                         (unrecorded, "pce_fold2.json: does not record the fold it scored"),
                         (nan, "pce_fold2.json: dice of RV, MYO, LV, mean is not a finite number"),
                         (other_method, "pce_fold2.json: scored a maskmixadv checkpoint, not pce"),
                         (post_processed, "pce_fold2.json: its scoring (post-processing, TTA, resize back) "
                                          "('lcc', None, None) differ from"),
                         ([1, 2], "pce_fold2.json: expected a JSON object, got list"),
                         ({"dice": 1}, "pce_fold2.json: not a test_2D_fully.py result"),
                         ("{", "pce_fold2.json: not readable JSON")]:
        (tmp_path / "pce_fold2.json").write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(SystemExit) as e:
            summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "Traceback" not in err


def test_a_fold_or_method_given_twice_is_refused_and_other_roots_and_precisions_noted(tmp_path, capsys):
    (tmp_path / "pce_fold1.json").write_text(json.dumps(result(0.6, 10.0, "fold1")))
    other_root = {**result(0.8, 20.0), "scored": {"fold": "fold2", "on": "test", "root_path": "/data/other"}}
    (tmp_path / "pce_fold2.json").write_text(json.dumps(other_root))
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"]) == 0
    assert "note: the results scored data roots /data/ACDC, /data/other" in capsys.readouterr().err
    for fold, amp in (("fold1", "bf16"), ("fold2", "off")):
        scored = {**result(0.7, 10.0, fold), "scored": {**result(0, 0, fold)["scored"], "amp": amp}}
        (tmp_path / f"pce_{fold}.json").write_text(json.dumps(scored))
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"]) == 0
    assert "note: pce's folds were predicted in different precisions (bf16, off)" in capsys.readouterr().err
    peeked = {**result(0.9, 5.0, "fold2"),
              "scored": {**result(0, 0, "fold2")["scored"], "selected_on_test": True}}
    (tmp_path / "pce_fold2.json").write_text(json.dumps(peeked))
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"]) == 0
    assert "note: pce's fold2 chose its model on the test fold (--select_on_test)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold1"])
    assert e.value.code == 2 and "--folds: fold1 given more than once" in capsys.readouterr().err


def test_classes_come_from_the_results(tmp_path, capsys):
    per = {"scar": 0.5, "mean": 0.5}
    (tmp_path / "pce_fold1.json").write_text(json.dumps({"dice": per, "hd95": per, "asd": per, "units": "mm",
                                                         "scored": {"fold": "fold1"}}))
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1"]) == 0
    out = capsys.readouterr().out
    assert "Dice scar" in out.splitlines()[0] and out.splitlines()[1].split()[1:] == ["1", "0.5000", "0.5000", "0.50", "0.50"]


def test_folds_trained_with_other_settings_are_not_averaged(tmp_path, capsys):
    for fold, sup in (("fold1", "scribble"), ("fold2", "label")):
        trained = result(0.7, 10.0, fold)
        trained["scored"]["setting"] = {"sup_type": sup, "max_iterations": 2000}
        (tmp_path / f"pce_{fold}.json").write_text(json.dumps(trained))
    with pytest.raises(SystemExit) as e:
        summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"])
    assert e.value.code == 2 and "pce_fold2.json: trained with --sup_type 'label'" in capsys.readouterr().err
    (tmp_path / "pce_fold2.json").write_text(json.dumps(result(0.7, 10.0)))  # an older result records none
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"]) == 0
    older = result(0.7, 10.0)  # a run older than --model_ema: trained without it (its default, 0)
    older["scored"]["setting"] = {"sup_type": "scribble", "max_iterations": 2000}
    (tmp_path / "pce_fold2.json").write_text(json.dumps(older))
    for ema, averaged in ((0.0, True), (0.999, False)):
        trained = result(0.7, 10.0, "fold1")
        trained["scored"]["setting"] = {"sup_type": "scribble", "max_iterations": 2000, "model_ema": ema}
        (tmp_path / "pce_fold1.json").write_text(json.dumps(trained))
        if averaged:
            assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1",
                                           "fold2"]) == 0
        else:  # one row averaged a weight-averaged fold with a plain one, exit 0
            with pytest.raises(SystemExit) as e:
                summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"])
            assert e.value.code == 2 and "trained with --model_ema 0.0, " in capsys.readouterr().err


def test_results_of_other_volumes_of_one_fold_are_refused(tmp_path, capsys):
    # The same fold of a regenerated data root (or an edited splits.json) scored other volumes.
    for method, cases in (("pce", ["patient001_frame01", "patient002_frame01"]), ("dmpls", ["patient001_frame01"])):
        r = result(0.7, 10.0, "fold1")
        r["scored"].update(method=method, cases=cases)
        (tmp_path / f"{method}_fold1.json").write_text(json.dumps(r))
    with pytest.raises(SystemExit) as e:
        summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "dmpls", "--folds", "fold1"])
    assert e.value.code == 2 and "1 volumes, " in capsys.readouterr().err
    # The same names with other images or labels: a root converted or generated again (exit 0 before).
    cases = ["patient001_frame01"]
    for method, digest in (("pce", "a" * 64), ("dmpls", "b" * 64)):
        r = result(0.7, 10.0, "fold1")
        r["scored"].update(method=method, cases=cases, volumes_sha256=digest)
        (tmp_path / f"{method}_fold1.json").write_text(json.dumps(r))
    with pytest.raises(SystemExit) as e:
        summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "dmpls", "--folds", "fold1"])
    assert e.value.code == 2 and "dmpls_fold1.json: its volumes differ from those of " in capsys.readouterr().err
    r["scored"].pop("volumes_sha256")  # a result older than the record is not compared on it
    (tmp_path / "dmpls_fold1.json").write_text(json.dumps(r))
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "dmpls", "--folds", "fold1"]) == 0


@pytest.mark.parametrize("key, values, refused", [
    ("best_model", (True, False), "pce_fold2.json: scored a model other than its run's best"),
    ("root_sha256", ("a" * 64, "b" * 64), "pce_fold2.json: scored on other data than ")])
def test_folds_recorded_as_scored_otherwise_are_not_averaged(tmp_path, capsys, key, values, refused):
    # best.pth for one fold, last.pth for the other; or (found by a probe) fold 1 scored, the root
    # generated again at the same path, fold 2 scored: one "2 folds" row at exit 0.
    for fold, value in zip(("fold1", "fold2"), values):
        r = result(0.7, 10.0, fold)
        r["scored"][key] = value
        (tmp_path / f"pce_{fold}.json").write_text(json.dumps(r))
    with pytest.raises(SystemExit) as e:
        summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"])
    assert e.value.code == 2 and refused in capsys.readouterr().err
    (tmp_path / "pce_fold2.json").write_text(json.dumps(result(0.7, 10.0)))  # older: not recorded, not compared
    assert summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "--folds", "fold1", "fold2"]) == 0
    # a result without the root's digest beside one with it is named
    assert ("pce_fold2.json record(s) no digest of the data root" in capsys.readouterr().err) == (key == "root_sha256")


def test_a_checkpoint_at_another_iteration_is_no_longer_the_one_scored(tmp_path, monkeypatch):
    # A mutation audit found this unpinned: only the configuration's digest was compared, so a run
    # trained again with the same command (a GPU run need not repeat itself), whose best.pth now holds
    # another iteration, kept its old result.
    import checkpoint

    config = {"method": "pce", "max_iterations": 4}
    ckpt = {"config": config, "iteration": 4}
    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda p: ckpt)
    (tmp_path / "best.pth").write_text("")  # no last.pth beside it: whether the run finished is unknown
    scored = {"checkpoint": str(tmp_path / "best.pth"), "config_sha256": checkpoint.config_digest(config),
              "iteration": 4}
    summarize_results.check_still_scored("r.json", scored)
    with pytest.raises(ValueError, match="r.json: .*best.pth is no longer the checkpoint it scored"):
        summarize_results.check_still_scored("r.json", {**scored, "iteration": 2})


def test_a_scored_checkpoint_damaged_since_is_named_not_a_traceback(tmp_path):
    # A probe found summarize_results.py ending in an OSError traceback (exit 1) on a truncated best.pth.
    (tmp_path / "best.pth").write_bytes(b"PK\x03\x04 truncated")
    scored = {"checkpoint": str(tmp_path / "best.pth"), "config_sha256": "0" * 64, "iteration": 4}
    with pytest.raises(ValueError, match="r.json: .*best.pth: not a readable checkpoint"):
        summarize_results.check_still_scored("r.json", scored)
