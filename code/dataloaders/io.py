"""Reading and writing cases in the ACDC h5 layout that WSL4MIS and MaskMixAdv publish.

A data root holds ``ACDC_training_volumes/<case>.h5`` (one file per 3-D volume) and
``ACDC_training_slices/<case>_slice_<z>.h5`` (one file per 2-D slice). Each file has the keys

- ``image``    float32, (Z, H, W) or (H, W), intensities in [0, 1]
- ``label``    uint8,   dense mask: 0 background, 1 RV, 2 MYO, 3 LV
- ``scribble`` uint16,  0..3 as ``label``, 4 = unlabeled

and, optionally, the geometry of the scan it came from as attributes: ``spacing`` = (z, y, x)
in mm, and (volumes converted from NIfTI) ``origin`` (x, y, z) mm and ``direction`` (the 3x3
ITK direction cosines, row-major), so that predictions are written back onto the scan exactly.

A case name is a file stem; ACDC's ``patientXXX_frameYY`` groups the frames of patient XXX
(:func:`patient_of`). ``ROOT/dataset.json`` (optional) names the labels 1..C
(``{"labels": {"1": "RV", "2": "MYO", "3": "LV"}}``, :func:`class_names`) and may give a
``"patient_pattern"`` regex whose first group is a case's patient.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass

import h5py
import numpy as np
import SimpleITK as sitk

VOLUME_DIR = "ACDC_training_volumes"
SLICE_DIR = "ACDC_training_slices"
KEYS = ("image", "label", "scribble")
GEOMETRY = ("spacing", "origin", "direction")  # attributes of an h5 file (see above)
DTYPES = {"image": np.float32, "label": np.uint8, "scribble": np.uint16}
UNLABELED = 4
NUM_CLASSES = 4
CLASS_NAMES = ("RV", "MYO", "LV")
CASE_RE = re.compile(r"^(patient\d+)_(frame\d+)$", re.IGNORECASE)


@dataclass
class Case:
    """One volume: arrays in (Z, H, W) order; ``spacing`` (z, y, x) in mm or None."""

    name: str
    image: np.ndarray
    label: np.ndarray | None = None
    scribble: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None
    origin: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None
    unoriented: bool = False  # read from a NIfTI whose header gives no orientation (see read_scan)


DATASET_JSON = "dataset.json"
# A --nifti root's train/val/test cases (dataloaders.acdc.make_split's --fold split).
SPLITS_JSON = "splits.json"
# The --sup_type names (dataloaders.acdc.SUPERVISION's, here without torch): a run trains in
# model/<exp>_<fold>/<sup_type>.
SUPERVISION_TYPES = ("scribble", "label", "random_walker", "points")


# A scribble leaves at least this share of its voxels unlabeled (4): one that does not is a dense
# mask, or marks the voxels nobody stroked 0, which trains them as background strokes.
MIN_UNLABELED = 0.5


def check_mostly_unlabeled(path: str, scribble: np.ndarray) -> None:
    """ValueError naming ``path`` when ``scribble`` leaves under ``MIN_UNLABELED`` of its voxels 4."""
    unlabeled = float(np.mean(scribble == UNLABELED))
    if unlabeled < MIN_UNLABELED:
        raise ValueError(f"{path}: {UNLABELED} (unlabeled) on only {100 * unlabeled:.2f}% of the voxels: a scribble "
                         f"leaves the voxels nobody stroked {UNLABELED} (0 is a background stroke), and a dense "
                         f"mask holds no {UNLABELED}")


def patient_of(case: str, pattern: str | None = None) -> str:
    """The patient a case belongs to, so that a patient's frames never straddle train and test.

    With ``pattern`` (a regex, e.g. ``dataset.json``'s ``patient_pattern``) its first group;
    else ACDC's ``patient001_frame01`` -> ``patient001`` (in any letter case: ``Patient001_frame10``
    is the same patient); else the whole case name. ValueError naming the case when ``pattern``
    does not match it.
    """
    if pattern:
        m = re.match(pattern, case)
        if not m:
            raise ValueError(f"case name {case!r} does not match patient_pattern {pattern!r}")
        if m.groups() and m.group(1) is None:  # an optional group: every such case would be one patient
            raise ValueError(f"case name {case!r}: the first group of patient_pattern {pattern!r} matches nothing "
                             "in it; make the group match every case's patient")
        return m.group(1) if m.groups() else m.group(0)
    m = CASE_RE.match(case)
    return m.group(1).lower() if m else case


def check_class_names(what: str, names) -> None:
    """ValueError naming ``what`` unless there are 1..3 names (label 4 marks unlabeled pixels, so
    a fourth class would never be learnt), or when a name repeats or is ``mean``: results are keyed
    by name, so such a class would overwrite another class's scores or the mean over the classes."""
    if not 1 <= len(names) < UNLABELED:
        raise ValueError(f"{what}: 1..{UNLABELED - 1} class names (label {UNLABELED} marks unlabeled pixels), "
                         f"got {len(names)}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f"{what}: class names must differ, {', '.join(map(repr, repeated))} repeated")
    if "mean" in names:
        raise ValueError(f"{what}: 'mean' names the mean over the classes in the results; rename that class")


def check_patient_pattern(what: str, pattern) -> None:
    """ValueError naming ``what`` unless ``pattern`` is a string that compiles as a regex."""
    if not isinstance(pattern, str):
        raise ValueError(f"{what}: must be a regex string, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{what}: {pattern!r} is not a valid regex ({e})") from e


def read_json_object(path: str) -> dict:
    """The JSON object in the file ``path``; ValueError naming it when it is unreadable, not JSON
    or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_dataset_json(root: str) -> dict:
    """``root/dataset.json`` as a dict ({} when absent); ValueError naming the file when bad (not
    JSON, not an object, a ``patient_pattern`` that is not a regex)."""
    path = os.path.join(root, DATASET_JSON)
    if not os.path.isfile(path):
        return {}
    meta = read_json_object(path)
    if "patient_pattern" in meta:
        check_patient_pattern(f"{path}: patient_pattern", meta["patient_pattern"])
    return meta


def patient_pattern(root: str) -> str | None:
    """The regex of ``root/dataset.json`` that groups its cases by patient (:func:`patient_of`), or None."""
    return read_dataset_json(root).get("patient_pattern")


def class_names(root: str) -> tuple[str, ...]:
    """Names of the foreground labels 1..C of a data root (``dataset.json`` ``labels``), or
    RV/MYO/LV. ValueError naming the file when the labels are not exactly "1".."C" or a name repeats."""
    labels = read_dataset_json(root).get("labels")
    if labels is None:
        return CLASS_NAMES
    keys = sorted(labels, key=lambda k: int(k) if str(k).isdigit() else -1) if isinstance(labels, dict) else []
    if not keys or keys != [str(i) for i in range(1, len(keys) + 1)]:
        raise ValueError(f"{os.path.join(root, DATASET_JSON)}: 'labels' must map \"1\"..\"C\" to "
                         f"names, got {labels!r}")
    names = tuple(str(labels[k]) for k in keys)
    check_class_names(os.path.join(root, DATASET_JSON), names)
    return names


def root_classes(root: str) -> int:
    """The number of classes of a data root: background and the classes of :func:`class_names`."""
    return len(class_names(root)) + 1


def write_dataset_json(root: str, names=CLASS_NAMES, **extra) -> None:
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, DATASET_JSON), "w") as f:
        json.dump({"labels": {str(i): n for i, n in enumerate(names, start=1)}, **extra}, f, indent=2)


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
    return cases


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


def check_scribble_classes(what: str, scribble: np.ndarray, num_classes: int) -> None:
    """ValueError naming ``what`` unless every stroked value of ``scribble`` (not 4, unlabeled) is
    a class 0..``num_classes``-1 of the data root (a 3 in a one-class root stopped training with
    a traceback)."""
    scribble = np.asarray(scribble)
    check_labels(f"{what} ({UNLABELED} = unlabeled)", scribble[scribble != UNLABELED], num_classes - 1)


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


# Voxel sides an MRI scan has, in mm: 0.1-0.2 (high resolution) to about 20 (thick slices with
# gaps). Outside, the header gives another unit than it says (metres, micrometres) or is broken:
# resampled to a target spacing, a scan in metres read as mm was segmented as background.
PLAUSIBLE_VOXEL_MM = (0.05, 100.0)


def check_voxel_sides(path: str, sides, what: str = "voxel size") -> None:
    """ValueError naming ``path`` when one of ``sides`` (mm) lies outside ``PLAUSIBLE_VOXEL_MM``."""
    lo, hi = PLAUSIBLE_VOXEL_MM
    if any(not lo <= s <= hi for s in sides):
        raise ValueError(f"{path}: {what} {tuple(round(float(s), 6) for s in sides)} mm is not an MRI voxel's "
                         f"({lo:g} to {hi:g} mm); lengths in another unit (metres, micrometres)? Save it in mm")


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


# NIfTI datatype codes of floating-point voxels and their numpy types, and of complex voxels
# (read through numpy as their real part alone).
NIFTI_FLOATS = {16: "f4", 64: "f8"}
NIFTI_INTEGERS = {2: "u1", 4: "i2", 8: "i4", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
NIFTI_COMPLEX = {32, 1792, 2048}


# The header's xyzt_units codes of lengths other than mm (0: unknown, read as mm; 2: mm).
NIFTI_OTHER_UNITS = {1: "metres", 3: "micrometres"}


def _read_itk(path: str) -> sitk.Image:
    """``sitk.ReadImage(path)``; OSError naming the file with ITK's last line when it fails."""
    try:
        return sitk.ReadImage(path)
    except RuntimeError as e:
        raise OSError(f"{path}: cannot read NIfTI ({str(e).strip().splitlines()[-1]})") from e


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1 header that :func:`check_nifti_file` checks (ITK hides some of
    them, e.g. the second of qform and sform, and the raw voxels before scaling)."""
    order: str  # byte order for struct and numpy, "<" or ">"
    dims: tuple
    datatype: int
    bitpix: int
    pixdim: tuple
    offset: int  # vox_offset
    slope: float
    intercept: float
    units: int
    qform_code: int
    sform_code: int
    quaternion: tuple  # quatern_b..d, qoffset_x..z
    sform: tuple  # srow_x, srow_y, srow_z

    @classmethod
    def parse(cls, path: str, data: bytes) -> "NiftiHeader":
        """The header at the start of the file's ``data``; OSError naming ``path`` for NIfTI-2 or
        no NIfTI-1 header in either byte order."""
        for order in "<>":
            if len(data) >= 4 and struct.unpack(order + "i", data[:4])[0] == 540:
                raise OSError(f"{path}: a NIfTI-2 file, which SimpleITK cannot read; save it as NIfTI-1")
            if len(data) >= 348 and struct.unpack(order + "i", data[:4])[0] == 348:
                def field(fmt: str, at: int):  # the value(s) at byte ``at``
                    values = struct.unpack_from(order + fmt, data, at)
                    return values[0] if len(values) == 1 else values

                return cls(order=order, dims=field("8h", 40), datatype=field("h", 70), bitpix=field("h", 72),
                           pixdim=field("8f", 76), offset=int(field("f", 108)), slope=field("f", 112),
                           intercept=field("f", 116), units=data[123] & 7, qform_code=field("h", 252),
                           sform_code=field("h", 254), quaternion=field("6f", 256), sform=field("12f", 280))
        raise OSError(f"{path}: not a NIfTI file (no NIfTI-1 header)")


def check_nifti_file(path: str) -> tuple[np.ndarray | None, bool]:
    """OSError naming ``path`` when a NIfTI file is truncated or corrupt, ValueError when its
    floating-point voxels hold NaN or inf, they are complex, its header gives a voxel side of 0,
    NaN or below 0, lengths in other units than mm, a qform tools read differently
    (:func:`check_qform`), a qform and a sform that place the voxels differently
    (:func:`check_same_placement`), a scaling of integer voxels that float32 cannot hold
    (:func:`check_scaling_precision`) or voxels starting before byte 352, or a NIfTI file of the
    same stem lies beside it (:func:`same_name_files`). Returns
    the header's sform, (3, 4) voxel -> RAS mm, where its sform_code is set, else None; and
    whether the header gives no orientation at all (qform_code and sform_code both 0).

    ITK reads truncated files as partly zero arrays, and NaN or inf voxels as 0, without an
    error, so the whole file is decompressed here (gzip checks its CRC and length), the voxel
    data's size is compared with what the header promises (NIfTI-1, either byte order) and
    float voxels are checked before ITK reads them. NIfTI-2, which this SimpleITK cannot read, is
    an OSError saying so.
    """
    twins = same_name_files(path)
    if twins:
        raise ValueError(f"{path}: {twins[0]} beside it has the same name, and ITK may read one for the "
                         "other; rename or remove one")
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise OSError(f"{path}: corrupt or truncated NIfTI ({e})") from e
    h = NiftiHeader.parse(path, data)
    if h.units in NIFTI_OTHER_UNITS:
        # ITK converts them to mm, nibabel and FSL do not: what is written for the scan in mm would
        # lie 1000 times larger or smaller than the scan there.
        raise ValueError(f"{path}: its header gives lengths in {NIFTI_OTHER_UNITS[h.units]} (xyzt_units), which "
                         "tools read differently; save the scan in mm")
    if h.datatype in NIFTI_COMPLEX:
        raise ValueError(f"{path}: complex voxels (NIfTI datatype {h.datatype}); give the magnitude image")
    n_dims = max(0, min(int(h.dims[0]), 7))
    sides = [(d, n) for d, n in zip(h.pixdim[1:4], h.dims[1:4])][:min(n_dims, 3)]
    if any(n > 1 and not (np.isfinite(d) and d > 0) for d, n in sides):
        # ITK would silently read a zero or NaN side as 1 mm, and distances in mm would be wrong. A
        # negative one ITK reads as a flip, nibabel as its size and niftilib as 1 mm: a prediction
        # written with ITK's reading would show mirrored on the scan elsewhere.
        raise ValueError(f"{path}: voxel size {tuple(round(float(d), 4) for d, _ in sides)} in its header is "
                         "zero, negative or not finite; the scan's spacing is undefined (tools disagree on a "
                         "negative one: save the scan with positive sizes and any flip in its qform or sform)")
    check_qform(path, h.qform_code, h.sform_code, h.pixdim[0], h.quaternion)
    if h.qform_code > 0 and h.sform_code > 0:
        check_same_placement(path, qform_affine(h.quaternion, h.pixdim), np.reshape(h.sform, (3, 4)))
    if h.offset < SINGLE_FILE_OFFSET:
        # A single-file NIfTI's voxels start at byte 352 at the earliest; ITK reads a lower
        # vox_offset (e.g. 0) from byte 348, nibabel from 352: two images, shifted by 4 bytes.
        raise ValueError(f"{path}: vox_offset {h.offset} in its header lies before byte {SINGLE_FILE_OFFSET}, where "
                         "a single-file NIfTI's voxels start (tools read it differently); save the scan again")
    if h.slope == 0.0 and h.intercept != 0.0:
        # The NIfTI standard and nibabel ignore the scaling when scl_slope is 0; ITK adds scl_inter.
        raise ValueError(f"{path}: scl_slope 0 with scl_inter {h.intercept:g} in its header, which tools read "
                         "differently (ITK adds the offset, nibabel ignores both); save the scan without that scaling")
    count = int(np.prod([max(1, int(d)) for d in h.dims[1:n_dims + 1]]))
    expected = h.offset + count * h.bitpix // 8
    if len(data) < expected:
        raise OSError(f"{path}: truncated NIfTI ({len(data)} bytes of data, the header needs {expected})")
    if h.datatype in NIFTI_FLOATS:
        if h.bitpix != 8 * np.dtype(NIFTI_FLOATS[h.datatype]).itemsize:
            raise OSError(f"{path}: inconsistent NIfTI header (datatype {h.datatype}, bitpix {h.bitpix})")
        values = np.frombuffer(data, h.order + NIFTI_FLOATS[h.datatype], count=count, offset=h.offset)
        bad = int(count - np.isfinite(values).sum())
        if bad:
            raise ValueError(f"{path}: {bad} voxels are NaN or inf")
    elif h.datatype in NIFTI_INTEGERS and (h.slope not in (0.0, 1.0) or h.intercept != 0.0):
        stored = np.frombuffer(data, h.order + NIFTI_INTEGERS[h.datatype], count=count, offset=h.offset)
        check_scaling_precision(path, stored, h.slope, h.intercept)
    sform = np.reshape(h.sform, (3, 4)) if h.sform_code > 0 else None
    return sform, h.qform_code == 0 and h.sform_code == 0


SINGLE_FILE_OFFSET = 352  # the 348-byte header and the 4 bytes of its extension flag


def check_qform(path: str, qform_code: int, sform_code: int, qfac: float, quaternion) -> None:
    """ValueError naming ``path`` when its qform (qform_code set) is one tools read differently:
    a non-finite quaternion or offset (ITK replaces them, nibabel keeps NaN), or, where the qform
    alone places the voxels (no sform), a qfac (pixdim[0]) other than -1, 0 or 1 (ITK reads any
    negative as -1, nibabel resets it to 1: the slices mirrored)."""
    if qform_code <= 0:
        return
    if not all(np.isfinite(quaternion)):
        raise ValueError(f"{path}: its qform (quatern_b..d, qoffset_x..z) holds NaN or inf; the scan's orientation "
                         "is undefined")
    if sform_code <= 0 and qfac not in (-1.0, 0.0, 1.0):
        raise ValueError(f"{path}: pixdim[0] (qfac) is {qfac:g} in its header, not 1 or -1, and tools read it "
                         "differently (ITK as -1 when negative, nibabel as 1: the slices mirrored); save the scan again")


def qform_affine(quaternion, pixdim) -> np.ndarray:
    """The (3, 4) voxel -> RAS mm affine of a NIfTI-1 qform: ``quaternion`` = (quatern_b, c, d,
    qoffset_x, y, z), ``pixdim`` the header's 8 (pixdim[0] = qfac, the k axis's sign)."""
    b, c, d, *offset = (float(v) for v in quaternion)
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    return np.column_stack([rotation @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]]), offset])


def places_alike(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two (3, 4) voxel -> mm affines place the voxels alike: their linear parts within a
    thousandth of ``first``'s largest voxel side, their origins within a tenth of its smallest."""
    sides = np.linalg.norm(first[:, :3], axis=0)
    return bool(np.allclose(first[:, :3], second[:, :3], rtol=0, atol=1e-3 * sides.max())
                and np.allclose(first[:, 3], second[:, 3], rtol=0, atol=0.1 * sides.min()))


def check_same_placement(path: str, qform: np.ndarray, sform: np.ndarray) -> None:
    """ValueError naming ``path`` when its header's qform and sform, (3, 4) affines, place the
    voxels differently: ITK follows one and writes files for the scan with it as both, nibabel
    and FSL follow the sform, other tools the qform, so a prediction would lie elsewhere than the
    scan in some of them."""
    if not places_alike(qform, sform):
        moved = float(np.linalg.norm(qform[:, 3] - sform[:, 3]))
        raise ValueError(f"{path}: its qform and sform (both set) place the voxels differently (origins "
                         f"{moved:.3g} mm apart), and tools differ on which they follow; save the scan with one "
                         "geometry")


def check_scaling_precision(path: str, stored: np.ndarray, slope: float, intercept: float) -> None:
    """ValueError naming ``path`` when the header's scaling (``slope``, ``intercept``) of its
    ``stored`` integer voxels gives values that float32, what ITK returns scaled voxels as, cannot
    hold one level apart (e.g. scl_inter 1e9: steps of 64): the scan's contrast would be lost in
    rounding before it is normalised."""
    if not stored.size:
        return
    largest = max(abs(slope * float(stored.min()) + intercept), abs(slope * float(stored.max()) + intercept))
    step = float(np.spacing(np.float32(largest)))
    if step > abs(slope):
        raise ValueError(f"{path}: its header scales the voxels by scl_slope {slope:g} and scl_inter {intercept:g}, "
                         f"and at {largest:.3g} the float32 values ITK reads them as are {step:g} apart, where the "
                         f"stored levels are {abs(slope):g} apart; save the intensities without that scaling")


def check_sform(path: str, img: sitk.Image, sform: np.ndarray | None) -> None:
    """ValueError naming ``path`` when the header's ``sform`` (:func:`check_nifti_file`) places the
    voxels elsewhere than the geometry ITK read: ITK takes the voxel sizes from pixdim, and falls
    back to them when the sform is scaled unlike them, while nibabel, FSL and most viewers follow
    the sform, so a prediction written with ITK's geometry would not overlay the scan there. (A
    qform beside the sform must place the voxels alike: :func:`check_same_placement`.)"""
    if sform is None:
        return
    to_ras = np.diag([-1.0, -1.0, 1.0])  # ITK's LPS frame -> the header's RAS
    linear = to_ras @ np.reshape(img.GetDirection(), (3, 3)) @ np.diag(img.GetSpacing())
    if not places_alike(np.column_stack([linear, to_ras @ np.array(img.GetOrigin())]), sform):
        raise ValueError(f"{path}: its sform places the voxels elsewhere than the geometry ITK reads (a "
                         "sheared or rescaled sform?); a prediction would not overlay the scan in tools that "
                         "follow the sform; save the scan with one geometry")


def read_nifti(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """(array in ``GetArrayFromImage`` order, e.g. (Z, H, W); spacing in the same axis order, mm)
    of a NIfTI file; OSError naming the file when it cannot be read, is truncated or corrupt,
    ValueError as :func:`check_nifti_file` (NaN or inf, undefined spacing, a same-named twin)."""
    check_nifti_file(path)
    img = _read_itk(path)
    return voxels(img, path), tuple(float(s) for s in reversed(img.GetSpacing()))


def voxels(img: sitk.Image, path: str) -> np.ndarray:
    """``GetArrayFromImage`` of ``img`` read from ``path``; ValueError when the header's scaling
    (scl_slope, scl_inter) made voxels NaN or inf (:func:`check_nifti_file` saw the raw values)."""
    array = sitk.GetArrayFromImage(img)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path}: {int(array.size - np.isfinite(array).sum())} voxels are NaN or inf after "
                         "the header's scaling (scl_slope, scl_inter)")
    return array


def read_scan(path: str) -> Case:
    """A 3-D NIfTI scan as a ``Case`` named by its stem, with its raw intensities and geometry.

    Orientation: the array is ITK's (k, j, i) voxel order, i.e. (Z, H, W) with the file's third
    voxel axis as the slice axis, which is how short-axis stacks are stored (one acquired plane
    per k). Nothing is resampled or flipped: ``origin`` and ``direction`` are kept, so a
    prediction written with them (:func:`write_nifti`) overlays exactly on the scan, whatever its
    orientation. OSError (unreadable, truncated) or ValueError (as :func:`check_nifti_file`; not
    3-D, an in-plane voxel axis of one voxel, an in-plane voxel side over twice the slice
    spacing, or more slices than voxels along an in-plane axis in a file without geometry or
    with slices over 1.5 times thicker than their pixels: the slices would not be the acquired
    planes) naming the file.

    A header without orientation (qform_code = sform_code = 0, as ANALYZE-era tools write) sets
    ``unoriented``: viewers then place the voxels by their sizes alone, each by its own
    convention (ITK unflipped, nibabel and FSL with x mirrored), so files written for the scan
    keep both codes 0 (:func:`write_nifti`) and every viewer overlays them as it shows the scan.
    """
    sform, unoriented = check_nifti_file(path)
    img = _read_itk(path)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 3-D stack of 2-D slices, got a {img.GetDimension()}-D image"
                         + (f" with {img.GetNumberOfComponentsPerPixel()} components"
                            if img.GetNumberOfComponentsPerPixel() != 1 else ""))
    (si, sj, sk), (ni, nj, nk) = img.GetSpacing(), img.GetSize()
    if min(ni, nj) == 1:  # e.g. one slice saved as a (1, H, W) array: the "slices" would be lines
        raise ValueError(f"{path}: voxel axis {'i' if ni == 1 else 'j'} has one voxel (size {ni} x {nj} x {nk}), so "
                         "its slices would be lines; store the slices along the third voxel axis")
    if nk > 1:
        check_voxel_sides(path, (si, sj, sk), "voxel size (x, y, z)")
    else:
        check_voxel_sides(path, (si, sj), "voxel size (x, y)")
    thick = max((si, "i"), (sj, "j"))
    if thick[0] > 2 * sk and nk > 1:
        raise ValueError(f"{path}: voxel axis {thick[1]} is {thick[0]:g} mm thick, over twice the slice axis k's "
                         f"{sk:g} mm; store the stack with its slices along the third voxel axis")
    check_sform(path, img, sform)
    case = Case(nifti_stem(path), voxels(img, path),
                spacing=tuple(float(s) for s in reversed(img.GetSpacing())),
                origin=tuple(float(o) for o in img.GetOrigin()),
                direction=tuple(float(d) for d in img.GetDirection()), unoriented=unoriented)
    # More slices than voxels along an in-plane axis is a stack saved in (z, y, x) order, not a
    # short-axis stack, where a file gives no spacing or gives its slices thicker than their
    # pixels (e.g. an array saved with its voxel sizes in (x, y, z) order); a 3-D volume of
    # near-cubic voxels may have more slices.
    no_geometry = header_free(case)
    if nk > min(ni, nj) and (no_geometry or sk > 1.5 * max(si, sj)):
        why = "no geometry in its header" if no_geometry else f"slices {sk:g} mm thick of {max(si, sj):g} mm pixels"
        raise ValueError(f"{path}: {nk} slices of {ni} x {nj} voxels and {why}: a stack saved in (z, y, x) order? "
                         "Store the slices along the third voxel axis, with the scan's spacing")
    return case


def unrotated_at_origin(case: Case) -> bool:
    """True for a volume at the origin with an identity direction up to axis signs (array tools
    write identity; an identity affine reads back in ITK's LPS frame as diag(-1, -1, 1))."""
    return (case.origin is not None and np.allclose(case.origin, 0.0)
            and np.allclose(np.abs(case.direction), np.eye(3).ravel()))


def header_free(case: Case) -> bool:
    """True for a volume read from a NIfTI written without geometry: unit spacing, and
    :func:`unrotated_at_origin`."""
    return case.spacing is not None and np.allclose(case.spacing, 1.0) and unrotated_at_origin(case)


def check_same_grid(what: str, other: Case, ref: Case, ref_name: str = "the scan") -> None:
    """ValueError naming ``what`` unless ``other`` lies on ``ref``'s voxel grid: the same shape,
    spacing (to 0.1%), direction (to 1e-3) and origin (to a tenth of the smallest voxel side).
    Geometry that either side lacks (h5 files without it) is not compared."""
    if other.image.shape != ref.image.shape:
        raise ValueError(f"{what}: shape {other.image.shape} differs from {ref_name}'s {ref.image.shape}")
    checks = [("spacing", lambda a, b: np.allclose(a, b, rtol=1e-3)),
              ("direction", lambda a, b: np.allclose(a, b, atol=1e-3)),
              ("origin", lambda a, b: np.allclose(a, b, rtol=0, atol=0.1 * min(ref.spacing or (1.0,))))]
    for key, same in checks:
        a, b = getattr(other, key), getattr(ref, key)
        if a is not None and b is not None and not same(a, b):
            raise ValueError(f"{what}: {key} {tuple(round(v, 4) for v in a)} differs from {ref_name}'s "
                             f"{tuple(round(v, 4) for v in b)}")


def read_labels_on(path: str, ref: Case, top: int = NUM_CLASSES - 1, ref_name: str = "the scan") -> np.ndarray:
    """(Z, H, W) uint8 label volume of the NIfTI or h5 (key ``label``) ``path``, whole numbers in
    0..``top``, on ``ref``'s grid (:func:`check_same_grid`; a NIfTI without geometry,
    :func:`header_free`, is matched by shape; an h5 file's geometry attributes are compared where
    both record them). A ``ref`` without an origin and direction (h5 data) has no orientation to
    check against: a NIfTI :func:`unrotated_at_origin` is matched by shape, any other must lie on
    the grid :func:`write_nifti` gives ``ref`` (at the origin, unrotated). OSError or ValueError
    naming the file otherwise."""
    if path.lower().endswith(".h5"):
        labels = read_h5_labels(path, top)
        check_same_grid(path, labels, ref, ref_name)
        return labels.image
    labels = read_scan(path)
    if header_free(labels) or (ref.direction is None and unrotated_at_origin(labels)):
        labels = Case(labels.name, labels.image)
    elif ref.direction is None:
        ref = Case(ref.name, ref.image, spacing=ref.spacing, origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
        ref_name = f"{ref_name} (at the origin, unrotated: it has no geometry)"
    check_same_grid(path, labels, ref, ref_name)
    check_labels(path, labels.image, top)
    return labels.image.astype(np.uint8)  # whole numbers, checked; a float file would fail the metrics


NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def is_nifti(path: str) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name, in any letter case (ITK reads ``.NII.GZ`` too)."""
    return path.lower().endswith(NIFTI_EXTENSIONS)


# Scans in formats other than NIfTI that ITK or DICOM tools write; other files (notes, dcm2niix's
# .json, checksums, previews) may lie beside NIfTI scans.
OTHER_SCAN_EXTENSIONS = (".mha", ".mhd", ".nrrd", ".nhdr", ".hdr", ".img", ".mgz", ".mgh", ".dcm", ".ima",
                         ".nii.bz2", ".nii.zip")


def other_scans(folder: str) -> list[str]:
    """The scans in another format than NIfTI in ``folder`` (by extension, or DICOM files by
    their ``DICM`` marker), sorted: a folder of NIfTI input would otherwise skip them without a
    word. Hidden files and files of other kinds are let be."""
    def is_dicom(path: str) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(132)[128:] == b"DICM"
        except OSError:
            return False

    paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
             if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)) and not is_nifti(f)]
    return [p for p in paths if p.lower().endswith(OTHER_SCAN_EXTENSIONS) or is_dicom(p)]


def nifti_stem(path: str) -> str:
    """``dir/subject3_DE.nii.gz`` (or ``.NII.GZ``, ``.nii``) -> ``subject3_DE``."""
    name = os.path.basename(path)
    for ext in NIFTI_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def same_name_files(path: str) -> list[str]:
    """The other NIfTI files beside ``path`` with its stem (``a.nii`` beside ``a.nii.gz``): given
    one, ITK's NIfTI reader may read the other's voxels under this file's header."""
    folder, name = os.path.split(os.path.abspath(path))
    if not is_nifti(name):
        return []
    stem = nifti_stem(name)
    try:
        names = os.listdir(folder)
    except OSError:  # a missing or unlistable folder: reading the file itself will say what is wrong
        return []
    return sorted(os.path.join(folder, f) for f in names if f != name and is_nifti(f) and nifti_stem(f) == stem)


# What a conversion (or the phantom generator) writes into a data root; other files there (caches
# such as random_walker_cache) stay.
ROOT_OUTPUTS = (VOLUME_DIR, SLICE_DIR, DATASET_JSON, SPLITS_JSON)


def held_outputs(out: str, names) -> list[str]:
    """The entries of ``names`` that ``out`` holds: a file, or a folder with anything in it."""
    return [n for n in names if os.path.isfile(os.path.join(out, n))
            or (os.path.isdir(os.path.join(out, n)) and os.listdir(os.path.join(out, n)))]


@contextlib.contextmanager
def staged(path: str, what: str):
    """A new folder beside ``path`` for a replacement of its entries to be written to first, so
    that a failure leaves ``path`` as it was; on the same file system, so that
    :func:`replace_outputs` moves the entries in by renaming. Removed at the end of the block,
    with what it still holds (``path``'s old entries once replaced)."""
    dest = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.realpath(path))}.{what}.",
                            dir=os.path.dirname(os.path.realpath(path)))
    try:
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def replace_outputs(new: str, out: str, names) -> None:
    """Make the entries ``names`` of ``out`` those written to ``new`` (:func:`staged`; one not
    written there is removed from ``out``). Out's old entries move into ``new``, which the caller
    deletes; renames within one file system, so nothing is copied."""
    old = os.path.join(new, ".old")
    os.mkdir(old)
    for n in names:
        if os.path.lexists(os.path.join(out, n)):
            os.rename(os.path.join(out, n), os.path.join(old, n))
    for n in names:
        if os.path.lexists(os.path.join(new, n)):
            os.rename(os.path.join(new, n), os.path.join(out, n))


def check_outputs(flag: str, paths, overwrite: bool = False) -> None:
    """ValueError naming ``flag`` when a file of ``paths`` cannot be written (a folder on its way
    is a file, or it is a folder) or, unless ``overwrite``, already exists. Called before any work,
    so that a job never fails at its end and nothing on disk is replaced unasked."""
    for path in paths:
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"{flag}: {parent} is a file, not a folder")
        if os.path.isdir(path):
            raise ValueError(f"{flag}: {path} is a folder")
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"{flag}: {path} exists; pass --overwrite to replace it")


# The NIfTI header's ``descrip`` of every segmentation this project writes starts with this, then
# holds a digest of its voxels: ``--overwrite`` replaces only such files whose voxels still match
# it, never a scan, a user's own masks, or a prediction a user has corrected since. A digest of
# the class names its labels 1..C stand for follows (where the model records them), so that
# scoring it against data whose labels mean other classes is refused (:func:`check_segmentation_classes`).
SEGMENTATION_NOTE = "MaskMixAdv segmentation"


def classes_digest(names) -> str:
    """8 hex digits naming the class names ``names`` of labels 1..C, in order."""
    return hashlib.sha256(",".join(names).encode()).hexdigest()[:8]


def labels_digest(labels: np.ndarray) -> str:
    """16 hex digits of the SHA-256 of uint8 ``labels`` (Z, H, W) in C order."""
    return hashlib.sha256(np.ascontiguousarray(labels, np.uint8).tobytes()).hexdigest()[:16]


def nifti_description(path: str) -> str | None:
    """The ``descrip`` field of the NIfTI header of ``path`` ("" when empty), None when unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader.GetMetaData("descrip").strip() if reader.HasMetaDataKey("descrip") else ""


def check_segmentation_outputs(flag: str, paths, overwrite: bool = False) -> None:
    """:func:`check_outputs` for segmentations :func:`write_segmentation` will write, and with
    ``overwrite`` a ValueError naming ``flag`` when an existing NIfTI file of ``paths`` is not one it
    wrote, or has been edited since: a scan, a user's masks (e.g. ``--output`` aimed at the data set's
    ``labels/``, where prediction names match, also one whose header ITK cannot read), or a
    prediction corrected by hand."""
    check_outputs(flag, paths, overwrite)
    for path in paths:
        if not (os.path.isfile(path) and is_nifti(path)):
            continue
        note = nifti_description(path)
        if note is None or not note.startswith(SEGMENTATION_NOTE):
            # A header ITK cannot read may still be a user's mask that other tools open.
            what = "ITK cannot read its header" if note is None else f"its header's descrip is {note!r}"
            raise ValueError(f"{flag}: {path} exists and is not a segmentation this project wrote ({what}); "
                             "--overwrite replaces only those: write elsewhere, or remove the file yourself")
        try:
            voxels = sitk.GetArrayFromImage(sitk.ReadImage(path))
        except RuntimeError:
            voxels = None
        if voxels is None or note.split()[:3] != f"{SEGMENTATION_NOTE} {labels_digest(voxels)}".split():
            why = ("its voxels cannot be read" if voxels is None else "it carries no digest of its voxels (written "
                   "before edits could be told)" if note == SEGMENTATION_NOTE else "its voxels have changed since")
            raise ValueError(f"{flag}: {path} was written by this project but {why}: a corrected segmentation? "
                             "--overwrite would lose the edits: write elsewhere, or remove the file yourself")


def write_segmentation(path: str, labels: np.ndarray, scan: Case, class_names=None) -> None:
    """Write uint8 ``labels`` (Z, H, W) with the geometry of ``scan`` (:func:`write_nifti`), its
    header's ``descrip`` marking it as this project's (``SEGMENTATION_NOTE``, :func:`labels_digest`
    and, given the names of labels 1..C, :func:`classes_digest`)."""
    labels = np.asarray(labels).astype(np.uint8)
    classes = "" if class_names is None else f" {classes_digest(class_names)}"
    write_nifti(path, labels, scan.spacing, scan.origin, scan.direction, scan.unoriented,
                note=f"{SEGMENTATION_NOTE} {labels_digest(labels)}{classes}")


def check_segmentation_classes(path: str, class_names, root: str) -> None:
    """ValueError naming ``path`` when it is a segmentation this project wrote for other classes
    than ``class_names`` (those of the data ``root``): an LV-only model's label 1 was scored as
    the RV of an RV/MYO/LV root. Files that record no classes are not checked."""
    note = (nifti_description(path) or "").split()
    if note[:2] == SEGMENTATION_NOTE.split() and len(note) > 3 and note[3] != classes_digest(class_names):
        raise ValueError(f"{path}: predicted by a model of other classes than {root}'s ({', '.join(class_names)}); "
                         "score it against its model's data")


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", fsync: bool = False):
    """A temporary path beside ``path`` (unique to this process, ending in ``suffix``: ITK picks
    a format by it) for the block to write; renamed to ``path`` when the block succeeds and removed
    when it fails, so a failed write neither replaces a good file nor leaves a partial one. With
    ``fsync`` the file, then its folder after the rename, are flushed to disk (checkpoints)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{os.path.abspath(path)}.{os.getpid()}.tmp{suffix}"
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_nifti(path: str, array: np.ndarray, spacing=None, origin=None, direction=None,
                unoriented: bool = False, note: str | None = None) -> None:
    """Write ``array`` (e.g. (Z, H, W)) as NIfTI; ``spacing`` in the array's axis order (mm),
    ``origin`` and ``direction`` as ITK's (x, y, z) and row-major 3x3 (see :func:`read_scan`).
    ``unoriented`` writes qform_code = sform_code = 0, as the scan read had (ITK always writes
    1); ``note`` goes to the header's ``descrip`` (up to 80 characters). Atomic (:func:`atomic_path`)."""
    img = sitk.GetImageFromArray(array)
    if note is not None:
        img.SetMetaData("ITK_FileNotes", note)  # ITK's name for descrip
    if spacing is not None:
        img.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # ITK wants (x, y, z)
    if origin is not None:
        img.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        img.SetDirection(tuple(float(d) for d in direction))
    ext = ".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1]  # ITK picks the format by it
    with atomic_path(path, ext) as tmp:
        sitk.WriteImage(img, tmp)
        if unoriented:
            clear_orientation_codes(tmp)


def clear_orientation_codes(path: str) -> None:
    """Set qform_code and sform_code of the NIfTI-1 file ``path`` (as ITK writes it) to 0."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    data[252:256] = struct.pack(order + "2h", 0, 0)
    with opener(path, "wb") as f:
        f.write(data)


# Share of the LV's border (4-neighbour pixel edges) that must touch the MYO: 0.98-1.0 on every
# ACDC and MSCMR volume, at most 0.46 on any of them with RV, MYO, LV numbered in another order.
ENCLOSED = 0.75


# Names of the LV cavity and the myocardium in data sets' own words (upper case, letters and digits
# only): ACDC's, nnU-Net's ACDC task (MLV, LVC), M&Ms', MS-CMRSeg's.
LV_NAMES = {"LV", "LVC", "LVCAVITY", "LVBP", "LVBLOODPOOL", "LEFTVENTRICLE"}
MYO_NAMES = {"MYO", "MLV", "MYOCARDIUM", "LVMYO", "LVMYOCARDIUM"}


def check_class_order(masks, class_names, what: str, against: str) -> None:
    """ValueError naming ``what`` (e.g. "the shape prior") when the (h, w) dense ``masks`` (or
    (Z, H, W) volumes) do not number the structures as ``class_names`` (labels 1..C) do, judged by
    anatomy: the MYO encloses the LV, so at least ``ENCLOSED`` of the LV's border must touch the
    MYO. ``against`` says where the names come from. No check unless the names include an LV and a
    MYO (:data:`LV_NAMES`, :data:`MYO_NAMES`)."""
    names = [re.sub(r"[^A-Z0-9]", "", str(n).upper()) for n in class_names]
    lv = next((i for i, n in enumerate(names, start=1) if n in LV_NAMES), None)
    myo = next((i for i, n in enumerate(names, start=1) if n in MYO_NAMES), None)
    if lv is None or myo is None:
        return
    border = touching = 0
    for m in masks:
        for a, b in ((m[..., 1:, :], m[..., :-1, :]), (m[..., 1:], m[..., :-1])):
            edge = (a == lv) != (b == lv)
            border += int(np.count_nonzero(edge))
            touching += int(np.count_nonzero(edge & ((a == myo) | (b == myo))))
    if border and touching < ENCLOSED * border:
        order = ", ".join(f"{i} {n}" for i, n in enumerate(class_names, start=1))
        raise ValueError(f"{what}'s MYO (class {myo}) touches only {100 * touching / border:.0f}% of its LV's "
                         f"(class {lv}) border, not enclosing it: its masks do not number the classes as {against} "
                         f"({order}); relabel them")


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


# Split folders of a NIfTI data set and the split each one feeds.
NIFTI_SPLITS = {"train": "train", "val": "val", "test": "test", "TestSet": "test"}


def unread_entries(src: str) -> list[str]:
    """What :func:`find_nifti_dataset` would skip under ``src`` although it may hold cases: a
    folder other than the split folders (``Val/``, ``validation/``), NIfTI files outside a
    split's ``images/`` and ``labels/``, and folders and scans in other formats inside those
    (:func:`other_scans`; hidden entries aside)."""
    skipped = []
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.startswith("."):
            continue
        if os.path.isdir(path) and entry not in NIFTI_SPLITS:
            skipped.append(f"{path}/ (not a split folder: {', '.join(NIFTI_SPLITS)})")
        elif is_nifti(entry):
            skipped.append(f"{path} (outside a split folder)")
        elif entry in NIFTI_SPLITS:
            for sub in sorted(os.listdir(path)):
                inner = os.path.join(path, sub)
                if sub in ("images", "labels") and os.path.isdir(inner):
                    skipped += [f"{os.path.join(inner, f)}/ (a folder: only files in {sub}/ are read)"
                                for f in sorted(os.listdir(inner))
                                if not f.startswith(".") and os.path.isdir(os.path.join(inner, f))]
                    skipped += [f"{f} (not a NIfTI file: .nii or .nii.gz)" for f in other_scans(inner)]
                elif not sub.startswith(".") and (os.path.isdir(inner) or is_nifti(sub)):
                    skipped.append(f"{inner}{'/' if os.path.isdir(inner) else ''} (not in images/ or labels/)")
    return skipped


def find_nifti_dataset(src: str) -> dict[str, list[tuple[str, str]]]:
    """The (image, label) file pairs of each split of a NIfTI data set: ``{split: [(image,
    label), ...]}`` for the split folders present (``train``, ``val``, ``test`` or ``TestSet``),
    each holding ``images/`` and ``labels/``.

    Matching rule: a label belongs to the image whose stem is the label's stem or the longest
    image stem that the label's stem starts with followed by ``_`` (``subject3_DE.nii.gz`` <->
    ``subject3_DE.nii.gz``, ``subject3_DE_scribble.nii.gz``, ``subject3_DE_manual.nii.gz``).
    Every image needs exactly one label. ValueError listing every unmatched or doubly matched
    file, and every entry that would be skipped (:func:`unread_entries`), in one message.
    """
    if not os.path.isdir(src):
        raise ValueError(f"--nifti {src}: no such folder")
    found, problems = {}, unread_entries(src)
    for folder, split in NIFTI_SPLITS.items():
        base = os.path.join(src, folder)
        if not os.path.isdir(base):
            continue
        if split in found:
            raise ValueError(f"--nifti {src}: both test/ and TestSet/ exist; keep one")
        listing = {}
        for sub in ("images", "labels"):
            d = os.path.join(base, sub)
            listing[sub] = sorted(os.path.join(d, f) for f in os.listdir(d) if is_nifti(f)) if os.path.isdir(d) else []
        images = {}
        for path in listing["images"]:
            if nifti_stem(path) in images:
                problems.append(f"{path} (same name as {os.path.basename(images[nifti_stem(path)])})")
            images.setdefault(nifti_stem(path), path)
        labels: dict[str, list[str]] = {s: [] for s in images}
        for lab in listing["labels"]:
            stem = nifti_stem(lab)
            owners = [s for s in images if stem == s or stem.startswith(s + "_")]
            if not owners:
                problems.append(f"{lab} (no image)")
            else:
                labels[max(owners, key=len)].append(lab)
        pairs = []
        for stem, img in images.items():
            if len(labels[stem]) != 1:
                problems.append(f"{img} ({'no label' if not labels[stem] else 'several labels: ' + ', '.join(map(os.path.basename, labels[stem]))})")
            else:
                pairs.append((img, labels[stem][0]))
        found[split] = pairs
    if problems:
        raise ValueError(f"--nifti {src}: unmatched or unread files: " + "; ".join(problems))
    if not any(found.values()):
        raise ValueError(f"--nifti {src}: no {{train,val,test,TestSet}}/images/*.nii.gz files")
    return found


def label_kind(path: str, labels: np.ndarray) -> str:
    """``"scribble"`` when the label file's name says so or it holds the unlabeled value 4,
    else ``"label"`` (a dense mask)."""
    if "scribble" in nifti_stem(path).lower() or bool((labels == UNLABELED).any()):
        return "scribble"
    return "label"
