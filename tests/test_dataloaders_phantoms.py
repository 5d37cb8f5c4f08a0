import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from dataloaders.io import SLICE_DIR, UNLABELED, VOLUME_DIR, list_cases, read_case, read_h5, slice_path
from dataloaders.intensity import normalise_intensity
from dataloaders.phantoms import render_labels, render_patient, write_phantoms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("phantom"))
    write_phantoms(out, 3, seed=7, size=SIZE)
    return out


def test_layout_names_dtypes_shapes(root):
    cases = list_cases(root)
    assert len(cases) == 6
    for p in range(3):
        pc = [c for c in cases if c.startswith(f"patient{p + 1:03d}_")]
        assert pc[0].endswith("frame01") and 8 <= int(pc[1][-2:]) <= 15
    for c in cases:
        k = read_case(root, c)
        assert k.image.dtype == np.float32 and k.label.dtype == np.uint8 and k.scribble.dtype == np.uint16
        assert k.image.shape == k.label.shape == k.scribble.shape
        assert 6 <= k.image.shape[0] <= 12 and k.image.shape[1:] == (SIZE, SIZE)
        assert k.image.min() == 0.0 and k.image.max() == 1.0
        assert set(np.unique(k.label)) <= {0, 1, 2, 3}
        assert set(np.unique(k.scribble)) <= {0, 1, 2, 3, UNLABELED}
        sc = k.scribble < UNLABELED
        assert np.array_equal(k.scribble[sc], k.label[sc])
        dz, dy, dx = k.spacing
        assert 5 <= dz <= 10 and dy == dx and 180 / SIZE <= dy <= 225 / SIZE


def test_slice_files_equal_volume(root):
    for c in list_cases(root):
        vol = read_h5(os.path.join(root, VOLUME_DIR, f"{c}.h5"))
        for z in range(vol["image"].shape[0]):
            s = read_h5(slice_path(root, c, z))
            for key in ("image", "label", "scribble"):
                assert s[key].dtype == vol[key].dtype and np.array_equal(s[key], vol[key][z])
    n = sum(read_case(root, c).image.shape[0] for c in list_cases(root))
    assert len(os.listdir(os.path.join(root, SLICE_DIR))) == n


def test_anatomy(root):
    cases = list_cases(root)
    for ed, es in zip(cases[::2], cases[1::2]):
        a, b = read_case(root, ed), read_case(root, es)
        mid = a.label.shape[0] // 2
        for k in (a, b):
            assert set(np.unique(k.label[mid])) == {0, 1, 2, 3}  # all classes in a mid slice
            # bright blood pool inside a darker myocardium
            assert k.image[k.label == 3].mean() > k.image[k.label == 2].mean() + 0.15
            assert k.image[k.label == 1].mean() > k.image[k.label == 2].mean() + 0.1
            # the heart shrinks toward the apex, the RV disappears before the LV
            areas = (k.label > 0).sum(axis=(1, 2))
            assert areas[-1] < areas[mid] and (k.label[-1] == 1).sum() < (k.label[mid] == 1).sum()
        assert (b.label == 3).sum() < 0.85 * (a.label == 3).sum()  # ES cavity smaller
        myo_ed = (a.label == 2).sum() / (a.label == 3).sum()
        assert (b.label == 2).sum() / (b.label == 3).sum() > myo_ed  # ES wall relatively thicker


def test_deterministic_and_seed_dependent():
    a, ra = render_patient(0, 3, 40)
    b, rb = render_patient(0, 3, 40)
    c, _ = render_patient(0, 4, 40)
    for x, y in zip(a, b):
        assert x.name == y.name and x.spacing == y.spacing
        for k in ("image", "label", "scribble"):
            assert np.array_equal(getattr(x, k), getattr(y, k))
    assert all(np.array_equal(x, y) for x, y in zip(ra, rb))
    assert not np.array_equal(a[0].image[:3], c[0].image[:3])
    # the raw volume is int16 in an MR-like range and normalises to the stored image
    assert ra[0].dtype == np.int16 and 100 < ra[0].max() < 2000 and ra[0].min() >= 0
    assert np.array_equal(normalise_intensity(ra[0]), a[0].image)


def test_labels_alone_are_the_patients_labels():
    # The phantom shape prior renders only labels (3 s of images at every MaskMixAdv start before).
    for index, seed in ((0, 3), (7, 11)):
        cases, _ = render_patient(index, seed, 40)
        frames = render_labels(index, seed, 40)
        assert len(frames) == 2 and {c.label.max() for c in cases} == {3}
        for case, (labels, spacing) in zip(cases, frames):
            assert labels.dtype == np.uint8 and np.array_equal(labels, case.label) and spacing == case.spacing


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "code", "make_phantoms.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_writes_raw_tree_and_keeps_other_files(tmp_path):
    out, raw = tmp_path / "out", tmp_path / "raw"
    (out / VOLUME_DIR).mkdir(parents=True)
    (out / "notes.txt").write_text("keep")
    r = run_cli("--out", str(out), "--patients", "1", "--seed", "2", "--size", "32", "--raw", str(raw))
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "keep"
    names = sorted(os.listdir(raw / "patient001"))
    assert names[0] == "Info.cfg" and len(names) == 5 and names[1] == "patient001_frame01.nii.gz"
    with h5py.File(out / VOLUME_DIR / "patient001_frame01.h5") as f:
        assert f["image"].shape[1:] == (32, 32)


def test_cli_refuses_to_mix_with_earlier_data_and_overwrite_replaces_it(tmp_path):
    # 3 patients at 64 px, then 2 at 32 px: patient003 and the 64 px files stayed beside the new ones
    out, raw = tmp_path / "out", tmp_path / "raw"
    assert run_cli("--out", str(out), "--raw", str(raw), "--patients", "3", "--size", "64").returncode == 0
    (out / "random_walker_cache").mkdir()
    (out / "random_walker_cache" / "a.npz").write_text("cache")
    before = sorted(os.listdir(out / VOLUME_DIR))
    r = run_cli("--out", str(out), "--raw", str(raw), "--patients", "2", "--seed", "1", "--size", "32")
    assert r.returncode == 2 and f"--out {out} already holds data" in r.stderr.strip().splitlines()[-1]
    assert sorted(os.listdir(out / VOLUME_DIR)) == before
    r = run_cli("--out", str(tmp_path / "new"), "--raw", str(raw), "--patients", "1", "--size", "32")
    assert r.returncode == 2 and f"--raw {raw} already holds data (patient001" in r.stderr
    r = run_cli("--out", str(out), "--raw", str(raw), "--patients", "2", "--seed", "1", "--size", "32", "--overwrite")
    assert r.returncode == 0, r.stderr
    cases = list_cases(str(out))
    assert len(cases) == 4 and {read_case(str(out), c).image.shape[1] for c in cases} == {32}
    n = sum(read_case(str(out), c).image.shape[0] for c in cases)
    assert len(os.listdir(out / SLICE_DIR)) == n
    assert sorted(os.listdir(raw)) == ["patient001", "patient002"]
    assert (out / "random_walker_cache" / "a.npz").read_text() == "cache"
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"]


def test_rerun_with_other_seed_leaves_no_stale_files(tmp_path):
    write_phantoms(str(tmp_path), 2, seed=0, size=32)
    (tmp_path / VOLUME_DIR / "patient009_frame01.h5").write_bytes(b"other")  # not regenerated: kept
    write_phantoms(str(tmp_path), 2, seed=5, size=32)
    cases = [c for c in list_cases(str(tmp_path)) if c != "patient009_frame01"]
    assert len(cases) == 4
    n = sum(read_case(str(tmp_path), c).image.shape[0] for c in cases)
    assert len(os.listdir(tmp_path / SLICE_DIR)) == n
    assert (tmp_path / VOLUME_DIR / "patient009_frame01.h5").read_bytes() == b"other"


def test_cli_figure(tmp_path):
    r = run_cli("--figure", str(tmp_path / "f.png"), "--size", "32")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, flag", [(["--patients", "0"], "--patients"),
                                        (["--size", "8"], "--size"), (["--seed", "-1"], "--seed")])
def test_cli_bad_input(tmp_path, args, flag):
    r = run_cli("--out", str(tmp_path / "o"), *args)
    assert r.returncode != 0 and flag in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_cli_needs_out_or_figure(tmp_path):
    r = run_cli("--patients", "1")
    assert r.returncode == 2 and "--out" in r.stderr.strip().splitlines()[-1]
    f = tmp_path / "file"
    f.write_text("x")
    r = run_cli("--out", str(f))
    assert r.returncode == 2 and str(f) in r.stderr.strip().splitlines()[-1]


def test_cli_refuses_nested_trees_and_an_existing_figure(tmp_path):
    # --out X --raw X --overwrite replaced the h5 layout, then failed on the raw tree: the two
    # trees no longer matched and the old patients were gone.
    same = tmp_path / "same"
    assert run_cli("--out", str(same), "--raw", str(same), "--patients", "1", "--size", "32").returncode == 2
    for out, raw in ((same, same), (same, same / "raw"), (same / "h5", same)):
        r = run_cli("--out", str(out), "--raw", str(raw), "--patients", "1", "--size", "32", "--overwrite")
        assert r.returncode == 2 and "must be separate folders, neither inside the other" in r.stderr
    assert not same.exists()
    (tmp_path / "keep.png").write_bytes(b"mine")
    r = run_cli("--figure", str(tmp_path / "keep.png"))
    assert r.returncode == 2 and "keep.png exists; pass --overwrite" in r.stderr
    assert (tmp_path / "keep.png").read_bytes() == b"mine"


