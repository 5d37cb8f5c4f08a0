import re

import numpy as np
import pytest
import torch
from scipy import ndimage

from dataloaders.acdc import SliceDataset, dense_training_cases, fold_split, labeled_patients
from dataloaders import io
from dataloaders.io import UNLABELED
from dataloaders.points import PointCache, point_labels


def rings(n=64):
    """Background, an LV disk of radius 10, a MYO ring 10..16, an RV box."""
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - 32, xx - 40)
    label = np.zeros((n, n), np.uint8)
    label[r < 16] = 2
    label[r < 10] = 3
    label[20:44, 6:18] = 1
    return label


def test_points_lie_inside_each_structure_away_from_its_border():
    label = rings()
    pts = point_labels(label, k=3, seed=0)
    assert pts.dtype == np.uint8 and set(np.unique(pts)) == {0, 1, 2, 3, UNLABELED}
    for c in range(4):
        ys, xs = np.nonzero(pts == c)
        assert len(ys) == 3
        assert (label[ys, xs] == c).all()
        dist = ndimage.distance_transform_edt(np.pad(label == c, 1, mode="edge"))[1:-1, 1:-1]
        assert (dist[ys, xs] >= dist.max() / 2).all()
    # LV disk of radius 10: inner half = within ~5 px of the centre (32, 40)
    ys, xs = np.nonzero(pts == 3)
    assert (np.hypot(ys - 32, xs - 40) <= 5.5).all()
    # MYO ring 10..16: points at least 1 px from both of its borders
    ys, xs = np.nonzero(pts == 2)
    assert (np.abs(np.hypot(ys - 32, xs - 40) - 13) <= 2).all()


def test_points_are_seeded():
    label = rings()
    assert np.array_equal(point_labels(label, seed=1), point_labels(label, seed=1))
    assert not np.array_equal(point_labels(label, seed=1), point_labels(label, seed=2))


def test_absent_classes_small_structures_and_bad_input():
    label = np.zeros((8, 8), np.uint8)
    label[3, 3] = 3  # a one-pixel structure: its only pixel
    pts = point_labels(label, k=3)
    assert pts[3, 3] == 3 and (pts == 0).sum() == 3 and not np.isin(pts, [1, 2]).any()
    with pytest.raises(ValueError, match="0..3"):
        point_labels(label + 4)
    with pytest.raises(ValueError, match="k must"):
        point_labels(label, k=0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        point_labels(label[None])


def test_point_cache(tmp_path):
    label = rings()
    cache = PointCache(str(tmp_path), k=2, seed=5)
    a = cache.get("s_0", label)
    assert np.array_equal(a, point_labels(label, 2, 5)) and cache.cached("s_0", label)
    assert not PointCache(str(tmp_path), k=3, seed=5).cached("s_0", label)


def test_points_sup_type_in_the_dataset(phantom_root):
    split = fold_split(io.list_cases(phantom_root), "fold1")
    ds = SliceDataset(phantom_root, split.train[:2], "points", (32, 32), progress=False)
    for t in ds.targets:
        assert ((t != UNLABELED).sum() <= 12) and (np.bincount(t.ravel(), minlength=5)[:4] <= 3).all()
    assert ds.target_kind(0) == (UNLABELED, True)
    nearest = SliceDataset(phantom_root, split.train[:2], "points", (32, 32), progress=False, keep_points=False)
    assert nearest.target_kind(0) == (UNLABELED, False)


def test_labeled_patients_choice_is_seeded_nested_and_checked():
    cases = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 21) for f in (1, 12)]
    four = labeled_patients(cases, 4, seed=2022)
    assert four == labeled_patients(cases, 4, seed=2022) and len(four) == 4
    assert set(labeled_patients(cases, 1, 2022)) <= set(four) <= set(labeled_patients(cases, 8, 2022))
    assert four != labeled_patients(cases, 4, seed=1)
    assert labeled_patients(cases, 0, 2022) == []
    with pytest.raises(ValueError, match="--labeled_patients"):
        labeled_patients(cases, 21, 2022)
    train, dense = dense_training_cases(cases, "scribble", 4, 2022)
    assert train == cases and sorted({io.patient_of(c) for c in dense}) == four and len(dense) == 8
    train, dense = dense_training_cases(cases, "label", 4, 2022)
    assert sorted({io.patient_of(c) for c in train}) == four and dense == []
    assert dense_training_cases(cases, "label", 0, 2022) == (cases, [])


def test_labeled_patients_follow_the_roots_patient_pattern(phantom_root, tmp_path):
    # Cases were once their own patients whatever dataset.json's patient_pattern said:
    # --labeled_patients 1 gave one frame of a patient its dense mask and left the other scribbled.
    import json

    from conftest import tiny_cfg
    from engine import train
    from methods import get_method

    root = tmp_path / "root"
    for name in io.list_cases(phantom_root):
        case = io.read_case(phantom_root, name)
        patient, frame = name.split("_")
        case.name = f"sub{int(patient[7:])}_{'ED' if frame == 'frame01' else 'ES'}"
        io.write_case(str(root), case)
    io.write_dataset_json(str(root), io.CLASS_NAMES, patient_pattern=r"(sub\d+)_")
    cases = io.list_cases(str(root))
    train_cases, dense = dense_training_cases(cases, "scribble", 2, 0, r"(sub\d+)_")
    assert len(dense) == 4 and len({c.split("_")[0] for c in dense}) == 2
    pce = get_method("fully")
    train(tiny_cfg(pce, str(root), tmp_path / "run", "--labeled_patients", "1", "--sup_type", "label",
                   "--max_iterations", "2"), pce)
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert re.fullmatch(r"sub\d+", saved["labeled_patient_ids"][0])
    assert "split fold1: 2 train" in open(tmp_path / "run" / "log.txt").read()
    # A run whose dense cases were chosen the old way is not resumed with other ones.
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    ckpt["config"]["labeled_patient_ids"] = [f"{saved['labeled_patient_ids'][0]}_ED"]
    torch.save(ckpt, tmp_path / "run" / "last.pth")
    with pytest.raises(ValueError, match="--resume: the dense patients sub.* differ from those"):
        train(tiny_cfg(pce, str(root), tmp_path / "run", "--labeled_patients", "1", "--sup_type", "label",
                       "--max_iterations", "2", "--resume"), pce)


def test_dense_cases_train_on_their_masks(phantom_root):
    split = fold_split(io.list_cases(phantom_root), "fold1")
    ds = SliceDataset(phantom_root, split.train[:2], "scribble", (32, 32), progress=False,
                      dense_cases=split.train[:1])
    n0 = io.num_slices(phantom_root, split.train[0])
    first = io.read_case(phantom_root, split.train[0])
    assert np.array_equal(ds.targets[0], first.label[0]) and ds.target_kind(0) == (0, False)
    second = io.read_case(phantom_root, split.train[1])
    assert np.array_equal(ds.targets[n0], second.scribble[0]) and ds.target_kind(n0) == (UNLABELED, False)


def test_labeled_patients_are_logged_and_saved_in_the_config(phantom_root, tmp_path):
    import json

    from conftest import tiny_cfg
    from engine import train
    from methods import get_method

    pce = get_method("pce")
    cfg = tiny_cfg(pce, phantom_root, tmp_path / "run", "--labeled_patients", "1", "--max_iterations", "2",
                   "--sup_type", "points")
    train(cfg, pce)
    saved = json.load(open(tmp_path / "run" / "config.json"))
    split = fold_split(io.list_cases(phantom_root), "fold1")
    assert saved["labeled_patients"] == 1
    assert saved["labeled_patient_ids"] == labeled_patients(split.train, 1, cfg.seed)
    log = open(tmp_path / "run" / "log.txt").read()
    assert f"dense masks for 1 training patients (--labeled_patients): {saved['labeled_patient_ids'][0]}" in log
    m = re.search(r"supervision points: (\d+) of (\d+) training pixels labelled \(.*%\), (\d+) drawn", log)
    assert m and 0 < int(m[1]) < int(m[2]) and 0 < int(m[3]) < int(m[1])


def test_point_cache_is_keyed_by_its_seed():
    # A mutation audit found this unpinned: the cache digest left out the seed: points drawn with seed 5
    # were served for seed 6.
    from dataloaders.points import PointCache

    label = np.zeros((32, 32), np.int64)
    label[8:24, 8:24] = 3
    a, b = PointCache("x", k=2, seed=5), PointCache("x", k=2, seed=6)
    assert a.digest(label) != b.digest(label)


def test_point_cache_serves_each_seed_its_own_points(tmp_path):
    # End to end: a cache built with seed 5 must not answer for seed 6.
    from dataloaders.points import PointCache, point_labels

    label = np.zeros((32, 32), np.int64)
    label[4:28, 4:28] = 2
    label[10:22, 10:22] = 3
    PointCache(str(tmp_path), k=3, seed=5).get("s_0", label)
    other = PointCache(str(tmp_path), k=3, seed=6)
    assert not other.cached("s_0", label)
    assert np.array_equal(other.get("s_0", label), point_labels(label, 3, 6))


def test_dense_slices_of_a_points_run_are_resized_as_masks(phantom_root):
    # A mutation audit found this unpinned: a points run's dense slices (--labeled_patients) were resized
    # with keep_points, which on a mask (fill 0) paints every structure pixel onto background pixels:
    # structures grew.
    from dataloaders import io
    from dataloaders.acdc import SliceDataset, fold_split

    split = fold_split(io.list_cases(phantom_root), "fold1")
    ds = SliceDataset(phantom_root, split.train[:2], "points", (32, 32), progress=False,
                      dense_cases=split.train[:1])
    n0 = io.num_slices(phantom_root, split.train[0])
    assert ds.target_kind(0) == (0, False)
    assert ds.target_kind(n0) == (io.UNLABELED, True)
