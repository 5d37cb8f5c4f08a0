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

import gzip
import os
import re
import struct
import zlib
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


# Largest value each key may hold: labels are classes 0..3, scribbles add 4 = unlabeled.
MAX_VALUE = {"label": NUM_CLASSES - 1, "scribble": UNLABELED}


def check_arrays(path: str, arrays: dict) -> None:
    """Refuse data that would train or score silently wrong: a non-finite image, labels or
    scribbles that are not integers in their range (``MAX_VALUE``), keys of different shapes.
    Raises ValueError naming ``path``, the key and the bad values."""
    shapes = {k: np.shape(arrays[k]) for k in KEYS if arrays.get(k) is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{path}: arrays of different shapes {shapes}")
    image = arrays.get("image")
    if image is not None:
        if not np.issubdtype(image.dtype, np.number):
            raise ValueError(f"{path}: image has dtype {image.dtype}, expected numbers")
        bad = int(np.size(image) - np.isfinite(image).sum())
        if bad:
            raise ValueError(f"{path}: image has {bad} non-finite values (NaN or inf)")
    for key, top in MAX_VALUE.items():
        if arrays.get(key) is not None:
            check_labels(f"{path}: {key}", arrays[key], top)


def check_labels(what: str, labels: np.ndarray, top: int = NUM_CLASSES - 1) -> None:
    """ValueError naming ``what`` unless ``labels`` are whole numbers in 0..``top``."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ValueError(f"{what}: values must be whole numbers 0..{top}, found non-integers "
                             f"(dtype {labels.dtype})")
    bad = np.unique(labels[(labels < 0) | (labels > top)])
    if bad.size:
        raise ValueError(f"{what}: values must lie in 0..{top}, found {', '.join(map(str, bad[:5].tolist()))}")


def read_h5(path: str, keys=KEYS) -> dict:
    """Arrays of ``keys`` present in the file, plus ``spacing`` (tuple or None), checked by
    :func:`check_arrays`.

    Raises ``OSError`` naming the file when it is unreadable or lacks ``image``, ValueError when
    its values are bad.
    """
    try:
        with h5py.File(path, "r") as f:
            out = {k: f[k][()] for k in keys if k in f}
            sp = f.attrs.get("spacing")
    except (OSError, KeyError) as e:
        raise OSError(f"{path}: cannot read h5 ({e})") from e
    if "image" in keys and "image" not in out:
        raise OSError(f"{path}: no 'image' dataset")
    check_arrays(path, out)
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


def check_nifti_complete(path: str) -> None:
    """OSError naming ``path`` when a NIfTI file is truncated or corrupt.

    ITK reads such files as partly zero arrays without an error, so the whole file is
    decompressed here (gzip checks its CRC and length) and the voxel data's size is compared
    with what the header promises (NIfTI-1 and NIfTI-2, either byte order).
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(540)
            size = len(header)
            while chunk := f.read(1 << 22):
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise OSError(f"{path}: corrupt or truncated NIfTI ({e})") from e
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        raise OSError(f"{path}: not a NIfTI file (no NIfTI-1 or NIfTI-2 header)")
    n_dims = max(0, min(int(dims[0]), 7))
    expected = max(offset, 348) + int(np.prod([max(1, int(d)) for d in dims[1:n_dims + 1]])) * bitpix // 8
    if size < expected:
        raise OSError(f"{path}: truncated NIfTI ({size} bytes of data, the header needs {expected})")


def read_nifti(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(array in ``GetArrayFromImage`` order, e.g. (Z, H, W); spacing in the same axis order, mm)
    of a NIfTI file; OSError naming the file when it cannot be read, is truncated or corrupt."""
    check_nifti_complete(path)
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
    """A (Z, H, W) label map with classes 0..3 from an h5 file (key ``label``) or a NIfTI file
    (array order of ``GetArrayFromImage``); OSError or KeyError naming the file when it cannot be
    read, ValueError when it holds other values."""
    if path.endswith(".h5"):
        arrays = read_h5(path, keys=("label",))
        if "label" not in arrays:
            raise KeyError(f"{path}: no 'label' dataset")
        return arrays["label"]
    labels = read_nifti(path)[0]
    check_labels(path, labels)
    return labels


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
