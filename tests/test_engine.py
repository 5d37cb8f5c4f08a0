import json
import os

import pytest
import torch

import checkpoint
import engine
import inference
import resume
from conftest import Interrupt, stop_after_first_save, tiny_cfg
from methods import get_method


def run(method_name, root, out_dir, *extra, crash_after_first_save=False, monkeypatch=None):
    method_cls = get_method(method_name)
    cfg = tiny_cfg(method_cls, root, out_dir, *extra)
    if crash_after_first_save:
        stop_after_first_save(monkeypatch)
    engine.train(cfg, method_cls)
    return torch.load(os.path.join(out_dir, "last.pth"), weights_only=False)


@pytest.mark.parametrize("method, extra", [("pce", ()), ("maskmixadv", ("--disc_ndf", "8")),
                                           ("pce", ("--model_ema", "0.9"))])
def test_resume_continues_exactly(method, extra, tmp_path, phantom_root, monkeypatch):
    straight = run(method, phantom_root, tmp_path / "a", *extra)
    with pytest.raises(Interrupt):
        run(method, phantom_root, tmp_path / "b", *extra, crash_after_first_save=True,
            monkeypatch=monkeypatch)
    monkeypatch.undo()
    assert torch.load(tmp_path / "b" / "last.pth", weights_only=False)["iteration"] == 2
    resumed = run(method, phantom_root, tmp_path / "b", *extra, "--resume")
    assert resumed["iteration"] == straight["iteration"] == 4
    assert straight["model"].keys() == resumed["model"].keys()
    assert any(k.startswith("average.") for k in straight["model"]) == ("--model_ema" in extra)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_the_engine_moves_the_weight_average_after_every_step(tmp_path, phantom_root):
    # With a decay of ~0 the average follows the network step by step; without the engine's
    # update it would keep the initial weights, which validation, best.pth and predict then used.
    saved = run("pce", phantom_root, tmp_path, "--model_ema", "1e-9")["model"]
    nets = {k[len("net."):]: v for k, v in saved.items() if k.startswith("net.")}
    assert nets and all(torch.allclose(saved[f"average.{k}"].float(), v.float()) for k, v in nets.items())
    engine.seed_everything(2022)  # the run's seed (config.py): its initial weights
    initial = get_method("pce")(tiny_cfg(get_method("pce"), phantom_root, tmp_path / "x")).net.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in nets.items())


def test_run_writes_its_files_and_never_overwrites_a_run(tmp_path, phantom_root):
    run("pce", phantom_root, tmp_path)
    for f in ("config.json", "log.txt", "best.pth", "last.pth", "best.json"):
        assert (tmp_path / f).exists(), f
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["method"] == "pce" and config["base_lr"] == 0.01
    assert "val dice" in (tmp_path / "log.txt").read_text()
    assert any((tmp_path / "tb").iterdir())
    before = (tmp_path / "last.pth").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        run("pce", phantom_root, tmp_path)
    assert (tmp_path / "last.pth").read_bytes() == before


def test_resume_without_a_run_is_an_error(tmp_path, phantom_root):
    with pytest.raises(FileNotFoundError, match="--resume"):
        run("pce", phantom_root, tmp_path, "--resume")


def test_crop_training_validates_and_tests_on_the_whole_resized_slice(tmp_path, phantom_root):
    ckpt = run("maskmixadv", phantom_root, tmp_path, "--input_size", "64", "64")
    assert ckpt["config"]["input_size"] == [64, 64] and ckpt["config"]["patch_size"] == [32, 32]
    method, cfg = checkpoint.load_method(str(tmp_path / "last.pth"), torch.device("cpu"))
    assert cfg.input_size == [64, 64]
    del ckpt["config"]["input_size"]  # a run saved before the flag existed: no crops
    torch.save(ckpt, tmp_path / "old.pth")
    assert checkpoint.load_method(str(tmp_path / "old.pth"), torch.device("cpu"))[1].input_size == [32, 32]


def test_a_run_saved_before_resize_back_keeps_the_labels_it_was_validated_with(tmp_path, phantom_root):
    ckpt = run("pce", phantom_root, tmp_path)
    assert ckpt["config"]["resize_back"] == "scores"
    del ckpt["config"]["resize_back"]
    torch.save(ckpt, tmp_path / "last.pth")
    assert checkpoint.load_method(str(tmp_path / "last.pth"), torch.device("cpu"))[1].resize_back == "labels"
    # Flags added later without a LEGACY entry take the value their default had then.
    for flag in ("postprocess", "target_spacing", "model_ema", "select_on_test", "upsampling"):
        del ckpt["config"][flag]
    torch.save(ckpt, tmp_path / "older.pth")
    cfg = checkpoint.load_method(str(tmp_path / "older.pth"), torch.device("cpu"))[1]
    assert (cfg.postprocess, cfg.target_spacing, cfg.model_ema, cfg.select_on_test, cfg.upsampling) == \
        ("none", None, 0.0, False, "transposed")
    with pytest.raises(ValueError, match="--resize_back is 'scores' but the run was started with 'labels'"):
        run("pce", phantom_root, tmp_path, "--resume")
    assert run("pce", phantom_root, tmp_path, "--resume", "--resize_back", "labels")["iteration"] == 4


def test_validation_scores_the_classes_of_the_data_root(tmp_path, lv_root):
    # On a root with one class, classes 2 and 3 (absent from truth and prediction) once scored
    # Dice 1 each: a validation Dice of 0.69 for an LV Dice of 0.06.
    import test_2D_fully

    run("pce", lv_root, tmp_path / "run", "--num_classes", "2")
    with open(tmp_path / "run" / "best.json") as f:
        best = json.load(f)
    scored = test_2D_fully.main(["--root_path", lv_root, "--on", "val", "--checkpoint", str(tmp_path / "run" / "best.pth"),
                                 "--out_json", str(tmp_path / "val.json")])
    assert list(scored["dice"]) == ["LV", "mean"]
    assert best["dice"] == pytest.approx(scored["dice"]["mean"]) and best["hd95"] == pytest.approx(scored["hd95"]["mean"])


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="--device cuda"):
        inference.resolve_device("cuda")


def test_resume_refuses_a_changed_schedule_but_accepts_other_workers(tmp_path, phantom_root):
    run("pce", phantom_root, tmp_path)
    with pytest.raises(ValueError, match="--max_iterations is 8 but the run was started with 4"):
        run("pce", phantom_root, tmp_path, "--resume", "--max_iterations", "8")
    assert run("pce", phantom_root, tmp_path, "--resume", "--num_workers", "1")["iteration"] == 4


def test_a_run_resumed_with_other_shape_prior_masks_is_refused(phantom_root, tmp_path, monkeypatch):
    # Only the --shape_prior path was compared: other masks under it trained the rest of the run.
    from dataloaders import io
    from dataloaders.phantoms import render_patient

    prior = tmp_path / "prior"
    for p in (50, 51):
        for case in render_patient(p, seed=3, size=64)[0]:
            io.write_h5(str(prior / f"{case.name}.h5"), {"label": case.label})
    extra = ("--shape_prior", str(prior), "--disc_ndf", "8")
    with pytest.raises(Interrupt):
        run("maskmixadv", phantom_root, tmp_path / "run", *extra, crash_after_first_save=True, monkeypatch=monkeypatch)
    monkeypatch.undo()
    first = sorted(prior.iterdir())[0]
    io.write_h5(str(first), {"label": io.read_h5(str(first), keys=("label",))["label"][::-1]})
    before = {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()}
    with pytest.raises(ValueError, match="--resume: the shape prior data differ from those .*last.pth was trained"):
        run("maskmixadv", phantom_root, tmp_path / "run", *extra, "--resume")
    # refused before the run folder was touched (its log and config.json were written first)
    assert {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()} == before


def test_a_shape_prior_is_read_before_the_run_folder_is_touched(phantom_root, tmp_path, monkeypatch):
    import run_folder

    def touched(self):
        raise AssertionError("the run folder was opened before the shape prior was read")
    monkeypatch.setattr(run_folder.RunFolder, "open", touched)
    empty = tmp_path / "prior"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="--shape_prior .*prior: no .h5"):
        run("maskmixadv", phantom_root, tmp_path / "run", "--shape_prior", str(empty))


def test_a_finished_run_is_re_tested_without_its_method_prepared(phantom_root, tmp_path, monkeypatch):
    # train_wss.sh re-tests finished runs through --resume: a moved shape prior stopped it.
    from methods.maskmixadv import MaskMixAdv

    run("maskmixadv", phantom_root, tmp_path / "run", "--disc_ndf", "8")

    def gone(self, train_set):
        raise FileNotFoundError("the shape prior moved")
    monkeypatch.setattr(MaskMixAdv, "prepare", gone)
    cfg = tiny_cfg(MaskMixAdv, phantom_root, tmp_path / "run", "--disc_ndf", "8", "--resume")
    assert engine.train(cfg, MaskMixAdv)["iteration"] >= 0


def test_a_split_run_saved_with_any_val_fraction_resumes(phantom_root, tmp_path):
    # --val_fraction is refused with --fold split now; runs saved before with another value must
    # still resume (the value never counted there), while other folds still refuse a change.
    for fold, refused in (("split", False), ("fold1", True)):
        cfg = tiny_cfg(get_method("pce"), phantom_root, tmp_path / fold, "--fold", fold)
        saved = {**vars(cfg), "val_fraction": 0.3}
        if refused:
            with pytest.raises(ValueError, match="--val_fraction is 0.1 but the run was started with 0.3"):
                resume.check_resumable(saved, cfg, get_method("pce"))
        else:
            resume.check_resumable(saved, cfg, get_method("pce"))


def test_a_points_run_saved_before_point_resizing_resumes_only_as_it_trained(phantom_root, tmp_path):
    # Found by a probe: a points run started before resizes kept every point resumed under the
    # new resizing, "changed: nothing" (289 labelled pixels per batch before, 606 after).
    pce = get_method("pce")
    cfg = tiny_cfg(pce, phantom_root, tmp_path / "p", "--sup_type", "points")
    assert cfg.point_resize == "keep"
    old = {k: v for k, v in vars(cfg).items() if k != "point_resize"}
    with pytest.raises(ValueError, match="--point_resize is 'keep' but the run was started with 'nearest'"):
        resume.check_resumable(old, cfg, pce)
    resume.check_resumable(old, tiny_cfg(pce, phantom_root, tmp_path / "p", "--sup_type", "points",
                                         "--point_resize", "nearest"), pce)
    scribbles = tiny_cfg(pce, phantom_root, tmp_path / "s")  # other supervision: no such setting
    assert scribbles.point_resize is None
    resume.check_resumable({k: v for k, v in vars(scribbles).items() if k != "point_resize"}, scribbles, pce)
    with pytest.raises(ValueError, match="--point_resize applies to --sup_type points, not scribble"):
        tiny_cfg(pce, phantom_root, tmp_path / "s", "--point_resize", "keep")


def test_a_resume_with_a_changed_setting_is_recorded(tmp_path, phantom_root, monkeypatch, capsys):
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    run("pce", phantom_root, tmp_path, "--max_iterations", "2", "--val_interval", "2")
    config = json.load(open(tmp_path / "config.json"))
    assert config["amp"] == "off" and "resumes" not in config
    ckpt = torch.load(tmp_path / "last.pth", weights_only=False)
    ckpt["config"]["max_iterations"] = 4  # as if the run had been stopped at iteration 2 of 4
    torch.save(ckpt, tmp_path / "last.pth")
    run("pce", phantom_root, tmp_path, "--max_iterations", "4", "--val_interval", "2", "--resume", "--amp", "bf16")
    config = json.load(open(tmp_path / "config.json"))
    assert config["amp"] == "bf16"
    assert config["resumes"] == [{"iteration": 2, "changed": {"amp": ["off", "bf16"]}}]
    log = open(tmp_path / "log.txt").read()
    assert "at iteration 2; changed: --amp 'off' -> 'bf16'" in log
    assert "bf16 is emulated on this CPU" in log  # asked for explicitly: trained as asked, with a warning
    assert "warning: bf16 is emulated on this CPU" in capsys.readouterr().err  # and on the console


def test_a_finished_run_resumed_elsewhere_keeps_its_record(tmp_path, phantom_root, monkeypatch, capsys):
    # train_wss.sh re-tests a finished run through --resume; --amp auto resolves differently on
    # another machine, and must not rewrite the precision the run trained in.
    monkeypatch.setattr(inference, "native_bf16", lambda device: True)
    run("pce", phantom_root, tmp_path, "--amp", "auto")
    before = {f: (tmp_path / f).read_bytes() for f in ("config.json", "last.pth", "best.pth", "best.json", "log.txt")}
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    assert run("pce", phantom_root, tmp_path, "--amp", "auto", "--resume")["config"]["amp"] == "bf16"
    assert {f: (tmp_path / f).read_bytes() for f in before} == before
    assert "last.pth: the run finished at iteration 4; nothing to train" in capsys.readouterr().err


def test_a_run_resumed_on_other_data_with_the_same_case_names_is_refused(tmp_path, phantom_root):
    # train_wss.sh --root OTHER re-tested (and would have continued) the run trained on the first
    # root: the case names matched, so nothing noticed the data had changed.
    import shutil

    import h5py

    other = tmp_path / "other"
    shutil.copytree(phantom_root, other)
    for folder in ("ACDC_training_slices", "ACDC_training_volumes"):  # the same cases, another contrast
        for name in os.listdir(other / folder):
            with h5py.File(other / folder / name, "r+") as f:
                f["image"][...] = f["image"][:] ** 2
    run("pce", phantom_root, tmp_path / "run", "--max_iterations", "2", "--val_interval", "2")
    saved = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    assert len(saved["config"]["train_data_sha256"]) == 64
    for iterations in ("2", "4"):  # finished (re-tested), and one to continue
        ckpt = {**saved, "config": {**saved["config"], "max_iterations": int(iterations)}}
        torch.save(ckpt, tmp_path / "run" / "last.pth")
        with pytest.raises(ValueError, match="--resume: the training data differ from those .*last.pth was trained"):
            run("pce", str(other), tmp_path / "run", "--max_iterations", iterations, "--val_interval", "2", "--resume")
    # The same training slices, other validation volumes: the model would be chosen on other data.
    from dataloaders.acdc import make_split

    val_only = tmp_path / "val_only"
    shutil.copytree(phantom_root, val_only)
    for case in make_split(phantom_root, "fold1").val:
        with h5py.File(val_only / "ACDC_training_volumes" / f"{case}.h5", "r+") as f:
            f["image"][...] = f["image"][:] ** 2
    with pytest.raises(ValueError, match="--resume: the validation data differ from those .*last.pth was trained"):
        run("pce", str(val_only), tmp_path / "run", "--max_iterations", "4", "--val_interval", "2", "--resume")
    assert run("pce", phantom_root, tmp_path / "run", "--max_iterations", "4", "--val_interval", "2",
               "--resume")["iteration"] == 4


def test_a_validation_case_holding_a_training_image_is_refused(tmp_path, phantom_root):
    # One scan under two case names (a training and a validation one) chose the model on training data.
    import shutil

    import h5py
    from dataloaders import io
    from dataloaders.acdc import make_split

    split = make_split(phantom_root, "fold1")
    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    training_image = io.read_h5(io.slice_path(phantom_root, split.train[0], 1))["image"]
    with h5py.File(io.volume_path(str(root), split.val[0]), "r+") as f:
        f["image"][2] = training_image
    with pytest.raises(ValueError, match=f"{split.val[0]}.h5: slice 2 holds the image of a training slice"):
        run("pce", str(root), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("native, trained", [(False, "off"), (True, "bf16")])
def test_amp_auto_trains_in_bf16_only_where_it_is_native(native, trained, tmp_path, phantom_root, monkeypatch):
    monkeypatch.setattr(inference, "native_bf16", lambda device: native)
    ckpt = run("pce", phantom_root, tmp_path, "--amp", "auto", "--max_iterations", "1")
    assert ckpt["config"]["amp"] == json.load(open(tmp_path / "config.json"))["amp"] == trained
    assert "emulated" not in open(tmp_path / "log.txt").read()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda(tmp_path, phantom_root, monkeypatch):
    with pytest.raises(Interrupt):
        run("pce", phantom_root, tmp_path, "--device", "cuda", crash_after_first_save=True,
            monkeypatch=monkeypatch)
    monkeypatch.undo()
    assert run("pce", phantom_root, tmp_path, "--device", "cuda", "--resume")["iteration"] == 4


def test_a_nan_loss_stops_the_run_before_any_checkpoint_is_written(tmp_path, phantom_root, monkeypatch):
    # validation (and saving) every 3 iterations: the NaN of iteration 2 must be caught before it
    method_cls = get_method("pce")
    real_step = method_cls.training_step

    def step(self, batch, state):
        logs = real_step(self, batch, state)
        return {**logs, "loss": torch.tensor(float("nan"))} if state.iteration == 1 else logs
    monkeypatch.setattr(method_cls, "training_step", step)
    cfg = tiny_cfg(method_cls, phantom_root, tmp_path, "--val_interval", "3", "--max_iterations", "6")
    with pytest.raises(FloatingPointError, match="non-finite loss at or before iteration 3"):
        engine.train(cfg, method_cls)
    assert not (tmp_path / "last.pth").exists() and not (tmp_path / "best.pth").exists()


@pytest.mark.parametrize("flags, channels_last", [((), True), (("--no-channels_last",), False)])
def test_bench_train_step_times_in_the_precision_and_layout_it_reports(flags, channels_last, monkeypatch):
    import argparse

    from conftest import benchmark

    bench = benchmark("bench_train_step")
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    method_cls, seen = get_method("pce"), []
    real_step = method_cls.training_step

    def step(self, batch, state):
        # A one-channel image is contiguous in both layouts; a 3x3 weight of several channels is not.
        weight = next(p for p in self.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)
        seen.append(weight.is_contiguous(memory_format=torch.channels_last))
        return real_step(self, batch, state)
    monkeypatch.setattr(method_cls, "training_step", step)
    args = argparse.Namespace(batch=2, patch=32, steps=1, warmup=0)
    seconds, amp = bench.time_method(" ".join(("pce", *flags)), "auto", args, torch.device("cpu"))
    assert seconds > 0 and amp == "off"
    assert seen == [channels_last]


def test_the_release_step_is_refused_without_the_release(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "code" / "networks").mkdir(parents=True)  # another release's layout, not MaskMixAdv's
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "release_step.py"),
                          "--release", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"--release {tmp_path}: not a checkout of the MaskMixAdv release" in out.stderr
    for script in ("release_step.py", "bench_train_step.py"):  # they printed -0.0000 s/step at exit 0
        out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--steps", "-2",
                              "--release", str(tmp_path)],
                             capture_output=True, text=True)
        assert out.returncode == 2 and "--steps and --batch must be >= 1" in out.stderr


def test_validation_volumes_without_a_spacing_are_refused_at_start_under_target_spacing(tmp_path, phantom_root):
    # Found by a review: the run trained until its first validation, then stopped with a message
    # naming no file, and its folder (config.json, log.txt) refused the same command again.
    import shutil

    import h5py

    from dataloaders import io
    from dataloaders.acdc import make_split

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    val = make_split(str(root), "fold1").val
    for case in val:
        with h5py.File(io.volume_path(str(root), case), "a") as f:
            del f.attrs["spacing"]
    with pytest.raises(ValueError, match=f"{val[0]}.h5 has no spacing attribute, but the model resamples slices "
                                         r"to \(3.0, 3.0\) mm \(--target_spacing\)"):
        run("pce", str(root), tmp_path / "run", "--target_spacing", "3")
    assert not (tmp_path / "run").exists() or not os.listdir(tmp_path / "run")


def test_validation_volumes_with_and_without_a_spacing_are_refused_before_training(tmp_path, phantom_root):
    # Their mean HD95 and ASD (log.txt, best.json, the curves) would mix voxels with mm.
    import shutil

    import h5py

    from dataloaders import io
    from dataloaders.acdc import make_split

    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    first, second = make_split(str(root), "fold1").val[:2]
    with h5py.File(io.volume_path(str(root), first), "a") as f:
        del f.attrs["spacing"]
    with pytest.raises(ValueError, match=f"{first}.h5 has no spacing attribute but .*{second}.h5 has one"):
        run("pce", str(root), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pth").exists()


def test_validation_scores_the_weight_average(tmp_path, phantom_root, monkeypatch):
    # Found by a mutation audit: validating the raw weights under --model_ema passed every test.
    seen, real = [], engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda model, *a, **k: seen.append(model) or real(model, *a, **k))
    run("pce", phantom_root, tmp_path / "run", "--model_ema", "0.9")
    assert seen and all(not any(p.requires_grad for p in m.parameters()) for m in seen)


def test_the_poly_schedule_at_half_the_run(tmp_path, phantom_root, monkeypatch):
    # --poly_power was checked but, ignored, no test failed (the lr is 0 at the end for any power).
    with pytest.raises(Interrupt):
        run("pce", phantom_root, tmp_path / "run", "--poly_power", "2", crash_after_first_save=True,
            monkeypatch=monkeypatch)  # not the default 0.9: a fixed power would pass too
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    assert ckpt["iteration"] == 2
    assert ckpt["optimizers"]["seg"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.5 ** 2)


def test_the_training_slices_are_augmented_as_the_flags_say(tmp_path, phantom_root, monkeypatch):
    import dataloaders.acdc

    seen, real = set(), dataloaders.acdc.augment
    monkeypatch.setattr(dataloaders.acdc, "augment",
                        lambda *a, **k: seen.add(a[-2:]) or real(*a, **k))
    run("pce", phantom_root, tmp_path / "run", "--aug_scale", "0.3", "--aug_intensity")
    assert seen == {(0.3, True)}


def test_the_step_scalars_are_logged_at_their_iteration_with_the_learning_rate():
    # A mutation audit found these unpinned: _log_scalars could write every train/* scalar at step 0,
    # or leave out train/lr, and every test passed (the curves plot_curves.py draws read these).
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    class Bar:
        def set_postfix(self, postfix, refresh):
            self.postfix = postfix

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizers = {"seg": torch.optim.SGD([weight], lr=0.005)}
    writer, bar = Writer(), Bar()
    logs = engine._log_scalars({"loss": torch.tensor(0.25), "pce": torch.tensor(0.5)}, writer, bar, optimizers, 30)
    assert logs == {"loss": 0.25, "pce": 0.5} and all(type(v) is float for v in logs.values())
    assert writer.scalars == [("train/loss", 0.25, 30), ("train/pce", 0.5, 30), ("train/lr", 0.005, 30)]
    assert bar.postfix == {"loss": "0.250", "pce": "0.500"}


def test_a_default_run_neither_zooms_nor_jitters(tmp_path, phantom_root):
    # A mutation audit found these unpinned: a default of --aug_scale 0.1 or --aug_intensity on changed
    # every run's augmentation (the literature's, WSL4MIS and the MaskMixAdv release) and every test passed.
    cfg = tiny_cfg(get_method("pce"), phantom_root, tmp_path / "run")
    assert cfg.aug_scale == 0.0 and cfg.aug_intensity is False
