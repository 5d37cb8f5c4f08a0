"""Segmentations this project writes: marked in the NIfTI header with a digest of their voxels
and classes, so that ``--overwrite`` never replaces a scan, a user's masks or a corrected
prediction, and scoring refuses a prediction of other classes."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import SimpleITK as sitk

from dataloaders.io.layout import Case
from dataloaders.io.nifti import is_nifti, write_nifti
from dataloaders.io.outputs import check_outputs


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
