"""Every registered method trains on tiny phantoms, checkpoints, and is scored end to end."""
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

import checkpoint
import engine
import test_2D_fully
from conftest import tiny_cfg
from methods import METHODS

FAST = {"maskmixadv": ("--disc_ndf", "8")}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_and_is_scored(name, phantom_root, tmp_path):
    method_cls = METHODS[name]
    out = tmp_path / "run"
    cfg = tiny_cfg(method_cls, phantom_root, out, "--patch_size", "64", "64", "--max_iterations", "20",
                   "--val_interval", "10", *FAST.get(name, ()))
    best = engine.train(cfg, method_cls)
    assert np.isfinite(best["dice"])
    log = (out / "log.txt").read_text()
    assert "iteration 20:" in log and "non-finite" not in log
    summary = test_2D_fully.main(["--root_path", phantom_root, "--model_dir", str(out),
                                  "--checkpoint", "last", "--out_json", str(tmp_path / "r.json"),
                                  "--save_nii", str(tmp_path / "nii")])
    assert json.loads((tmp_path / "r.json").read_text())["n_volumes"] == 2
    # The summary is the mean over the per-volume rows of the CSV, and the mean of its classes.
    rows = list(csv.DictReader(open(test_2D_fully.csv_path(str(tmp_path / "r.json")))))
    for c in ("RV", "MYO", "LV"):
        assert summary["dice"][c] == pytest.approx(np.mean([float(r["dice"]) for r in rows if r["class"] == c]))
    assert summary["dice"]["mean"] == pytest.approx(np.mean([summary["dice"][c] for c in ("RV", "MYO", "LV")]))
    nii = sorted((tmp_path / "nii").iterdir())
    assert len(nii) == 2
    spacing = sitk.ReadImage(str(nii[0])).GetSpacing()
    assert all(s > 0.5 for s in spacing) and spacing != (1.0, 1.0, 1.0)


def test_model_ema_averages_weights_and_batch_norm_statistics_and_is_what_predicts(phantom_root, tmp_path):
    import torch
    from torch import nn

    cfg = tiny_cfg(METHODS["pce"], phantom_root, tmp_path, "--model_ema", "0.9")
    method = METHODS["pce"](cfg)
    assert method.segmenter() is method.average
    assert not any(p.requires_grad for p in method.average.parameters())
    w, a = next(method.net.parameters()), next(method.average.parameters())
    bn_net, bn_avg = ([m for m in net.modules() if isinstance(m, nn.BatchNorm2d)][0]
                      for net in (method.net, method.average))
    with torch.no_grad():
        w.fill_(1.0)
        bn_net.running_mean.fill_(2.0)
        bn_net.num_batches_tracked.fill_(7)
    method.update_average(1)  # decay min(1 - 1/1, 0.9) = 0: the average is the network
    assert torch.equal(a, w) and torch.equal(bn_avg.running_mean, bn_net.running_mean)
    assert bn_avg.num_batches_tracked == 7
    with torch.no_grad():
        w.fill_(3.0)
        bn_net.running_mean.fill_(4.0)
    method.update_average(2)  # decay 1/2: the mean of the two steps
    assert torch.allclose(a, torch.full_like(a, 2.0)) and torch.allclose(bn_avg.running_mean, torch.tensor(3.0))
    method.update_average(100)  # decay 0.9: 0.9 * 2 + 0.1 * 3
    assert torch.allclose(a, torch.full_like(a, 2.1))
    assert {id(p) for p in method.average.parameters()}.isdisjoint(
        id(p) for g in method.configure_optimizers()["seg"].param_groups for p in g["params"])
    mmx = METHODS["maskmixadv"](tiny_cfg(METHODS["maskmixadv"], phantom_root, tmp_path, "--model_ema", "0.9",
                                         *FAST["maskmixadv"]))
    assert {id(p) for p in mmx.average.parameters()}.isdisjoint(
        id(p) for g in mmx.configure_optimizers()["seg"].param_groups for p in g["params"])
    off = METHODS["pce"](tiny_cfg(METHODS["pce"], phantom_root, tmp_path))
    assert off.average is None and off.segmenter() is off.net
    assert not any(k.startswith("average.") for k in off.state_dict())
    for bad in ("1", "-0.1"):
        with pytest.raises(ValueError, match=r"--model_ema must lie in \[0, 1\)"):
            tiny_cfg(METHODS["pce"], phantom_root, tmp_path, "--model_ema", bad)


@pytest.mark.parametrize("name", ["pce", "dmpls", "maskmixadv"])
def test_decoder_flags_reach_the_network(name, phantom_root, tmp_path):
    import argparse

    from torch import nn

    cls = METHODS[name]
    cfg = tiny_cfg(cls, phantom_root, tmp_path / "run", "--upsampling", "bilinear", "--head_kernel", "3")
    method = cls(cfg)
    kinds = {type(m) for m in method.modules()}
    assert nn.Upsample in kinds and nn.ConvTranspose2d not in kinds
    heads = [m.head.kernel_size for m in method.modules() if hasattr(m, "head")]
    assert heads and set(heads) == {(3, 3)}
    # A config saved before the flags existed builds the transposed convolutions and 1x1 heads it trained.
    saved = {k: v for k, v in vars(cfg).items() if k not in ("upsampling", "head_kernel")}
    old = argparse.Namespace(**checkpoint.with_defaults(saved, cls))
    assert nn.ConvTranspose2d in {type(m) for m in cls(old).modules()}
    assert {m.head.kernel_size for m in cls(old).modules() if hasattr(m, "head")} == {(1, 1)}
