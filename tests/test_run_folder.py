"""Run folders: no mixed runs, no lost runs, a lock per folder, preemption-safe checkpoints."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import engine
import resume
from conftest import ROOT, tiny_cfg
from methods import get_method
from run_folder import RunFolder

PCE = get_method("pce")


def test_a_second_run_in_a_locked_folder_names_the_holder(tmp_path, phantom_root):
    with RunFolder(str(tmp_path / "run")):
        cfg = tiny_cfg(PCE, phantom_root, tmp_path / "run")
        with pytest.raises(FileExistsError, match=f"run is in use by another run \\(PID {os.getpid()}\\)"):
            engine.train(cfg, PCE)
    assert not (tmp_path / "run" / "config.json").exists()
    engine.train(tiny_cfg(PCE, phantom_root, tmp_path / "run"), PCE)  # the lock is released


def test_a_run_still_training_is_not_scored(tmp_path, phantom_root, capsys):
    # Found by a probe: best.pth scored at iteration 40 of a run that went on to 210 was averaged
    # with finished folds as the run's best model, exit 0.
    import test_2D_fully

    engine.train(tiny_cfg(PCE, phantom_root, tmp_path / "run"), PCE)
    folder = RunFolder(str(tmp_path / "run"))
    assert folder.training_pid() is None
    score = ["--root_path", phantom_root, "--fold", "fold1", "--checkpoint", str(tmp_path / "run" / "best.pth"),
             "--out_json", str(tmp_path / "r.json")]
    with RunFolder(str(tmp_path / "run"), resume=True):  # as a training process holds it
        assert folder.training_pid() == str(os.getpid())
        with pytest.raises(SystemExit) as e:
            test_2D_fully.main(score)
        assert e.value.code == 2 and f"its run is still training (process {os.getpid()} holds its .lock)" in \
            capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    test_2D_fully.main(score)  # the run has ended
    assert (tmp_path / "r.json").exists()


@pytest.mark.parametrize("artefact", ["best.pth", "config.json", "log.txt"])
def test_any_artefact_of_a_run_refuses_a_new_run_unless_overwrite(tmp_path, phantom_root, artefact):
    run = tmp_path / "run"
    run.mkdir()
    (run / artefact).write_text("an earlier run")
    with pytest.raises(FileExistsError, match=f"already holds a run \\({artefact}\\)"):
        engine.train(tiny_cfg(PCE, phantom_root, run), PCE)
    assert (run / artefact).read_text() == "an earlier run"
    engine.train(tiny_cfg(PCE, phantom_root, run, "--overwrite"), PCE)
    assert (run / "last.pth").exists()
    with pytest.raises(ValueError, match="exclude each other"):
        RunFolder(str(run), resume=True, overwrite=True)


def test_overwrite_puts_the_old_run_back_when_the_new_one_fails(tmp_path, phantom_root, monkeypatch):
    run = tmp_path / "run"
    engine.train(tiny_cfg(PCE, phantom_root, run), PCE)
    old = {a: (run / a).read_bytes() for a in ("best.pth", "last.pth", "config.json", "log.txt")}

    def fail(*args):
        raise RuntimeError("a slice file went bad")
    monkeypatch.setattr(PCE, "training_step", fail)
    with pytest.raises(RuntimeError, match="went bad"):
        engine.train(tiny_cfg(PCE, phantom_root, run, "--overwrite", "--seed", "7"), PCE)
    assert {a: (run / a).read_bytes() for a in old} == old and (run / "tb").is_dir()
    assert not (run / RunFolder.REPLACED).exists()
    monkeypatch.undo()
    engine.train(tiny_cfg(PCE, phantom_root, run, "--overwrite", "--seed", "7"), PCE)
    assert (run / "config.json").read_bytes() != old["config.json"] and not (run / RunFolder.REPLACED).exists()


def test_a_run_set_aside_by_a_killed_overwrite_is_never_deleted(tmp_path, phantom_root):
    # A replacement killed with -9 leaves the finished run in .replaced; the next --overwrite
    # removed it at its start, and put back the killed run's files when it failed.
    run = tmp_path / "run"
    engine.train(tiny_cfg(PCE, phantom_root, run), PCE)
    (run / RunFolder.REPLACED).mkdir()
    os.replace(run / "best.pth", run / RunFolder.REPLACED / "best.pth")
    kept = (run / RunFolder.REPLACED / "best.pth").read_bytes()
    with pytest.raises(FileExistsError, match="run/.replaced holds a run set aside by an --overwrite that has not ended"):
        engine.train(tiny_cfg(PCE, phantom_root, run, "--overwrite"), PCE)
    assert (run / RunFolder.REPLACED / "best.pth").read_bytes() == kept


def test_nothing_is_created_when_the_device_or_data_is_wrong(tmp_path, phantom_root):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        engine.train(tiny_cfg(PCE, phantom_root, tmp_path / "a", "--device", "cuda"), PCE)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        engine.train(tiny_cfg(PCE, str(tmp_path / "nowhere"), tmp_path / "b"), PCE)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_run_that_fails_while_loading_its_data_leaves_nothing_in_the_way(tmp_path, phantom_root):
    import shutil

    from dataloaders import io

    root = tmp_path / "data"
    shutil.copytree(phantom_root, root)
    bad = root / io.SLICE_DIR / "patient002_frame01_slice_1.h5"
    good = io.read_h5(str(bad))
    io.write_h5(str(bad), {"image": good["image"], "label": good["label"], "scribble": good["scribble"] * 0 + 9})
    (tmp_path / "mine").mkdir()
    for run in (tmp_path / "new", tmp_path / "mine"):
        with pytest.raises(ValueError, match="patient002_frame01_slice_1.h5: scribble"):
            engine.train(tiny_cfg(PCE, str(root), run), PCE)
    # The data are loaded before the run folder is touched.
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "mine") == []
    io.write_h5(str(bad), {k: good[k] for k in ("image", "label", "scribble")})
    engine.train(tiny_cfg(PCE, str(root), tmp_path / "new"), PCE)  # the same command, rerun
    assert (tmp_path / "new" / "last.pth").exists()


def test_resume_refuses_other_data_and_accepts_configs_older_than_a_flag(tmp_path, phantom_root):
    import shutil

    from dataloaders.phantoms import write_phantoms

    run = tmp_path / "run"
    engine.train(tiny_cfg(PCE, phantom_root, run, "--max_iterations", "2"), PCE)
    ckpt = torch.load(run / "last.pth", weights_only=False)
    assert ckpt["split"]["train"] and ckpt["split"]["test"]
    other = tmp_path / "other"
    write_phantoms(str(other), patients=6, seed=3, size=64)
    longer = ("--max_iterations", "2")
    with pytest.raises(ValueError, match="--resume: the train cases differ"):
        engine.train(tiny_cfg(PCE, str(other), run, "--resume", "--root_path", str(other), *longer), PCE)
    # a run saved before --fg_prob existed: the flag takes its default and the run resumes
    shutil.copy(run / "last.pth", tmp_path / "saved.pth")
    del ckpt["config"]["fg_prob"]
    torch.save(ckpt, run / "last.pth")
    resume.check_resumable(ckpt["config"], tiny_cfg(PCE, phantom_root, run, "--resume", *longer), PCE)
    with pytest.raises(ValueError, match="--fg_prob is 0.9"):
        resume.check_resumable(ckpt["config"], tiny_cfg(PCE, phantom_root, run, "--resume", "--fg_prob", "0.9",
                                                         *longer), PCE)
    # the best model so far was chosen with the run's own post-processing
    with pytest.raises(ValueError, match="--postprocess is 'lcc'"):
        resume.check_resumable(ckpt["config"], tiny_cfg(PCE, phantom_root, run, "--resume", "--postprocess", "lcc",
                                                         *longer), PCE)


def train_cmd(root, out, *extra):
    return [sys.executable, os.path.join(ROOT, "code", "train.py"), "--method", "pce", "--root_path", root,
            "--out_dir", str(out), "--patch_size", "32", "32", "--batch_size", "2", "--num_workers", "0",
            "--device", "cpu", "--no_progress", "--max_iterations", "40", "--val_interval", "40", *extra]


def wait_for_checkpoint(proc, path, at_least):
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path) and torch.load(path, weights_only=False)["iteration"] >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at iteration >= {at_least} in time")


def final_weights(path):
    return torch.load(path, weights_only=False)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, phantom_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_cmd(phantom_root, tmp_path / "ref"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(train_cmd(phantom_root, tmp_path / "run", "--save_every", "5"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(proc, tmp_path / "run" / "last.pth", 10)
    proc.kill()
    proc.wait()
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=False)["iteration"] < 40
    subprocess.run(train_cmd(phantom_root, tmp_path / "run", "--save_every", "5", "--resume"), check=True,
                   env=env, capture_output=True)
    assert_same_weights(final_weights(tmp_path / "run" / "last.pth"), final_weights(tmp_path / "ref" / "last.pth"))


def test_sigterm_saves_a_resumable_checkpoint_and_says_so(tmp_path, phantom_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(phantom_root, run, "--save_every", "1000", "--max_iterations", "400",
                                      "--val_interval", "400"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not (run / "tb").exists() and proc.poll() is None:  # training has started
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "stopped: SIGTERM at iteration" in err and "--resume" in err and "Traceback" not in err
    stopped_at = torch.load(run / "last.pth", weights_only=False)["iteration"]
    assert 0 < stopped_at < 400
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


class StoppedAtOnce(engine.StopSignals):
    """A SIGTERM received as the run starts: it stops after its first step."""

    def __enter__(self):
        super().__enter__()
        self.received = "SIGTERM"
        return self


def test_a_resume_that_fails_before_its_first_step_keeps_the_run(tmp_path, phantom_root, monkeypatch):
    pce, run = get_method("pce"), tmp_path / "run"
    monkeypatch.setattr(engine, "StopSignals", StoppedAtOnce)
    with pytest.raises(engine.Interrupted):  # stopped at iteration 1 of 4: a run to resume
        engine.train(tiny_cfg(pce, phantom_root, run, "--val_interval", "1"), pce)
    monkeypatch.undo()
    before = {a: (run / a).read_bytes() for a in ("last.pth", "best.pth")}

    def fail(*args):
        raise RuntimeError("optimizer state does not fit")
    monkeypatch.setattr(engine, "restore", fail)
    with pytest.raises(RuntimeError, match="does not fit"):
        engine.train(tiny_cfg(pce, phantom_root, run, "--val_interval", "1", "--resume"), pce)
    assert {a: (run / a).read_bytes() for a in before} == before


def test_a_stopped_overwrite_keeps_the_new_runs_checkpoint(tmp_path, phantom_root, monkeypatch):
    pce, run = get_method("pce"), tmp_path / "run"
    engine.train(tiny_cfg(pce, phantom_root, run), pce)  # finished at iteration 4
    monkeypatch.setattr(engine, "StopSignals", StoppedAtOnce)
    with pytest.raises(engine.Interrupted):
        engine.train(tiny_cfg(pce, phantom_root, run, "--overwrite", "--seed", "7"), pce)
    assert torch.load(run / "last.pth", weights_only=False)["iteration"] == 1  # the new run's, to resume
    assert not (run / RunFolder.REPLACED).exists()
