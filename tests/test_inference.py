import dataclasses

import numpy as np
import pytest
import torch

import inference
from inference import Prediction, back_to_slice, predict_volume, resolve_amp


def test_scores_and_labels_come_back_differently_at_a_non_integer_ratio():
    # 2 -> 3 pixels along W. Bilinear source positions (align_corners=False) 0, 0.5, 1: class 1's
    # score 0, 0.5, 1 against class 0's 0.5, the tie going to class 0. Nearest-exact source
    # pixels floor((i + 0.5) * 2 / 3) = 0, 1, 1.
    scores = torch.tensor([[0.5, 0.5], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    assert back_to_slice(scores, (1, 3), "scores")[0, 0, 0].tolist() == [0, 0, 1]
    assert back_to_slice(scores, (1, 3), "labels")[0, 0, 0].tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="resize_back"):
        back_to_slice(scores, (1, 3), "nearest")


class Disc(torch.nn.Module):
    """(B, 1, h, w) -> (B, 2, h, w): class 1 where the image is bright, as smooth scores."""

    def forward(self, x):
        return torch.cat([torch.full_like(x, 0.5), x], 1)


def test_scores_keep_a_round_structure_round_at_low_resolution():
    # A disc of radius 20 on a 96x96 slice, segmented at 24x24: labels come back as 4x4 blocks,
    # scores as a smooth outline, closer to the true disc.
    yy, xx = np.mgrid[:96, :96]
    disc = ((yy - 47.5) ** 2 + (xx - 47.5) ** 2 < 20 ** 2)
    image = disc[None].astype(np.float32)
    dice = {}
    for mode in ("labels", "scores"):
        pred = predict_volume(Disc(), image, (24, 24), torch.device("cpu"), resize_back=mode)[0] == 1
        dice[mode] = 2 * (pred & disc).sum() / (pred.sum() + disc.sum())
    assert dice["scores"] > dice["labels"] + 0.005 and dice["scores"] > 0.975


def test_resolution_bound_labels_each_low_resolution_pixel_by_its_largest_share():
    from conftest import benchmark

    bound = benchmark("resolution_bound")
    label = np.zeros((1, 4, 4), np.uint8)
    label[0, :2, :2] = [[1, 1], [1, 0]]   # class 1 covers 3/4 of the top-left 2x2 cell
    label[0, 2:, 2:] = [[2, 3], [3, 0]]   # class 3 covers 2/4, class 2 and 0 a quarter each
    perfect = bound.perfect_at(label, (2, 2), "labels")
    assert perfect[0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 3, 3], [0, 0, 3, 3]]
    for mode in ("labels", "scores"):
        assert bound.perfect_at(label, (4, 4), mode).tolist() == label.tolist()


def test_resolution_bound_scores_the_data_roots_own_classes(lv_root, capsys):
    from conftest import benchmark

    # It scored classes 1..3 on any root: a one-class root's LV was printed as RV, and two absent
    # classes at Dice 1 lifted the mean (0.96 for 0.89), exit 0.
    benchmark("resolution_bound").main(["--root", lv_root, "--split", "test", "--sizes", "16"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("16x16")]
    assert len(lines) == 2 and all("RV" not in line and "MYO" not in line for line in lines)
    for line in lines:
        words = line.split()
        assert words[words.index("LV") + 1] == words[words.index("mean") + 1].rstrip(";")  # one class: the mean


def test_amp_auto_is_bf16_only_where_bf16_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    assert [resolve_amp(a, cpu) for a in ("auto", "off", "bf16", "fp16")] == ["off", "off", "bf16", "fp16"]
    monkeypatch.setattr(inference, "native_bf16", lambda device: True)
    assert resolve_amp("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="--amp must be one of auto, off, bf16, fp16, got 'half'"):
        resolve_amp("half", cpu)
    with pytest.raises(ValueError, match="amp must be off, bf16 or fp16, got 'auto'"):
        inference.autocast(cpu, "auto")  # unresolved, it would have meant fp16


def test_a_run_predicts_in_its_precision_only_where_the_device_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    assert [inference.predicting_amp(a, cpu) for a in ("off", "bf16", "fp16")] == ["off", "off", "off"]
    monkeypatch.setattr(inference, "native_bf16", lambda device: True)
    assert [inference.predicting_amp(a, cpu) for a in ("off", "bf16", "fp16")] == ["off", "bf16", "off"]


def test_native_bf16_follows_the_cpu_probes(monkeypatch):
    for amx, avx512_bf16 in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        assert inference.native_bf16(torch.device("cpu")) == (amx or avx512_bf16)
    assert not inference.native_bf16(torch.device("meta"))  # neither CPU nor CUDA: fp32, whatever the CPU has


def test_a_class_no_reference_volume_holds_is_refused(lv_root, tmp_path, capsys):
    import train
    from dataloaders import io

    cases = [io.read_case(lv_root, name) for name in io.list_cases(lv_root)[:2]]
    preds = {c.name: c.label for c in cases}
    assert inference.score_cases(preds, cases, 2)[cases[0].name][1]["dice"] == 1.0
    # Declared RV/MYO/LV on LV-only masks: two classes at Dice 1 in every volume lifted the mean.
    with pytest.raises(ValueError, match=f"label 2 occurs in none of the 2 reference volumes \\(e.g. {cases[0].name}\\)"):
        inference.score_cases(preds, cases, 4)
    inference.check_classes_present([], 4)  # nothing to score: left to summarize
    root = tmp_path / "declared_rv_myo_lv"
    for name in io.list_cases(lv_root):
        io.write_case(str(root), io.read_case(lv_root, name))
    with pytest.raises(SystemExit) as e:  # refused before the run folder exists, not at the first validation
        train.main(["--method", "pce", "--root_path", str(root), "--out_dir", str(tmp_path / "run"), "--no_progress"])
    # the training slices lack the class first (an untrainable class), the validation volumes too
    assert e.value.code == 2 and "class 2 (MYO) is labelled in none of the" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_prediction_settings_of_a_run_and_their_overrides():
    import argparse

    cpu = torch.device("cpu")
    cfg = argparse.Namespace(input_size=[96, 128], amp="bf16", channels_last=True, resize_back="labels",
                             postprocess="lcc", num_classes=2, target_spacing=None)
    assert Prediction.of(cfg, cpu) == Prediction((96, 128), cpu, "bf16", True, "labels", "lcc", 2)
    assert Prediction.of(cfg, cpu, "scores", "none") == Prediction((96, 128), cpu, "bf16", True, "scores", "none", 2)
    cfg.target_spacing = [1.5, 1.5]
    assert Prediction.of(cfg, cpu, tta=True) == Prediction((96, 128), cpu, "bf16", True, "labels", "lcc", 2, True,
                                                           (1.5, 1.5))


def test_an_anisotropic_slice_reaches_the_network_in_y_x_order():
    # A mutation audit found that (x, y) for (y, x) passed every test: all used square pixels, and
    # the wrong order is undone on the way back.
    from torch import nn

    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.cat([torch.full_like(x, 0.5), x], 1)

    # 80 rows of 0.5 mm by 40 columns of 1.0 mm: a 40 mm square holding a disc of radius 10 mm
    yy, xx = np.mgrid[:80, :40]
    disc = (((yy + 0.5) * 0.5 - 20) ** 2 + ((xx + 0.5) * 1.0 - 20) ** 2 < 100).astype(np.float32)
    predict_volume(Recorder(), disc[None], (48, 48), torch.device("cpu"), spacing=(5.0, 0.5, 1.0),
                   target_spacing=[1.0, 1.0])
    rows, cols = np.nonzero(seen[0][0, 0].numpy() > 0.5)
    assert np.ptp(rows) + 1 == pytest.approx(20, abs=2) and np.ptp(cols) + 1 == pytest.approx(20, abs=2)


def test_csv_rows_name_each_class_by_its_label():
    # A mutation audit found this unpinned: the per-volume CSV named the classes in reverse (LV's scores
    # under RV).
    from inference import table_rows

    scores = {"c1": {1: {"dice": 0.1, "hd95": 1.0, "asd": 1.0}, 2: {"dice": 0.2, "hd95": 2.0, "asd": 2.0},
                     3: {"dice": 0.3, "hd95": 3.0, "asd": 3.0}}}
    rows = {r["class"]: r["dice"] for r in table_rows(scores, ("RV", "MYO", "LV"))}
    assert rows == {"RV": 0.1, "MYO": 0.2, "LV": 0.3}


def test_volumes_numbered_otherwise_than_the_root_names_them_are_refused(phantom_root, tmp_path):
    # Found by a review: h5 volumes relabelled 1 <-> 3 and converted with --volumes trained and
    # were scored under the names RV MYO LV at exit 0; every validation and scoring reads them here.
    from dataloaders import io

    root = str(tmp_path / "root")
    case = io.read_case(phantom_root, io.list_cases(phantom_root)[0])
    io.write_case(root, dataclasses.replace(case, label=np.choose(case.label, [0, 3, 2, 1]).astype(np.uint8)))
    with pytest.raises(ValueError, match=rf"{case.name}.h5: the label's MYO \(class 2\) touches only \d+% of its "
                                         r"LV's \(class 3\) border.*as the data root names them \(1 RV, 2 MYO, 3 LV\)"):
        inference.reference_volumes(root, [case.name], 4)
    io.write_dataset_json(root, ("LV", "MYO", "RV"))  # numbered as it says
    assert len(inference.reference_volumes(root, [case.name], 4)) == 1

