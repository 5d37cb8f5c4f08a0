import pytest
import torch

import checkpoint
import engine
import inference
from conftest import tiny_cfg
from methods import get_method
from test_engine import run


def test_load_method_restores_the_segmenter(tmp_path, phantom_root):
    ckpt = run("pce", phantom_root, tmp_path)
    method, cfg = checkpoint.load_method(str(tmp_path / "last.pth"), torch.device("cpu"))
    assert cfg.method == "pce" and not method.training
    assert torch.equal(method.state_dict()["net.decoder.head.weight"], ckpt["model"]["net.decoder.head.weight"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        checkpoint.load_method(str(tmp_path / "nope.pth"), torch.device("cpu"))


@pytest.mark.parametrize("native, predicts", [(False, "off"), (True, "bf16")])
def test_a_bf16_run_predicts_in_fp32_where_bf16_is_emulated(native, predicts, tmp_path, phantom_root, monkeypatch):
    run("pce", phantom_root, tmp_path, "--max_iterations", "1")
    ckpt = torch.load(tmp_path / "last.pth", weights_only=False)
    monkeypatch.setattr(inference, "native_bf16", lambda device: native)
    assert checkpoint.method_from_checkpoint(ckpt, torch.device("cpu"))[1].amp == "off"
    ckpt["config"]["amp"] = "bf16"
    assert checkpoint.method_from_checkpoint(ckpt, torch.device("cpu"))[1].amp == predicts


def test_a_model_with_non_finite_weights_is_never_written(tmp_path, phantom_root):
    method_cls = get_method("pce")
    cfg = tiny_cfg(method_cls, phantom_root, tmp_path)
    method = method_cls(cfg)
    opts = method.configure_optimizers()
    state = engine.TrainState(cfg, torch.device("cpu"), opts)
    with torch.no_grad():
        method.net.decoder.head.bias[0] = float("inf")
    with pytest.raises(FloatingPointError, match="net.decoder.head.bias holds NaN or inf"):
        checkpoint.save_checkpoint(str(tmp_path / "x.pth"), cfg, method, opts, {}, state, {})
    assert not (tmp_path / "x.pth").exists()


def test_foreign_or_damaged_checkpoints_are_one_line_errors(tmp_path, phantom_root):
    run("pce", phantom_root, tmp_path)
    data = (tmp_path / "last.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="cut.pth: not a readable checkpoint"):
        checkpoint.load_method(str(tmp_path / "cut.pth"), torch.device("cpu"))
    torch.save(torch.load(tmp_path / "last.pth", weights_only=False)["model"], tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="bare.pth: not a checkpoint of this project .*bare state_dict"):
        checkpoint.load_method(str(tmp_path / "bare.pth"), torch.device("cpu"))


def test_checkpoints_with_non_finite_or_changed_weights_are_refused(tmp_path, phantom_root):
    run("pce", phantom_root, tmp_path)
    ckpt = torch.load(tmp_path / "last.pth", weights_only=False)
    name = next(k for k, t in ckpt["model"].items() if t.is_floating_point())
    changed = {**ckpt, "model": {**ckpt["model"], name: ckpt["model"][name].clone()}}
    changed["model"][name].view(-1)[0] += 1e-3  # a damaged byte: torch.load does not notice
    torch.save(changed, tmp_path / "changed.pth")
    with pytest.raises(ValueError, match="changed.pth: damaged checkpoint"):
        checkpoint.read_checkpoint(str(tmp_path / "changed.pth"))
    del changed["model_sha256"]  # written before the digest existed: read, as before
    torch.save(changed, tmp_path / "old.pth")
    checkpoint.read_checkpoint(str(tmp_path / "old.pth"))
    changed["model"][name].view(-1)[0] = float("nan")
    torch.save(changed, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=f"nan.pth: weight {name} holds NaN or inf"):
        checkpoint.read_checkpoint(str(tmp_path / "nan.pth"))
    torch.save({**changed, "model": [1, 2]}, tmp_path / "module.pth")  # e.g. a pickled module
    with pytest.raises(ValueError, match="module.pth: its model is a list, not a state_dict"):
        checkpoint.read_checkpoint(str(tmp_path / "module.pth"))


def test_check_unseen_refuses_seen_cases_and_other_validation_cases():
    ckpt = {"split": {"train": ["a"], "val": ["b"], "test": ["c"]}}
    checkpoint.check_unseen(ckpt, ["c"], "x.pth")
    checkpoint.check_unseen(ckpt, ["b"], "x.pth", "val")
    for cases, part, message in [(["a", "c"], "test", "x.pth trained on 1 of the 2 cases"),
                                 (["b"], "test", "x.pth chose its model on 1 of the 1 cases"),
                                 # an edited splits.json: every scoring tool's --on / --split val
                                 (["d"], "val", "x.pth chose its model on other validation cases than the 1 to score "
                                                "(e.g. b)")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            checkpoint.check_unseen(ckpt, cases, "x.pth", part)
    with pytest.raises(ValueError, match="fine-tuned by refine.py on s.nii.gz"):
        checkpoint.check_unseen({**ckpt, "refined_from": "run.pth", "refined_on": "s.nii.gz"}, ["c"], "x.pth")


def test_weights_digest_covers_the_tensor_names():
    # A mutation audit found this unpinned: the digest hashed only the bytes: a renamed tensor kept its
    # digest.
    from checkpoint import weights_digest

    t = torch.arange(6.0)
    assert weights_digest({"a.weight": t}) != weights_digest({"b.weight": t})


def test_complete_setting_keeps_the_world_size_and_drops_data_digests():
    # A mutation audit found this unpinned: world_size forced to 1; ck5: data digests kept, so folds never
    # matched.
    from checkpoint import complete_setting

    s = complete_setting("pce", {"world_size": 2, "train_data_sha256": "ab", "val_data_sha256": "cd"})
    assert s["world_size"] == 2
    assert not [k for k in s if k.endswith("_data_sha256")]
    assert complete_setting("pce", {})["world_size"] == 1


def test_scoring_val_needs_exactly_the_cases_the_model_was_chosen_on():
    # A mutation audit found this unpinned: a subset of the validation cases passed
    # check_unseen(part='val').
    from checkpoint import check_unseen

    ckpt = {"split": {"train": ["t1"], "val": ["v1", "v2"], "test": ["s1"]}}
    check_unseen(ckpt, ["v2", "v1"], "run.pth", "val")
    with pytest.raises(ValueError, match="chose its model on other validation cases"):
        check_unseen(ckpt, ["v1"], "run.pth", "val")


def test_stopped_early_reads_the_last_checkpoint_of_the_run_folder(tmp_path, monkeypatch):
    # A mutation audit found these unpinned: abspath in place of realpath looked for last.pth beside a
    # link, not in the run folder it points into, so a linked best.pth of a stopped run passed as
    # finished; and a bound of max_iterations - 1 passed a run stopped one iteration short.
    import json
    import os

    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda p: json.loads(open(p).read()))
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pth").write_text(json.dumps({"iteration": 2, "config": {"max_iterations": 4}}))
    (tmp_path / "linked").mkdir()
    os.symlink(run / "best.pth", tmp_path / "linked" / "best.pth")
    for iteration, stopped in [(3, (3, 4)), (4, None)]:
        (run / "last.pth").write_text(json.dumps({"iteration": iteration, "config": {"max_iterations": 4}}))
        assert checkpoint.stopped_early(str(run / "best.pth")) == stopped
        assert checkpoint.stopped_early(str(tmp_path / "linked" / "best.pth")) == stopped
    (run / "last.pth").unlink()
    assert checkpoint.stopped_early(str(run / "best.pth")) is None  # a checkpoint copied alone: unknown
