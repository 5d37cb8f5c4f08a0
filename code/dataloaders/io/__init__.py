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

The package's modules, each re-exported here (``from dataloaders import io``; ``io.read_case``):
:mod:`~dataloaders.io.layout` (case names, patients, classes, paths), :mod:`~dataloaders.io.h5`
(this layout's files), :mod:`~dataloaders.io.nifti` (NIfTI scans and label volumes),
:mod:`~dataloaders.io.nifti_dataset` (a NIfTI data set's folders),
:mod:`~dataloaders.io.segmentations` (the segmentations this project writes) and
:mod:`~dataloaders.io.outputs` (writing without losing what is on disk). A new data source
is a module here.
"""
from __future__ import annotations

from dataloaders.io.h5 import (
    h5_datasets, num_slices, read_case, read_h5, read_h5_labels, root_digest, write_case, write_h5,
    write_slices)
from dataloaders.io.layout import (
    CLASS_NAMES, Case, DATASET_JSON, KEYS, MIN_UNLABELED, NUM_CLASSES, SLICE_DIR, SPLITS_JSON,
    SUPERVISION_TYPES, UNLABELED, VOLUME_DIR, check_class_names, check_class_order, check_labels,
    check_mostly_unlabeled, check_patient_pattern, check_scribble_classes, class_names, list_cases,
    patient_of, patient_pattern, read_json_object, root_classes, slice_path, volume_path, write_dataset_json)
from dataloaders.io.nifti import (
    check_same_grid, header_free, is_nifti, nifti_stem, qform_affine, read_labels_on, read_nifti, read_scan,
    write_nifti)
from dataloaders.io.nifti_dataset import (
    find_nifti_dataset, label_kind, other_scans, unread_entries)
from dataloaders.io.outputs import (
    ROOT_OUTPUTS, atomic_path, check_outputs, held_outputs, replace_outputs, staged)
from dataloaders.io.segmentations import (
    SEGMENTATION_NOTE, check_segmentation_classes, check_segmentation_outputs, classes_digest, labels_digest,
    nifti_description, write_segmentation)

__all__ = [
    "CLASS_NAMES", "Case", "DATASET_JSON", "KEYS", "MIN_UNLABELED", "NUM_CLASSES", "ROOT_OUTPUTS",
    "SEGMENTATION_NOTE", "SLICE_DIR", "SPLITS_JSON", "SUPERVISION_TYPES", "UNLABELED", "VOLUME_DIR",
    "atomic_path", "check_class_names", "check_class_order", "check_labels", "check_mostly_unlabeled",
    "check_outputs", "check_patient_pattern", "check_same_grid", "check_scribble_classes",
    "check_segmentation_classes", "check_segmentation_outputs", "class_names", "classes_digest",
    "find_nifti_dataset", "h5_datasets", "header_free", "held_outputs", "is_nifti", "label_kind",
    "labels_digest", "list_cases", "nifti_description", "nifti_stem", "num_slices", "other_scans",
    "patient_of", "patient_pattern", "qform_affine", "read_case", "read_h5", "read_h5_labels",
    "read_json_object", "read_labels_on", "read_nifti", "read_scan", "replace_outputs", "root_classes",
    "root_digest", "slice_path", "staged", "unread_entries", "volume_path", "write_case",
    "write_dataset_json", "write_h5", "write_nifti", "write_segmentation", "write_slices",
]
