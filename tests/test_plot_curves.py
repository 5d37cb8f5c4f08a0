import json

import pytest
from conftest import tiny_cfg

import engine
import plot_curves
from methods import get_method

LOG = """2026-11-29 00:22:42,581 command: code/train.py --method pce
2026-11-29 00:30:00,000 iteration 250: loss 1.2000 ce 0.5000 | val dice 0.5123 hd95 40.10 (400 s)
2026-11-29 00:40:00,000 iteration 500: loss 0.9000 ce 0.4000 | val dice 0.7012 hd95 9.50 (800 s)
2026-11-29 00:41:00,000 resumed from last.pth at iteration 500
2026-11-29 00:50:00,000 iteration 500: loss 0.9000 ce 0.4000 | val dice 0.7013 hd95 9.40 (900 s)
"""


def write_run(tmp_path, name, text=LOG, **config):
    run = tmp_path / name / "scribble"
    run.mkdir(parents=True)
    (run / "log.txt").write_text(text)
    config = {"method": "pce", "fold": "fold1", "val_fraction": 0.1, "select_on_test": False, "root_path": "data/ACDC", **config}
    (run / "config.json").write_text(json.dumps(config))
    return str(run)


def test_read_validation_parses_each_validation_once(tmp_path):
    v = plot_curves.read_validation(write_run(tmp_path, "pce_fold1"))
    assert v.tolist() == [[250, 0.5123, 40.10], [500, 0.7013, 9.40]]
    # a last line cut off by a killed run read as hd95 5 for 50.59 (found by a probe): skipped
    cut = LOG + "2026-11-29 01:00:00,000 iteration 750: loss 0.8000 ce 0.3000 | val dice 0.6633 hd95 5"
    assert plot_curves.read_validation(write_run(tmp_path, "cut", cut)).tolist() == v.tolist()


def test_curves_and_bars_are_written(tmp_path):
    runs = [write_run(tmp_path, "pce_fold1"), write_run(tmp_path, "dmpls_fold1")]
    out = tmp_path / "curves.png"
    assert plot_curves.main(["--runs", *runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    per = {"RV": 0.8, "MYO": 0.7, "LV": 0.9, "mean": 0.8}
    result = {"dice": per, "hd95": per, "asd": per}
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert plot_curves.main(["--results", str(tmp_path / "r.json"), "--out", str(tmp_path / "b.png")]) == 0
    assert plot_curves.run_name(runs[0]) == "pce_fold1"


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        plot_curves.main(["--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")])
    assert e.value.code == 2 and "nope/log.txt: no such log" in capsys.readouterr().err
    empty = write_run(tmp_path, "empty", "no validation yet\n")
    with pytest.raises(SystemExit):
        plot_curves.main(["--runs", empty, "--out", str(tmp_path / "c.png")])
    assert "no validation lines yet" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SystemExit):
        plot_curves.main(["--results", str(tmp_path / "x.json"), "--out", str(tmp_path / "b.png")])
    assert "not a test_2D_fully.py result" in capsys.readouterr().err
    per = {"RV": 0.8, "LV": 0.9, "mean": 0.8}
    (tmp_path / "y.json").write_text(json.dumps({"dice": {**per, "MYO": 0.7}, "hd95": per, "asd": per}))
    (tmp_path / "z.json").write_text(json.dumps({"dice": per, "hd95": per, "asd": per}))
    with pytest.raises(SystemExit):
        plot_curves.main(["--results", str(tmp_path / "y.json"), str(tmp_path / "z.json"), "--out", str(tmp_path / "b.png")])
    assert "z.json: its classes ['LV', 'RV', 'mean'] differ from" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "b.png").exists()


def test_curves_refuse_a_run_twice_or_runs_validated_on_other_volumes(tmp_path, capsys):
    a = write_run(tmp_path, "pce_fold1")
    for name, config, message in [
            ("pce_fold2", {"fold": "fold2"}, "('fold2', 0.1, False) differ from"),  # drawn as one comparison, exit 0
            ("test_sel", {"select_on_test": True}, "('fold1', 0.1, True) differ"),
            ("frac", {"val_fraction": 0.2}, "('fold1', 0.2, False) differ")]:
        with pytest.raises(SystemExit) as e:
            plot_curves.main(["--runs", a, write_run(tmp_path, name, **config), "--out", str(tmp_path / "c.png")])
        assert e.value.code == 2 and f"{name}/scribble: its validation volumes" in capsys.readouterr().err
    # validated on a data root generated again: the same names, other volumes (drawn, exit 0)
    with pytest.raises(SystemExit):
        plot_curves.main(["--runs", write_run(tmp_path, "v1", val_data_sha256="a" * 64),
                          write_run(tmp_path, "v2", val_data_sha256="b" * 64), "--out", str(tmp_path / "c.png")])
    assert "v2/scribble: its volumes differ from those of " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_curves.main(["--runs", a, a + "/", "--out", str(tmp_path / "c.png")])
    assert "given twice" in capsys.readouterr().err
    nameless = write_run(tmp_path, "nameless")
    (tmp_path / "nameless" / "scribble" / "config.json").write_text(json.dumps({"fold": "fold1"}))
    with pytest.raises(SystemExit):
        plot_curves.main(["--runs", a, nameless, "--out", str(tmp_path / "c.png")])
    assert "nameless/scribble/config.json: names no method" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
    other_root = write_run(tmp_path, "dmpls_fold1", root_path="data/MINE", postprocess="lcc")
    assert plot_curves.main(["--runs", a, other_root, "--out", str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err
    assert "note: the runs trained on data roots data/ACDC, data/MINE" in err
    assert "note: the runs validated with different (post-processing, resize back): ('none', 'labels'), " \
           "('lcc', 'labels')" in err
    with_defaults = write_run(tmp_path, "given", postprocess="none", resize_back="labels")  # as the older run
    assert plot_curves.main(["--runs", a, with_defaults, "--out", str(tmp_path / "c.png"), "--overwrite"]) == 0
    assert "validated with different" not in capsys.readouterr().err


def test_bars_refuse_a_result_twice_validation_mixed_with_test_or_another_fold(tmp_path, capsys):
    per = {"RV": 0.8, "MYO": 0.7, "LV": 0.9, "mean": 0.8}
    for name, part, fold in (("t", "test", "fold1"), ("v", "val", "fold1"), ("f2", "test", "fold2")):
        (tmp_path / f"{name}.json").write_text(json.dumps({"dice": per, "hd95": per, "asd": per,
                                                           "scored": {"on": part, "fold": fold}}))
    for files, message in [(["t.json", "t.json"], "t.json: given twice"),
                           (["t.json", "v.json"], "v.json: its scored part of the split val differ"),
                           # the test volumes of two folds, once drawn side by side
                           (["t.json", "f2.json"], "f2.json: its scored fold fold2 differ")]:
        with pytest.raises(SystemExit) as e:
            plot_curves.main(["--results", *[str(tmp_path / f) for f in files], "--out", str(tmp_path / "b.png")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()


def test_bars_note_other_data_roots_and_other_scoring(tmp_path, capsys):
    per = {"RV": 0.8, "MYO": 0.7, "LV": 0.9, "mean": 0.8}
    for name, root, post, best in (("a", "/data/ACDC", "none", True), ("b", "/data/MINE", "lcc", False)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"dice": per, "hd95": per, "asd": per, "scored": {
            "on": "test", "fold": "fold1", "root_path": root, "postprocess": post, "best_model": best}}))
    assert plot_curves.main(["--results", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                             "--out", str(tmp_path / "b.png")]) == 0
    err = capsys.readouterr().err
    assert "note: the results scored data roots /data/ACDC, /data/MINE" in err
    assert "note: the results were predicted with different (post-processing, TTA, resize back): " \
           "('none', None, None), ('lcc', None, None)" in err
    assert "note: the results scored their run's best validation model (True), another model (False) or did not " \
           "say (None): True, False" in err
    # Two files of one default name (run_name: pce_fold1) made two bars the legend could not tell apart.
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "pce_fold1.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(SystemExit) as e:
        plot_curves.main(["--results", str(tmp_path / "x" / "pce_fold1.json"), str(tmp_path / "y" / "pce_fold1.json"),
                          "--out", str(tmp_path / "twice.png")])
    assert e.value.code == 2 and "two inputs are labelled pce_fold1" in capsys.readouterr().err


def test_split_runs_that_validated_on_other_cases_are_refused(tmp_path, capsys):
    # --fold split names its validation cases in splits.json; one edited between two runs gave
    # curves of other volumes in one plot, exit 0.
    import torch

    runs = [write_run(tmp_path, name, fold="split") for name in ("a", "b")]
    for run, val in zip(runs, (["patient004_frame01"], ["patient005_frame01"])):
        torch.save({"config": {}, "method": "pce", "model": {}, "iteration": 1, "split": {"val": val}}, f"{run}/last.pth")
    with pytest.raises(SystemExit) as e:
        plot_curves.main(["--runs", *runs, "--out", str(tmp_path / "c.png")])
    assert e.value.code == 2 and "not the same ones (e.g. patient004_frame01)" in capsys.readouterr().err
    torch.save({"config": {}, "method": "pce", "model": {}, "iteration": 1, "split": {"val": ["patient004_frame01"]}},
               f"{runs[1]}/last.pth")
    assert plot_curves.main(["--runs", *runs, "--out", str(tmp_path / "c.png")]) == 0
    open(f"{runs[1]}/last.pth", "wb").write(b"truncated")  # a one-line error, not a traceback
    with pytest.raises(SystemExit) as e:
        plot_curves.main(["--runs", *runs, "--out", str(tmp_path / "c.png"), "--overwrite"])
    assert e.value.code == 2 and "last.pth: not a readable checkpoint" in capsys.readouterr().err


def test_a_figure_is_not_written_over_an_existing_file_or_in_an_unknown_format(tmp_path, capsys):
    import annotation_effort

    run = write_run(tmp_path, "pce_fold1")
    old = tmp_path / "old.png"
    old.write_bytes(b"a figure made earlier")  # replaced without a word, exit 0
    for main, inputs in ((plot_curves.main, ["--runs", run]), (annotation_effort.main, ["r.json"])):
        for out, message in ((old, "old.png exists; pass --overwrite to replace it"),
                             (tmp_path / "x.json", "x.json: a figure file needs one of the extensions")):
            with pytest.raises(SystemExit) as e:  # annotation_effort's .json was a traceback after its table
                main([*inputs, "--out", str(out)])
            assert e.value.code == 2 and message in capsys.readouterr().err
    assert old.read_bytes() == b"a figure made earlier" and not (tmp_path / "x.json").exists()
    assert plot_curves.main(["--runs", run, "--out", str(old), "--overwrite"]) == 0
    assert old.read_bytes()[:4] == b"\x89PNG"


def test_curves_read_the_validations_a_training_run_logs(phantom_root, tmp_path):
    # The parser is pinned to the engine's log line: a changed line would draw no curve.
    run = tmp_path / "run"
    best = engine.train(tiny_cfg(get_method("pce"), phantom_root, run), get_method("pce"))
    rows = plot_curves.read_validation(str(run))
    assert rows[:, 0].tolist() == [2, 4]
    assert rows[rows[:, 0] == best["iteration"], 1] == pytest.approx(best["dice"], abs=1e-4)
    assert rows[rows[:, 0] == best["iteration"], 2] == pytest.approx(best["hd95"], abs=0.01)
