import json
import os

import pytest

import train
from conftest import ROOT


@pytest.mark.parametrize("argv, message", [
    (["--method", "pce", "--patch_size", "50", "50"], "--patch_size must be multiples of 16"),
    (["--method", "pce", "--max_iterations", "0"], "--max_iterations must be >= 1"),
    (["--method", "pce", "--fold", "fold9"], "--fold must be one of"),
    (["--method", "pce", "--sup_type", "boxes"], "--sup_type must be one of"),
    (["--method", "pce", "--patch_size", "32", "32", "--input_size", "16", "16"], "--input_size must be"),
    (["--method", "pce", "--fg_prob", "2"], "--fg_prob must lie in [0, 1]"),
    (["--method", "pce", "--aug_scale", "1"], "--aug_scale must lie in [0, 1), got 1.0"),  # zoom 0: no slice
    (["--method", "pce", "--aug_scale", "-0.2"], "--aug_scale must lie in [0, 1), got -0.2"),
    (["--method", "s2l", "--patch_size", "32", "32", "--input_size", "64", "64"], "--input_size: s2l"),
    (["--method", "pce", "--labeled_patients", "-1"], "--labeled_patients must be >= 0"),
    (["--method", "pce", "--labeled_patients", "99"], "--labeled_patients must be in 0..3"),
    (["--method", "pce", "--val_fraction", "-0.5"], "--val_fraction must lie in [0, 1)"),
    # splits.json names --fold split's validation cases: --val_fraction 0 still chose a best model
    # (runs saved before with another value still resume: test_engine).
    (["--method", "pce", "--fold", "split", "--val_fraction", "0"], "--val_fraction 0.0 does not apply to --fold split"),
    (["--method", "pce", "--num_classes", "2"], "--num_classes 2: "),
    # Method flags are checked before the run folder exists (they left a half-made one behind).
    (["--method", "maskmixadv", "--mask_ratio", "1.0"], "--mask_ratio must lie in (0, 1), got 1.0"),
    (["--method", "maskmixadv", "--mask_grid", "0"], "--mask_grid must be >= 1, got 0"),
    (["--method", "maskmixadv", "--w_adv", "-0.1"], "--w_adv must be >= 0, got -0.1"),
    (["--method", "maskmixadv", "--prior_spacing", "1.5"],
     "--prior_spacing 1.5: a voxel size from 0.05 to 10 mm (an MRI pixel), for"),
    (["--method", "maskmixadv", "--prior_spacing", "150", "--shape_prior", ".", "--target_spacing", "1.5"],
     "--prior_spacing 150.0: a voxel size from 0.05 to 10 mm"),  # a typed 1.50
    # Negative loss weights of any method trained away from the strokes at exit 0 (dmpls: Dice 0.01).
    (["--method", "dmpls", "--w_ce", "-1"], "--w_ce must be >= 0, got -1.0"),
    (["--method", "pce_tv", "--w_reg", "-1"], "--w_reg must be >= 0, got -1.0"),
    (["--method", "s2l", "--w_cons", "-1"], "--w_cons must be >= 0, got -1.0"),
    (["--method", "pce", "--poly_power", "-1"], "--poly_power must be >= 0, got -1.0"),  # a traceback at the end
    (["--method", "pce", "--base_lr", "0"], "--base_lr must be > 0"),  # trained nothing, exit 0
    (["--method", "pce", "--seed", "-1"], "--seed >= 0"),
    # torch's "Invalid momentum value: -0.5" named no flag, after the data had loaded
    (["--method", "pce", "--momentum", "-0.5"], "--momentum must lie in [0, 1), got -0.5"),
    (["--method", "pce", "--weight_decay", "-1"], "--weight_decay must be >= 0, got -1.0"),
    (["--method", "pce", "--num_workers", "-1"], "--num_workers must be >= 0, got -1"),
    # nan passed a "< 0" check and made the weights NaN; an infinite power trained nothing at exit 0
    (["--method", "pce", "--weight_decay", "nan"], "--weight_decay must be a finite number, got nan"),
    (["--method", "pce", "--poly_power", "inf"], "--poly_power must be a finite number, got inf"),
    (["--method", "maskmixadv", "--disc_lr", "nan"], "--disc_lr must be a finite number, got nan"),
    (["--method", "ustm", "--mc_passes", "0"], "--mc_passes must be >= 1, got 0"),
    (["--method", "s2l", "--memory_interval", "0"], "--memory_interval must be >= 1, got 0"),
    # argparse's prefixes would take --root for --root_path behind train_wss.sh's guards.
    (["--method", "pce", "--root", "elsewhere"], "unrecognized arguments: --root elsewhere"),
])
def test_bad_flags_are_one_line_errors(argv, message, phantom_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main([*argv, "--root_path", phantom_root, "--out_dir", str(tmp_path / "run"),
                    "--no_progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_bad_flag_with_overwrite_keeps_the_old_run(phantom_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pth").write_bytes(b"weights")
    with pytest.raises(SystemExit) as e:
        train.main(["--method", "pce", "--num_classes", "3", "--overwrite", "--root_path", phantom_root,
                    "--out_dir", str(run), "--no_progress"])
    assert e.value.code == 2 and "has 4 classes (background, RV, MYO, LV)" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["last.pth"] and (run / "last.pth").read_bytes() == b"weights"


def test_a_slice_without_scribbles_is_named_unquoted(phantom_root, tmp_path, capsys):
    # The KeyError it raised printed as error: "patient..._slice_0: ..." (quoted, a slice name).
    import shutil

    import h5py

    from dataloaders import io
    from dataloaders.acdc import make_split

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    bare = os.path.join(root, io.SLICE_DIR, make_split(str(root), "fold1").train[0] + "_slice_0.h5")
    with h5py.File(bare, "a") as f:
        del f["scribble"]
    with pytest.raises(SystemExit) as e:
        train.main(["--method", "pce", "--root_path", str(root), "--out_dir", str(tmp_path / "run"), "--no_progress"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {bare}: no 'scribble' dataset (needed by --sup_type scribble)\n"


def test_unknown_method_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        train.main(["--method", "unet_magic"])
    assert "maskmixadv" in capsys.readouterr().err


def test_missing_data_root_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--method", "pce", "--root_path", str(tmp_path / "nowhere"), "--out_dir",
                    str(tmp_path / "run")])
    assert "nowhere/ACDC_training_volumes: no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--methods", "pce pce"], "pce given twice"), (["--folds", "fold1 fold2 fold1"], "fold1 given twice"),
    (["--tta", "yes"], "--tta must be on or off, got yes"),
    (["--args", "pce"], "--args needs 2 value"), (["--root"], "--root needs 1 value"),
    # Flags for a method not run (a typo) were dropped; a run given its own --exp, --out_dir,
    # --fold or --root_path trained elsewhere than the script then tested (another run, exit 0).
    (["--methods", "pce", "--args", "pcee", "--base_lr 0.1"], "--args pcee: pcee is not in --methods (pce)"),
    (["--methods", "pce", "--args", "pce", "--a 1", "--args", "pce", "--b 2"], "--args pce given twice"),
    (["--methods", "pce", "--args", "pce", "--base_lr 0.1 --exp other"], "--exp in --args or after --"),
    (["--methods", "pce", "--", "--fold=fold2"], "--fold in --args or after --"),
    (["--methods", "pce", "--", "--method", "maskmixadv"], "--method in --args or after --: use --methods"),
    # the value after -- replaced the method's own at exit 0 (found by a probe)
    (["--methods", "pce", "--args", "pce", "--seed 3 --base_lr 0.02", "--", "--base_lr=0.005"],
     "--base_lr given in --args pce and after --; give it once"),
    # argparse's --no-X and --X are one flag: the later one won, as above
    (["--methods", "pce", "--args", "pce", "--no-channels_last", "--", "--channels_last"],
     "--channels_last given in --args pce and after --; give it once"),
    # the script passes --input_size too: --patch_size alone trained on crops of larger slices
    (["--methods", "pce", "--", "--patch_size", "48", "48"], "--patch_size in --args or after --: use --patch and --input"),
    (["--methods", "pce", "--args", "pce", "--input_size=64 64"], "--input_size in --args or after --")])
def test_train_wss_refuses_bad_arguments_before_any_work(args, message, tmp_path):
    import subprocess

    # In an empty folder: a case not refused would write its runs there (asserted empty), not into the checkout.
    r = subprocess.run(["bash", os.path.join(ROOT, "train_wss.sh"), *args], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr
    assert not os.listdir(tmp_path)


def python_stub(tmp_path, extra: str = ""):
    """(a $PYTHON for train_wss.sh that records train.py's flags in the returned file and skips
    the project's other scripts, unless ``extra`` case branches run them; that file)."""
    calls, stub = tmp_path / "calls", tmp_path / "python"
    stub.write_text(f'#!/bin/bash\ncase "$1" in */code/train.py) echo "$@" >> {calls} ;; {extra}*/code/*) ;; '
                    '*) exec python3 "$@" ;; esac\n')
    stub.chmod(0o755)
    return stub, calls


def test_train_wss_budget_flags_win_over_protocol_before_or_after_it(tmp_path, phantom_root):
    import subprocess

    stub, calls = python_stub(tmp_path)
    for order in (["--iters", "3", "--protocol", "quick"], ["--protocol", "quick", "--iters", "3"]):
        r = subprocess.run(["bash", os.path.join(ROOT, "train_wss.sh"), "--methods", "pce", "--root", phantom_root,
                            "--exp_prefix", "stub_", *order], capture_output=True, text=True,
                           env={**os.environ, "PYTHON": str(stub)}, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and all("--max_iterations 3 " in c and "--patch_size 128 128" in c
                                   and "--val_interval 250" in c for c in lines)
    # paper with a smaller --patch (to fit a GPU) trained on crops of slices resized to 256, exit 0
    r = subprocess.run(["bash", os.path.join(ROOT, "train_wss.sh"), "--methods", "pce", "--root", phantom_root,
                        "--exp_prefix", "paper_", "--protocol", "paper", "--patch", "64"], capture_output=True,
                       text=True, env={**os.environ, "PYTHON": str(stub)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    paper = calls.read_text().splitlines()[-1]
    assert "--patch_size 64 64 --input_size 64 64 " in paper and "--max_iterations 60000 " in paper


def test_train_wss_tta_on_scores_with_test_time_flips(tmp_path, phantom_root):
    import subprocess

    # Records test_2D_fully.py's flags beside train.py's: the checks before training and the scoring.
    stub, calls = python_stub(tmp_path, f'*/code/test_2D_fully.py) echo "$@" >> {tmp_path / "tests"} ;; ')
    for tta in ("off", "on"):
        r = subprocess.run(["bash", os.path.join(ROOT, "train_wss.sh"), "--methods", "pce", "--root", phantom_root,
                            "--exp_prefix", f"tta_{tta}_", "--tta", tta, "--iters", "3"], capture_output=True,
                           text=True, env={**os.environ, "PYTHON": str(stub)}, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    tests = [line.split() for line in (tmp_path / "tests").read_text().splitlines()]
    assert len(tests) == 4 and [("--tta" in t) for t in tests] == [False, False, True, True]


def test_train_wss_refuses_another_runs_results_file_before_training(tmp_path, phantom_root):
    # A run of another --sup_type scored into the same results file was refused only after its
    # training; the check now runs first.
    import json
    import subprocess

    stub, calls = python_stub(tmp_path, '*/code/test_2D_fully.py) [[ " $* " != *" --check_outputs "* ]] || '
                                        'exec python3 "$@" ;; ')  # runs test_2D_fully's check only
    work = tmp_path / "work"  # train_wss.sh writes model/ in the caller's directory
    results = work / "model" / "results" / "stub_pce_fold1.json"
    results.parent.mkdir(parents=True)
    wss = ["bash", os.path.join(ROOT, "train_wss.sh"), "--methods", "pce", "--root", phantom_root, "--iters", "3",
           "--exp_prefix", "stub_"]
    for sup, rc in (("label", 2), ("scribble", 0)):
        with open(results, "w") as f:
            json.dump({"dice": {}, "hd95": {}, "asd": {}, "n_volumes": 1, "units": "voxels",
                       "scored": {"checkpoint": f"model/stub_pce_fold1/{sup}/best.pth"}}, f)
        r = subprocess.run(wss, capture_output=True, text=True, env={**os.environ, "PYTHON": str(stub)}, cwd=work)
        assert r.returncode == rc, r.stderr
        assert ("holds the scores of model/stub_pce_fold1/label/best.pth" in r.stderr) == (rc == 2)
    # another --sup_type's results: refused before training; the run's own: trained and re-scored
    assert len(calls.read_text().splitlines()) == 1


def test_train_wss_reads_relative_paths_from_the_callers_directory(tmp_path, phantom_root):
    # It worked in the repository, so --root data/X trained and scored the repository's data/X
    # where the caller had one too, at exit 0.
    import shutil
    import subprocess

    stub, calls = python_stub(tmp_path)
    shutil.copytree(phantom_root, tmp_path / "data" / "mine")
    r = subprocess.run(["bash", os.path.join(ROOT, "train_wss.sh"), "--methods", "pce", "--root", "data/mine",
                        "--iters", "3", "--exp_prefix", "stub_"], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": str(stub)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--root_path data/mine " in calls.read_text() and (tmp_path / "model" / "results").is_dir()
    r = subprocess.run(["bash", os.path.join(ROOT, "train_wss.sh"), "--methods", "pce", "--root", "data/nowhere"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "--root data/nowhere has no ACDC_training_volumes folder" in r.stderr


def test_target_spacing_median_is_that_of_the_training_cases(tmp_path):
    # Found by a review: the median was taken over every case of the root, test cases included.
    import numpy as np

    from config import build_parser, finalize
    from dataloaders import io
    from dataloaders.acdc import make_split
    from methods import get_method

    root = str(tmp_path / "root")
    cases = {"train": ["a1", "a2", "a3"], "val": ["b1"], "test": ["c1", "c2", "c3", "c4"]}
    for part, names in cases.items():
        for name in names:  # 1 mm training pixels, 3 mm elsewhere: the median of all would be 3 mm
            sp = 1.0 if part == "train" else 3.0
            io.write_h5(io.volume_path(root, name), {"image": np.zeros((1, 4, 4), np.float32)}, spacing=(5.0, sp, sp))
    with open(tmp_path / "root" / "splits.json", "w") as f:
        json.dump(cases, f)
    assert make_split(root, "split").train == cases["train"]
    cfg = finalize(build_parser(get_method("pce")).parse_args(
        ["--root_path", root, "--fold", "split", "--target_spacing", "median"]), get_method("pce"))
    assert cfg.target_spacing == [1.0, 1.0]
