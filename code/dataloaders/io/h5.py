"""Cases in the h5 layout (see :mod:`dataloaders.io`): reading them with every value checked,
writing volumes and their slices."""
from __future__ import annotations

import contextlib
import hashlib
import os

import h5py
import numpy as np

from dataloaders.io.layout import (
    Case, DTYPES, GEOMETRY, KEYS, NUM_CLASSES, UNLABELED, check_labels, check_scribble_classes, check_voxel_sides,
    list_cases, root_classes, slice_path, volume_path)
from dataloaders.io.outputs import atomic_path


# Rounding room around [0, 1] for the intensities of an h5 image.
IMAGE_SLACK = 1e-4


def check_arrays(path: str, arrays: dict, num_classes: int = NUM_CLASSES) -> None:
    """Refuse data that would train or score silently wrong: an empty image, one with non-finite
    values or outside [0, 1], labels that are not integers in 0..``num_classes``-1 (the data
    root's classes, :func:`root_classes`), scribbles that are not such classes or 4 (unlabeled),
    keys of different shapes.
    Raises ValueError naming ``path``, the key and the bad values."""
    shapes = {k: np.shape(arrays[k]) for k in KEYS if arrays.get(k) is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{path}: arrays of different shapes {shapes}")
    image = arrays.get("image")
    if image is not None:
        if not np.issubdtype(image.dtype, np.number):
            raise ValueError(f"{path}: image has dtype {image.dtype}, expected numbers")
        if image.size == 0:
            raise ValueError(f"{path}: image is empty (shape {image.shape})")
        bad = int(np.size(image) - np.isfinite(image).sum())
        if bad:
            raise ValueError(f"{path}: image has {bad} non-finite values (NaN or inf)")
        # Validation and prediction normalise scans to [0, 1]; raw intensities (0..255, MRI
        # units) would train a model that segments nothing at validation.
        lo, hi = float(image.min()), float(image.max())
        if lo < -IMAGE_SLACK or hi > 1 + IMAGE_SLACK:
            raise ValueError(f"{path}: image values lie in [{lo:.4g}, {hi:.4g}], not in [0, 1]; the h5 layout "
                             "holds normalised intensities (acdc_data_processing.py writes them)")
    if arrays.get("label") is not None:
        check_labels(f"{path}: label", arrays["label"], num_classes - 1)
    scribble = arrays.get("scribble")
    if scribble is not None:
        check_labels(f"{path}: scribble", scribble, UNLABELED)
        check_scribble_classes(f"{path}: scribble", scribble, num_classes)


@contextlib.contextmanager
def _open_h5(path: str):
    """The h5 file ``path`` open for reading; OSError naming it when it cannot be opened or a
    dataset the block reads is missing."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError) as e:
        raise OSError(f"{path}: cannot read h5 ({e})") from e


def read_h5(path: str, keys=KEYS, num_classes: int = NUM_CLASSES) -> dict:
    """Arrays of ``keys`` present in the file, checked by :func:`check_arrays` against
    ``num_classes``, plus its geometry (``spacing``, ``origin``, ``direction``: tuples or None,
    checked by :func:`read_geometry`).

    Raises ``OSError`` naming the file when it is unreadable or lacks ``image``, ValueError when
    its values are bad.
    """
    with _open_h5(path) as f:
        out = {k: f[k][()] for k in keys if k in f}
        geometry = {a: f.attrs.get(a) for a in GEOMETRY}
        unoriented = bool(f.attrs.get("unoriented", False))
    if "image" in keys and "image" not in out:
        raise OSError(f"{path}: no 'image' dataset")
    check_arrays(path, out, num_classes)
    out.update({a: read_geometry(path, a, g) for a, g in geometry.items()}, unoriented=unoriented)
    spacing, volume = out["spacing"], out.get("image", out.get("label"))  # a prior file holds labels only
    stack = volume is not None and volume.ndim == 3 and len(volume) > 1
    if spacing is not None and stack:  # read_geometry checked the in-plane sides
        check_voxel_sides(path, spacing[:1], "attribute spacing z")
    if spacing is not None and stack and max(spacing[1:]) > 2 * spacing[0]:
        # As read_scan refuses for NIfTI; here it is mostly ITK's (x, y, z) order written as (z, y, x).
        raise ValueError(f"{path}: attribute spacing {spacing} is (z, y, x) mm, but an in-plane side is over "
                         "twice the slice spacing; was it written in ITK's (x, y, z) order?")
    if stack and len(volume) > min(volume.shape[1:]) and (spacing is None or spacing[0] > 1.5 * max(spacing[1:])):
        # read_scan's rule for NIfTI: nibabel's (x, y, z) arrays trained on 216 "slices" of 256 x 10.
        why = "no attribute spacing" if spacing is None else f"slices {spacing[0]:g} mm thick"
        raise ValueError(f"{path}: {len(volume)} slices of {volume.shape[1]} x {volume.shape[2]} voxels and {why}: "
                         "an (x, y, z) array? Store it as (slices, rows, columns)")
    return out


def h5_datasets(path: str) -> set[str]:
    """Names of the datasets in the h5 file ``path``; OSError naming it when unreadable."""
    with _open_h5(path) as f:
        return set(f.keys())
def root_digest(root: str) -> str:
    """SHA-256 of the data root's volumes: each case's name, arrays (``KEYS``) and spacing (distances
    in mm depend on it), read as :func:`read_h5` reads them. Results record it, so that folds scored
    on a root converted or generated again at the same path are not averaged as one experiment."""
    h = hashlib.sha256()
    for case in list_cases(root):
        arrays = read_h5(volume_path(root, case))
        h.update(case.encode())
        h.update(repr(arrays["spacing"]).encode())
        for key in KEYS:
            if key in arrays:
                h.update(key.encode())
                h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


# Values of each geometry attribute: (z, y, x) mm, (x, y, z) mm, a row-major 3x3.
GEOMETRY_SIZES = {"spacing": 3, "origin": 3, "direction": 9}


def read_geometry(path: str, name: str, value) -> tuple[float, ...] | None:
    """The geometry attribute ``name`` of the h5 file ``path`` as floats (None when absent).
    ValueError naming the file unless it holds ``GEOMETRY_SIZES[name]`` finite numbers, and for
    ``spacing`` positive ones: a bad spacing would otherwise surface only at scoring, without a
    file name."""
    if value is None:
        return None
    try:
        values = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        values = None
    if (values is None or values.size != GEOMETRY_SIZES[name] or not np.isfinite(values).all()
            or (name == "spacing" and not (values > 0).all())):
        shown = repr(value) if values is None else tuple(values.tolist())
        want = "positive " if name == "spacing" else ""
        raise ValueError(f"{path}: attribute {name} {shown} must be {GEOMETRY_SIZES[name]} finite {want}numbers")
    if name == "spacing":  # in-plane here: a single slice's z means nothing (read_h5 checks a stack's)
        check_voxel_sides(path, values[1:], "attribute spacing (y, x)")
    return tuple(float(v) for v in values)


def num_slices(root: str, case: str) -> int:
    """Number of slices of a volume, read from the h5 header without loading the image."""
    path = volume_path(root, case)
    with _open_h5(path) as f:
        return int(f["image"].shape[0])


def read_h5_labels(path: str, top: int = NUM_CLASSES - 1) -> Case:
    """The (Z, H, W) uint8 label volume of the h5 file ``path`` (key ``label``), whole numbers in
    0..``top``, as a ``Case``'s image with the file's geometry (attributes it lacks are None);
    OSError naming the file when it cannot be read, ValueError when it has no label or holds
    other values."""
    d = read_h5(path, keys=("label",), num_classes=top + 1)
    if "label" not in d:
        raise ValueError(f"{path}: no 'label' dataset")
    check_labels(path, d["label"], top)  # whole numbers, checked: uint8 loses nothing
    return Case(os.path.splitext(os.path.basename(path))[0], d["label"].astype(np.uint8), spacing=d["spacing"],
                origin=d["origin"], direction=d["direction"])


def read_case(root: str, case: str) -> Case:
    """The volume of ``case``, its labels and scribbles checked against the root's classes."""
    d = read_h5(volume_path(root, case), num_classes=root_classes(root))
    return Case(case, d["image"], d.get("label"), d.get("scribble"), d["spacing"], d["origin"], d["direction"],
                d["unoriented"])


def write_h5(path: str, arrays: dict, spacing=None, compression: str | None = "gzip",
             origin=None, direction=None, unoriented: bool = False) -> None:
    """Write ``arrays`` (keys of ``KEYS``) and the geometry attributes that are given (and
    ``unoriented``, see :func:`read_scan`, where set), atomically (:func:`atomic_path`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, a in arrays.items():
            if a is None:
                continue
            a = np.asarray(a)
            f.create_dataset(k, data=a, compression=compression if a.ndim >= 2 else None)
        for name, value in zip(GEOMETRY, (spacing, origin, direction)):
            if value is not None:
                f.attrs[name] = np.asarray(value, dtype=np.float64)
        if unoriented:
            f.attrs["unoriented"] = True


def write_case(root: str, case: Case, slices: bool = True) -> None:
    """Write the volume file and (by default) one file per slice, with ACDC dtypes."""
    arrays = {k: None if getattr(case, k) is None else np.asarray(getattr(case, k), DTYPES[k])
              for k in KEYS}
    write_h5(volume_path(root, case.name), arrays, case.spacing, origin=case.origin, direction=case.direction,
             unoriented=case.unoriented)
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
