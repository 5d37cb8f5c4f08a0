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
