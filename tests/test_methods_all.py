"""Every registered method trains on tiny phantoms, checkpoints, and is scored end to end."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

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
    assert 0 <= summary["dice"]["mean"] <= 1
    assert json.loads((tmp_path / "r.json").read_text())["n_volumes"] == 2
    nii = sorted((tmp_path / "nii").iterdir())
    assert len(nii) == 2
    spacing = sitk.ReadImage(str(nii[0])).GetSpacing()
    assert all(s > 0.5 for s in spacing) and spacing != (1.0, 1.0, 1.0)


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
    old = argparse.Namespace(**{k: v for k, v in vars(cfg).items() if k not in ("upsampling", "head_kernel")})
    assert nn.ConvTranspose2d in {type(m) for m in cls(old).modules()}
    assert {m.head.kernel_size for m in cls(old).modules() if hasattr(m, "head")} == {(1, 1)}
