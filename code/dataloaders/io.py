"""Reading and writing cases in the ACDC h5 layout that WSL4MIS and MaskMixAdv publish.

A data root holds ``ACDC_training_volumes/<case>.h5`` (one file per 3-D volume) and
``ACDC_training_slices/<case>_slice_<z>.h5`` (one file per 2-D slice). Each file has the keys

- ``image``    float32, (Z, H, W) or (H, W), intensities in [0, 1]
- ``label``    uint8,   dense mask: 0 background, 1 RV, 2 MYO, 3 LV
- ``scribble`` uint16,  0..3 as ``label``, 4 = unlabeled

and, optionally, the attribute ``spacing`` = (z, y, x) in mm.
A case name is ``patientXXX_frameYY``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import h5py
import numpy as np
import SimpleITK as sitk

VOLUME_DIR = "ACDC_training_volumes"
SLICE_DIR = "ACDC_training_slices"
KEYS = ("image", "label", "scribble")
DTYPES = {"image": np.float32, "label": np.uint8, "scribble": np.uint16}
UNLABELED = 4
NUM_CLASSES = 4
CLASS_NAMES = ("RV", "MYO", "LV")
CASE_RE = re.compile(r"^(patient\d+)_(frame\d+)$")


@dataclass
class Case:
    """One volume: arrays in (Z, H, W) order; ``spacing`` (z, y, x) in mm or None."""

    name: str
    image: np.ndarray
    label: np.ndarray | None = None
    scribble: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None


def patient_of(case: str) -> str:
    """``patient001_frame01`` -> ``patient001``; raises ValueError naming a malformed case."""
    m = CASE_RE.match(case)
    if not m:
        raise ValueError(f"case name {case!r} is not of the form patientXXX_frameYY")
    return m.group(1)


def volume_path(root: str, case: str) -> str:
    return os.path.join(root, VOLUME_DIR, f"{case}.h5")


def slice_path(root: str, case: str, z: int) -> str:
    return os.path.join(root, SLICE_DIR, f"{case}_slice_{z}.h5")


def list_cases(root: str) -> list[str]:
    """Sorted case names found in ``root/ACDC_training_volumes``; a clear error if none."""
    vol_dir = os.path.join(root, VOLUME_DIR)
    if not os.path.isdir(vol_dir):
        raise FileNotFoundError(f"{vol_dir}: no such folder (expected the ACDC h5 layout)")
    cases = sorted(f[:-3] for f in os.listdir(vol_dir) if f.endswith(".h5"))
    if not cases:
        raise FileNotFoundError(f"{vol_dir}: no .h5 volumes")
    for c in cases:
        patient_of(c)
    return cases


def read_h5(path: str, keys=KEYS) -> dict:
    """Arrays of ``keys`` present in the file, plus ``spacing`` (tuple or None).

    Raises ``OSError`` naming the file when it is unreadable or lacks ``image``.
    """
    try:
        with h5py.File(path, "r") as f:
            out = {k: f[k][()] for k in keys if k in f}
            sp = f.attrs.get("spacing")
    except (OSError, KeyError) as e:
        raise OSError(f"{path}: cannot read h5 ({e})") from e
    if "image" in keys and "image" not in out:
        raise OSError(f"{path}: no 'image' dataset")
    out["spacing"] = tuple(float(s) for s in sp) if sp is not None else None
    return out


def num_slices(root: str, case: str) -> int:
    """Number of slices of a volume, read from the h5 header without loading the image."""
    path = volume_path(root, case)
    try:
        with h5py.File(path, "r") as f:
            return int(f["image"].shape[0])
    except (OSError, KeyError) as e:
        raise OSError(f"{path}: cannot read h5 ({e})") from e


def read_nifti(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(array in ``GetArrayFromImage`` order, e.g. (Z, H, W); spacing in the same axis order, mm)
    of a NIfTI file; OSError naming the file when it cannot be read."""
    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        raise OSError(f"{path}: cannot read NIfTI ({str(e).strip().splitlines()[-1]})") from e
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in reversed(img.GetSpacing()))


def write_nifti(path: str, array: np.ndarray, spacing=None) -> None:
    """Write ``array`` (e.g. (Z, H, W)) as NIfTI; ``spacing`` in the array's axis order (mm)."""
    img = sitk.GetImageFromArray(array)
    if spacing is not None:
        img.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # ITK wants (x, y, z)
    sitk.WriteImage(img, path)


def read_label_file(path: str) -> np.ndarray:
    """A (Z, H, W) label map from an h5 file (key ``label``) or a NIfTI file (array order of
    ``GetArrayFromImage``); OSError or KeyError naming the file when it cannot be read."""
    if path.endswith(".h5"):
        arrays = read_h5(path, keys=("label",))
        if "label" not in arrays:
            raise KeyError(f"{path}: no 'label' dataset")
        return arrays["label"]
    return read_nifti(path)[0]


def read_case(root: str, case: str) -> Case:
    d = read_h5(volume_path(root, case))
    return Case(case, d["image"], d.get("label"), d.get("scribble"), d["spacing"])


def write_h5(path: str, arrays: dict, spacing=None, compression: str | None = "gzip") -> None:
    """Write ``arrays`` (keys of ``KEYS``) atomically: a partial file never replaces a good one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, a in arrays.items():
            if a is None:
                continue
            a = np.asarray(a)
            f.create_dataset(k, data=a, compression=compression if a.ndim >= 2 else None)
        if spacing is not None:
            f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
    os.replace(tmp, path)


def write_case(root: str, case: Case, slices: bool = True) -> None:
    """Write the volume file and (by default) one file per slice, with ACDC dtypes."""
    arrays = {k: None if getattr(case, k) is None else np.asarray(getattr(case, k), DTYPES[k])
              for k in KEYS}
    write_h5(volume_path(root, case.name), arrays, case.spacing)
    if slices:
        write_slices(root, case.name, arrays, case.spacing)


def write_slices(root: str, case: str, arrays: dict, spacing=None) -> int:
    """Slice ``arrays`` along z into ``root/ACDC_training_slices``; returns the slice count.

    Each slice file holds exactly ``volume[key][z]`` (dtype kept).
    """
    n = arrays["image"].shape[0]
    for z in range(n):
        write_h5(slice_path(root, case, z),
                 {k: a[z] for k, a in arrays.items() if a is not None}, spacing)
    return n
