"""A data root's layout: case names and the patients they group into, class names
(``dataset.json``), file paths, and the label and voxel-size checks every reader shares."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np


VOLUME_DIR = "ACDC_training_volumes"
SLICE_DIR = "ACDC_training_slices"
KEYS = ("image", "label", "scribble")
GEOMETRY = ("spacing", "origin", "direction")  # attributes of an h5 file (see dataloaders.io)
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
