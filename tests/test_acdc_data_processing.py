import gzip
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import acdc_data_processing as adp
from dataloaders.io import (SLICE_DIR, UNLABELED, VOLUME_DIR, list_cases, num_slices, read_case, read_h5, slice_path,
                            volume_path, write_h5)
from dataloaders.phantoms import write_phantoms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Two tiny phantom patients as h5 (the truth) and as a raw ACDC NIfTI tree."""
    d = tmp_path_factory.mktemp("acdc")
    write_phantoms(str(d / "truth"), 2, seed=11, size=48, raw=str(d / "raw"))
    return d


@pytest.fixture(scope="module")
def nifti_src(phantom, tmp_path_factory):
    """The raw phantom frames as a ``--nifti`` data set: SRC/train/{images,labels}/."""
    src = tmp_path_factory.mktemp("nifti_src")
    for sub in ("images", "labels"):
        (src / "train" / sub).mkdir(parents=True)
    for image, mask in adp.find_raw_cases(str(phantom / "raw")).values():
        shutil.copy(image, src / "train" / "images")
        shutil.copy(mask, src / "train" / "labels")
    return src


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "code", "acdc_data_processing.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_find_raw_cases_skips_4d_and_cfg(phantom, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    (raw / "patient001" / "patient001_4d.nii.gz").write_bytes(b"x")
    cases = adp.find_raw_cases(str(raw))
    assert len(cases) == 4 and all(c.startswith("patient00") for c in cases)
    img, gt = cases["patient001_frame01"]
    assert img.endswith("patient001_frame01.nii.gz") and gt.endswith("patient001_frame01_gt.nii.gz")


def test_a_frame_found_twice_under_raw_is_refused(phantom, tmp_path):
    # A copy in another patient* folder replaced the image silently (paired with the other's mask).
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    (raw / "patient001_old").mkdir()
    other = next(f for f in sorted(os.listdir(raw / "patient001")) if "frame01" not in f and "_gt" not in f)
    shutil.copy(raw / "patient001" / other, raw / "patient001_old" / "patient001_frame01.nii.gz")
    r = run("--raw", str(raw), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "patient001_frame01's image is there twice" in r.stderr
    assert "patient001_old/patient001_frame01.nii.gz; remove one" in r.stderr and not (tmp_path / "out").exists()


def test_one_scan_under_two_case_names_is_refused(phantom, tmp_path):
    # A frame copied into another patient as a new frame was converted twice: it could be trained
    # on and tested.
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    shutil.copy(raw / "patient001" / "patient001_frame01.nii.gz", raw / "patient002" / "patient002_frame07.nii.gz")
    r = run("--raw", str(raw), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "patient001_frame01.nii.gz and " in r.stderr
    assert "are the same file: one scan under two case names" in r.stderr and not (tmp_path / "out").exists()


def test_one_mask_copied_to_another_frame_is_refused(phantom, tmp_path):
    # The ED mask copied over the ES one: the ES frame was scored against the ED truth at exit 0.
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    masks = sorted(f for f in os.listdir(raw / "patient002") if f.endswith("_gt.nii.gz"))
    shutil.copy(raw / "patient002" / masks[0], raw / "patient002" / masks[1])
    r = run("--raw", str(raw), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and f"{masks[1]} are the same file: one mask for two cases" in r.stderr
    assert not (tmp_path / "out").exists()


def test_raw_reads_nii_and_capitals(phantom, tmp_path):
    # patient002 as .nii / .NII.GZ: its frames were skipped ("2 of 2 cases written", exit 0)
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    folder = raw / "patient002"
    for f in sorted(os.listdir(folder)):
        if f.endswith("_gt.nii.gz"):
            (folder / f[:-3]).write_bytes(gzip.decompress((folder / f).read_bytes()))
            os.remove(folder / f)
        elif f.endswith(".nii.gz"):
            os.rename(folder / f, folder / (f[:-7] + ".NII.GZ"))
    cases = adp.find_raw_cases(str(raw))
    assert len(cases) == 4 and all(img and gt for img, gt in cases.values())
    r = run("--raw", str(raw), "--out", str(tmp_path / "out"))
    assert r.returncode == 0 and "4 of 4 cases" in r.stdout, r.stderr
    assert len(list_cases(str(tmp_path / "out"))) == 4
    # capitals in names (Patient002/, Patient001_frame01.nii.gz) were skipped too: "2 of 2", exit 0
    os.rename(folder, raw / "Patient002")
    for f in sorted(os.listdir(raw / "patient001")):
        os.rename(raw / "patient001" / f, raw / "patient001" / f.replace("patient", "Patient"))
    assert sorted(adp.find_raw_cases(str(raw))) == sorted(cases)
    # a frame outside its patient folder was skipped without a word
    loose = next(f for f in sorted(os.listdir(raw / "patient001")) if "_frame" in f)
    os.rename(raw / "patient001" / loose, raw / loose)
    with pytest.raises(ValueError, match=f"{loose} lies outside a patient folder; move it into .*/patient001/"):
        adp.find_raw_cases(str(raw))


def test_raw_round_trip(phantom, tmp_path):
    out = tmp_path / "out"
    assert adp.main(["--raw", str(phantom / "raw"), "--out", str(out), "--seed", "3"]) == 0
    truth = str(phantom / "truth")
    assert list_cases(str(out)) == list_cases(truth)
    for c in list_cases(truth):
        a, b = read_case(truth, c), read_case(str(out), c)
        assert b.image.dtype == np.float32 and b.label.dtype == np.uint8 and b.scribble.dtype == np.uint16
        assert np.array_equal(a.label, b.label)
        # the phantom's image is normalise(raw), exactly what the processing computes
        assert np.array_equal(a.image, b.image) and b.image.min() == 0 and b.image.max() == 1
        assert b.spacing == a.spacing  # phantom spacings are float32-exact, as NIfTI stores them
        sc = b.scribble < UNLABELED
        assert sc.any() and np.array_equal(b.scribble[sc], b.label[sc])
        for z in range(b.image.shape[0]):
            s = read_h5(slice_path(str(out), c, z))
            assert np.array_equal(s["scribble"], b.scribble[z]) and np.array_equal(s["image"], b.image[z])
    # generated scribbles are reproducible
    out2 = tmp_path / "out2"
    assert adp.main(["--raw", str(phantom / "raw"), "--out", str(out2), "--seed", "3"]) == 0
    c = list_cases(truth)[0]
    assert np.array_equal(read_case(str(out), c).scribble, read_case(str(out2), c).scribble)


def test_raw_keeps_the_scans_origin_and_direction(phantom, tmp_path):
    # Only the spacing was kept: --save_nii predictions of raw ACDC cases lay off their scans.
    import SimpleITK as sitk

    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    for f in (raw / "patient001").glob("patient001_frame01*.nii.gz"):
        img = sitk.ReadImage(str(f))
        img.SetOrigin((-100.0, 50.0, 20.0))
        img.SetDirection(direction)
        sitk.WriteImage(img, str(f))
    out = tmp_path / "out"
    assert adp.main(["--raw", str(raw), "--out", str(out)]) == 0
    case = read_case(str(out), "patient001_frame01")
    assert case.origin == (-100.0, 50.0, 20.0) and case.direction == direction


def test_raw_with_scribble_folder(phantom, tmp_path, capsys):
    import SimpleITK as sitk
    scr = tmp_path / "scr"
    scr.mkdir()
    truth = str(phantom / "truth")
    for i, c in enumerate(list_cases(truth)):
        scribble = sitk.GetImageFromArray(read_case(truth, c).scribble)
        name = f"{c.upper()}_Scribble.nii.gz" if i == 1 else f"{c}_scribble.nii.gz"  # found in any letter case
        sitk.WriteImage(scribble, str(scr / name))
    out = tmp_path / "out"
    assert adp.main(["--raw", str(phantom / "raw"), "--out", str(out), "--scribbles", str(scr)]) == 0
    for c in list_cases(truth):
        assert np.array_equal(read_case(str(out), c).scribble, read_case(truth, c).scribble)
    first = list_cases(truth)[0]
    zeros = read_case(truth, first).scribble
    zeros[zeros == 4] = 0  # unstroked voxels marked 0: each would train as a background stroke
    sitk.WriteImage(sitk.GetImageFromArray(zeros), str(scr / f"{first}_scribble.nii.gz"))
    assert adp.main(["--raw", str(phantom / "raw"), "--out", str(tmp_path / "out2"), "--scribbles", str(scr)]) == 1
    assert f"{first}_scribble.nii.gz: 4 (unlabeled) on only 0.00% of the voxels" in capsys.readouterr().err


def test_corrupt_case_reported_others_written(phantom, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(phantom / "raw", raw)
    bad = raw / "patient002" / "patient002_frame01.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated gzip
    gt_only = raw / "patient001" / "patient001_frame01_gt.nii.gz"
    os.remove(raw / "patient001" / "patient001_frame01.nii.gz")
    r = run("--raw", str(raw), "--out", str(out))
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any(str(bad) in e for e in errors) and any(str(gt_only) in e for e in errors)
    written = list_cases(str(out))
    assert written == ["patient001_frame14", "patient002_frame08"]


def files_of(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


def slices_expected(root):
    return {os.path.basename(slice_path(str(root), c, z)) for c in list_cases(str(root))
            for z in range(num_slices(str(root), c))}


@pytest.mark.parametrize("change", ["shorten", "remove"])
def test_converting_again_needs_overwrite_and_leaves_no_stale_file(phantom, tmp_path, change):
    import SimpleITK as sitk
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(phantom / "raw", raw)
    assert adp.main(["--raw", str(raw), "--out", str(out)]) == 0
    (out / "random_walker_cache").mkdir()
    (out / "random_walker_cache" / "digest.npz").write_bytes(b"a cache keyed by content stays")
    if change == "shorten":  # the old patient001_frame01_slice_2.. must not survive
        for name in ("patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz"):
            path = str(raw / "patient001" / name)
            sitk.WriteImage(sitk.ReadImage(path)[:, :, :2], path)
    else:  # nor the volume and slices of a patient no longer in the source
        shutil.rmtree(raw / "patient002")
    before = files_of(out)
    r = run("--raw", str(raw), "--out", str(out))
    assert r.returncode == 2 and (f"--out {out} already holds converted data (ACDC_training_volumes, "
                                  "ACDC_training_slices); pass --overwrite" in r.stderr.strip().splitlines()[-1])
    assert files_of(out) == before
    assert adp.main(["--raw", str(raw), "--out", str(out), "--overwrite"]) == 0
    assert list_cases(str(out)) == sorted(adp.find_raw_cases(str(raw)))
    assert set(os.listdir(out / SLICE_DIR)) == slices_expected(out)
    assert (out / "random_walker_cache" / "digest.npz").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"]  # no temporary folder left beside OUT
    if change == "shorten":
        assert num_slices(str(out), "patient001_frame01") == 2


def test_a_failed_overwrite_leaves_out_as_it_was(phantom, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(phantom / "raw", raw)
    assert adp.main(["--raw", str(raw), "--out", str(out)]) == 0
    before = files_of(out)
    bad = raw / "patient002" / "patient002_frame01.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    r = run("--raw", str(raw), "--out", str(out), "--overwrite")
    assert r.returncode == 1 and str(bad) in r.stderr and f"1 of 4 cases failed; {out} left as it was" in r.stderr
    assert files_of(out) == before and sorted(os.listdir(tmp_path)) == ["out", "raw"]


def test_overwrite_removes_what_the_new_conversion_does_not_write(nifti_src, phantom, tmp_path):
    out = tmp_path / "out"
    assert adp.main(["--nifti", str(nifti_src), "--out", str(out)]) == 0
    r = run("--nifti", str(nifti_src), "--out", str(out))
    assert r.returncode == 2 and ("(ACDC_training_volumes, ACDC_training_slices, dataset.json, splits.json)"
                                  in r.stderr)
    # a --raw conversion writes no splits.json: the old one would still split the new cases
    assert adp.main(["--raw", str(phantom / "raw"), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "splits.json").exists() and not (out / "dataset.json").exists()


def test_masks_numbered_otherwise_than_the_class_names_are_refused(nifti_src, phantom, tmp_path, capsys):
    # Found by a probe: M&Ms-ordered masks (1 LV, 2 MYO, 3 RV) converted under the default names
    # RV MYO LV at exit 0; the tables swapped RV and LV, and an ACDC-ordered prior passed.
    import SimpleITK as sitk

    src = tmp_path / "src"
    shutil.copytree(nifti_src, src)
    for f in (src / "train" / "labels").iterdir():
        mask = sitk.ReadImage(str(f))
        relabelled = sitk.GetImageFromArray(np.choose(sitk.GetArrayFromImage(mask), [0, 3, 2, 1]).astype(np.uint8))
        relabelled.CopyInformation(mask)
        sitk.WriteImage(relabelled, str(f))
    assert adp.main(["--nifti", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "_gt.nii.gz: the mask's MYO (class 2) touches only " in err
    assert "its masks do not number the classes as --class_names declares (1 RV, 2 MYO, 3 LV)" in err
    assert adp.main(["--nifti", str(src), "--out", str(tmp_path / "named"), "--class_names", "LV", "MYO", "RV"]) == 0
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    gt = raw / "patient002" / "patient002_frame01_gt.nii.gz"
    shutil.copy(src / "train" / "labels" / gt.name, gt)
    assert adp.main(["--raw", str(raw), "--out", str(tmp_path / "raw_out")]) == 1
    assert f"{gt}: the mask's MYO (class 2) touches only " in capsys.readouterr().err


def test_shape_mismatch_reported(phantom, tmp_path):
    import SimpleITK as sitk
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    gt = raw / "patient001" / "patient001_frame01_gt.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 5, 5), np.uint8)), str(gt))
    r = run("--raw", str(raw), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and str(gt) in r.stderr and "shape" in r.stderr


@pytest.mark.parametrize("change, message", [
    ("fraction", "values must be whole numbers 0..3"),  # 2.6 would have been truncated to MYO
    ("direction", "direction"),
    ("spacing", "spacing"),
])
def test_a_mask_that_does_not_fit_its_image_is_named(phantom, tmp_path, change, message):
    import SimpleITK as sitk
    raw = tmp_path / "raw"
    shutil.copytree(phantom / "raw", raw)
    gt = raw / "patient001" / "patient001_frame01_gt.nii.gz"
    mask = sitk.ReadImage(str(gt))
    if change == "fraction":
        values = sitk.GetArrayFromImage(mask).astype(np.float32)
        values[values == 2] = 2.6
        changed = sitk.GetImageFromArray(values)
        changed.CopyInformation(mask)
        mask = changed
    elif change == "direction":
        mask.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    else:
        mask.SetSpacing(tuple(3 * s for s in mask.GetSpacing()))
    sitk.WriteImage(mask, str(gt))
    r = run("--raw", str(raw), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and f"{gt}: {message}" in r.stderr and "Traceback" not in r.stderr
    assert "patient001_frame01" not in list_cases(str(tmp_path / "out"))


def test_volumes_to_slices(phantom, tmp_path):
    vols = phantom / "truth" / "ACDC_training_volumes"
    out = tmp_path / "out"
    assert adp.main(["--volumes", str(vols), "--out", str(out)]) == 0
    truth = str(phantom / "truth")
    n = 0
    for c in list_cases(truth):
        v = read_case(truth, c)
        for z in range(v.image.shape[0]):
            s = read_h5(slice_path(str(out), c, z))
            for k in ("image", "label", "scribble"):
                assert s[k].dtype == getattr(v, k).dtype and np.array_equal(s[k], getattr(v, k)[z])
            n += 1
    assert len(os.listdir(out / SLICE_DIR)) == n
    # Into another root the volumes go with their slices: --overwrite of a root there removed its
    # volumes and wrote none (a root of slices alone, which lists no cases; exit 0).
    assert sorted(list_cases(str(out))) == sorted(list_cases(truth))
    other = tmp_path / "other"
    shutil.copytree(out, other)
    (other / VOLUME_DIR / "patient001_frame01.h5").unlink()
    assert adp.main(["--volumes", str(vols), "--out", str(other), "--overwrite"]) == 0
    assert sorted(list_cases(str(other))) == sorted(list_cases(truth))
    # ... and so do the class names and splits of the root they lie in.
    named = tmp_path / "named"
    shutil.copytree(phantom / "truth", named)
    (named / "dataset.json").write_text('{"labels": {"1": "RV", "2": "MYO", "3": "LV"}, "patient_pattern": "(patient\\d+)_"}')
    assert adp.main(["--volumes", str(named / VOLUME_DIR), "--out", str(tmp_path / "from_named")]) == 0
    assert (tmp_path / "from_named" / "dataset.json").read_text() == (named / "dataset.json").read_text()


def test_volumes_into_their_own_root_replace_only_the_slices(phantom, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(phantom / "truth" / "ACDC_training_volumes", root / "ACDC_training_volumes")
    (root / "dataset.json").write_text('{"labels": {"1": "RV", "2": "MYO", "3": "LV"}}')
    args = ["--volumes", str(root / "ACDC_training_volumes"), "--out", str(root)]
    assert adp.main(args) == 0  # the volumes and dataset.json there are not a reason to refuse
    r = run(*args)
    assert r.returncode == 2 and "(ACDC_training_slices); pass --overwrite" in r.stderr
    c = read_case(str(root), "patient001_frame01")
    write_h5(volume_path(str(root), c.name), {"image": c.image[:2], "label": c.label[:2], "scribble": c.scribble[:2]})
    assert adp.main(args + ["--overwrite"]) == 0
    assert set(os.listdir(root / SLICE_DIR)) == slices_expected(root)
    assert (root / "dataset.json").exists() and len(list_cases(str(root))) == 4


def test_volumes_missing_key_and_garbage(phantom, tmp_path):
    vols = tmp_path / "vols"
    shutil.copytree(phantom / "truth" / "ACDC_training_volumes", vols)
    c = read_case(str(phantom / "truth"), "patient001_frame01")
    write_h5(str(vols / "patient001_frame01.h5"), {"image": c.image, "label": c.label})
    (vols / "patient002_frame01.h5").write_bytes(b"not an h5 file")
    r = run("--volumes", str(vols), "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "patient001_frame01.h5: missing key(s) scribble" in r.stderr
    assert "patient002_frame01.h5" in r.stderr
    written = {f.split("_slice_")[0] for f in os.listdir(tmp_path / "out" / SLICE_DIR)}
    assert len(written) == 2 and not written & {"patient001_frame01", "patient002_frame01"}


@pytest.mark.parametrize("args, flag", [
    (["--out", "o"], "--raw"),
    (["--raw", "nowhere", "--out", "o"], "--raw"),
    (["--volumes", "nowhere", "--out", "o"], "--volumes"),
    (["--raw", ".", "--out", "o", "--scribbles", "nowhere"], "--scribbles"),
    # ignored at exit 0: no dataset.json, so label 1 kept the name RV
    (["--raw", ".", "--out", "o", "--class_names", "LV", "MYO", "RV"], "--class_names only applies to --nifti"),
    (["--volumes", ".", "--out", "o", "--patient_pattern", "(p)"], "--patient_pattern only applies to --nifti"),
])
def test_bad_flags(tmp_path, args, flag):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "code", "acdc_data_processing.py"), *args],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and flag in r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--class_names", "A", "A", "A"], "--class_names: class names must differ, 'A' repeated"),
    (["--class_names", "A", "B", "C", "D"], "--class_names: 1..3 class names (label 4 marks unlabeled pixels), got 4"),
    (["--patient_pattern", "["], "--patient_pattern: '[' is not a valid regex"),
    (["--patient_pattern", r"subject(\d+)"], "--patient_pattern: case name 'patient001_frame01' does not match"),
    # patient00(\d) would be right; patient(\d) takes the first digit, 0, of every case
    (["--patient_pattern", r"patient(\d)"], "all 4 cases are one patient '0'; its first group must name"),
])
def test_bad_class_names_and_patient_patterns_are_refused(nifti_src, tmp_path, args, message):
    r = run("--nifti", str(nifti_src), "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 2 and message in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_patient_pattern_reports_its_patients(nifti_src, tmp_path, capsys):
    assert adp.main(["--nifti", str(nifti_src), "--out", str(tmp_path / "out"),
                     "--patient_pattern", r"(patient\d+)_"]) == 0
    assert "--patient_pattern: 2 patients in 4 cases" in capsys.readouterr().out


@pytest.mark.parametrize("unlabeled, refused", [(0.0, True), (0.09, True), (0.49, True), (0.5, False), (0.96, False)])
def test_a_scribble_must_leave_most_voxels_unlabeled(unlabeled, refused):
    # A dense mask with a fourth structure labelled 4 on 9% of the voxels was converted as a
    # scribble stroking 91% of the scan, which trained as dense labels under --sup_type scribble.
    scribble = np.zeros(100, np.uint8)
    scribble[:round(100 * unlabeled)] = 4
    if refused:
        with pytest.raises(adp.CaseError, match=f"m.nii.gz: 4 \\(unlabeled\\) on only {100 * unlabeled:.2f}%"):
            adp.check_mostly_unlabeled("m.nii.gz", scribble)
    else:
        adp.check_mostly_unlabeled("m.nii.gz", scribble)


def test_generated_scribbles_depend_on_the_case_name(phantom):
    # A mutation audit found this unpinned: the scribble seed ignored the case: two frames with one mask
    # got one scribble.
    import acdc_data_processing as adp

    image, gt = next(iter(adp.find_raw_cases(str(phantom / "raw")).values()))
    a = adp.process_raw_case("patient001_frame01", image, gt, None, 0)
    b = adp.process_raw_case("patient002_frame01", image, gt, None, 0)
    assert np.array_equal(a.label, b.label) and not np.array_equal(a.scribble, b.scribble)
    assert adp.case_seed(0, "patient001_frame01") != adp.case_seed(0, "patient002_frame01")


def test_a_scribble_for_a_scored_case_is_refused(phantom, tmp_path):
    # A mutation audit found this unpinned: a val/test case given a scribble was converted without a dense
    # mask.
    import SimpleITK as sitk

    import acdc_data_processing as adp
    from dataloaders import io

    case, (image, gt) = next(iter(adp.find_raw_cases(str(phantom / "raw")).items()))
    scribble = io.read_case(str(phantom / "truth"), case).scribble
    ref = sitk.ReadImage(image)
    s = sitk.GetImageFromArray(scribble.astype(np.uint8))
    s.CopyInformation(ref)
    path = str(tmp_path / f"{case}_scribble.nii.gz")
    sitk.WriteImage(s, path)
    assert adp.process_nifti_case("train", image, path, 0).scribble is not None
    for split in ("val", "test"):
        with pytest.raises(adp.CaseError, match="cases are scored and need a dense mask"):
            adp.process_nifti_case(split, image, path, 0)


def test_a_scan_without_geometry_is_written_without_a_spacing(nifti_src, tmp_path, capsys):
    import SimpleITK as sitk

    from dataloaders import io

    # A probe converted a scan written from a bare array (1 mm voxels, unrotated at the origin)
    # beside real ones: its HD95 counted voxels as mm (51.6 instead of 89.5), exit 0 everywhere.
    src = tmp_path / "src"
    shutil.copytree(nifti_src, src)
    image = sorted((src / "train" / "images").iterdir())[0]
    mask = src / "train" / "labels" / image.name.replace(".nii.gz", "_gt.nii.gz")
    for f in (image, mask):
        sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(f)))), str(f))
    assert adp.main(["--nifti", str(src), "--out", str(tmp_path / "out")]) == 0
    assert f"note: {image}: no geometry in its header" in capsys.readouterr().out
    cases = {c: read_case(str(tmp_path / "out"), c) for c in list_cases(str(tmp_path / "out"))}
    bare = io.nifti_stem(str(image))
    assert cases[bare].spacing is None and cases[bare].origin is None and cases[bare].direction is None
    assert all(c.spacing is not None and c.spacing != (1.0, 1.0, 1.0) for name, c in cases.items() if name != bare)
