"""Build the ACDC h5 layout from the raw ACDC NIfTI tree or any NIfTI data set, or derive slice
files from volumes.

    python code/acdc_data_processing.py --raw RAW --out OUT [--scribbles DIR] [--seed S]
    python code/acdc_data_processing.py --nifti SRC --out OUT [--class_names RV MYO LV]
                                        [--patient_pattern REGEX] [--seed S]
    python code/acdc_data_processing.py --volumes DIR --out OUT

``--raw``: RAW is the official ACDC training tree, ``RAW/patientXXX/patientXXX_frameYY.nii.gz``
with its dense mask ``patientXXX_frameYY_gt.nii.gz`` (the 4-D ``_4d.nii.gz`` cine and
``Info.cfg`` are ignored; ``.nii`` and capitals are read too). Every frame with an image or a mask becomes
``OUT/ACDC_training_volumes/<case>.h5`` plus ``OUT/ACDC_training_slices/<case>_slice_<z>.h5``:
image float32 normalised as the published files (99th-percentile clip, min-max to [0, 1]),
label uint8, scribble uint16, and the scan's geometry as attributes (``spacing`` (z, y, x) mm,
``origin``, ``direction``), so that ``test_2D_fully.py --save_nii`` writes predictions onto the scan.
Scribbles are read from ``--scribbles DIR/<case>_scribble.nii.gz`` (e.g.
``patient001_frame01_scribble.nii.gz``; 0..3 classes, 4 unlabeled, same grid as the image), or,
without ``--scribbles``, generated from the mask (``dataloaders.scribbles``, seeded by ``--seed``
and the case, so reruns agree). Masks and scribbles must have the image's shape, spacing, origin
and direction (a file written without geometry, unit spacing and zero origin, is matched by shape)
and whole-number labels.

``--nifti``: SRC holds one folder per split, ``train/``, ``val/``, ``test/`` or ``TestSet/`` (any
subset), each with ``images/<case>.nii.gz`` and ``labels/`` (the layout of MS-CMRSeg). A label
file is matched to its image by name (``dataloaders.io.find_nifti_dataset``: the image stem,
optionally followed by ``_anything``, e.g. ``subject3_DE_scribble.nii.gz`` or
``subject3_DE_manual.nii.gz`` for ``subject3_DE.nii.gz``); unmatched files, and folders or files
the layout would skip (``Val/``, a subfolder of ``images/``), are listed in one error. A label is
a scribble (0..3, 4 = unlabeled) when its name contains "scribble" or it holds
the value 4, a dense mask (0..C) otherwise; training cases with only a dense mask get scribbles
generated from it, as with ``--raw``. Each case keeps its geometry (spacing, origin, direction;
see ``dataloaders.io.read_scan`` for the orientation rule), ``OUT/splits.json`` records the
split of every case (``--fold split`` trains and tests on it), and ``OUT/dataset.json`` the
class names (distinct) and the optional patient-grouping regex (default: a case is its own patient;
a regex must match every case name, and the log says how many patients it finds; one that makes
all cases of a set one patient is refused).

``--volumes``: DIR holds ``<case>.h5`` volumes (image, label, scribble); their 2-D slices
``volume[key][z]`` (dtypes kept) are written to ``OUT/ACDC_training_slices``. With
``--volumes X/ACDC_training_volumes --out X`` the root X becomes complete; into another OUT the
volume files are copied to ``OUT/ACDC_training_volumes`` too, with the ``dataset.json`` and
``splits.json`` of the root they lie in.

A case that cannot be read (unreadable NIfTI or h5, missing mask or image, shapes that disagree,
missing key) is reported on stderr in one line naming the file; the other cases are still
written, and the exit status is 1.

An OUT that already holds converted data (``ACDC_training_volumes`` or ``ACDC_training_slices``
with files, ``dataset.json``, ``splits.json``; with ``--volumes`` into its own root, the slices
only) is refused unless ``--overwrite``: its old files would mix with the new ones (the extra
slices of a shortened volume, a patient removed from the source) and train. With
``--overwrite`` the conversion is written to a new folder beside OUT and replaces those entries
only when every case converted, so a failed conversion leaves OUT as it was. Other files in OUT
(caches such as ``random_walker_cache``) stay.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import zlib
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from dataloaders import io
from dataloaders.io import KEYS, UNLABELED, Case, read_h5, write_case, write_slices
from dataloaders.intensity import normalise_intensity
from dataloaders.scribbles import scribble_volume

CASE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
FRAME_RE = re.compile(r"^(patient\d+_frame\d+)(_gt)?$", re.IGNORECASE)  # of a NIfTI stem (io.nifti_stem)


class CaseError(Exception):
    """A case that cannot be processed; the message names the offending file."""


def check_distinct_files(what: str, paths, kind: str = "scan") -> None:
    """ValueError naming ``what`` and two of the files ``paths`` with the same bytes: one scan
    under two case names, which could then be trained on and tested, or (``kind`` "mask") one
    mask copied to another case, which would be scored against it."""
    why = {"scan": "one scan under two case names (it could be trained on and tested)",
           "mask": "one mask for two cases (a copy: one of them would be scored against another's truth)"}[kind]
    seen: dict[str, str] = {}
    for path in paths:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest in seen:
            raise ValueError(f"{what}: {seen[digest]} and {path} are the same file: {why}; remove one")
        seen[digest] = path


def find_raw_cases(raw: str) -> dict[str, tuple[str | None, str | None]]:
    """``{case: (image path or None, mask path or None)}`` of the frames under ``raw/patient*/``
    (names and ``.nii.gz`` or ``.nii`` in any letter case; cases named in lower case); ValueError
    naming both files when a frame's image or mask is found twice, and naming a frame file that
    lies outside a patient folder (it was skipped without a word)."""
    if not os.path.isdir(raw):
        raise FileNotFoundError(f"--raw {raw}: no such folder")
    cases: dict[str, list] = {}
    entries = sorted(os.listdir(raw))
    for patient in entries:
        folder = os.path.join(raw, patient)
        if not os.path.isdir(folder):
            if io.is_nifti(patient) and FRAME_RE.match(io.nifti_stem(patient)):
                own = patient.split("_")[0]
                own = next((e for e in entries if e.lower() == own.lower() and os.path.isdir(os.path.join(raw, e))), own)
                raise ValueError(f"--raw {raw}: {patient} lies outside a patient folder; move it into {raw}/{own}/")
            continue
        if not patient.lower().startswith("patient"):
            continue
        for f in sorted(os.listdir(folder)):
            m = FRAME_RE.match(io.nifti_stem(f)) if io.is_nifti(f) else None
            if m:
                paths, kind = cases.setdefault(m.group(1).lower(), [None, None]), 1 if m.group(2) else 0
                if paths[kind] is not None:  # e.g. a copy in a patient001_old folder: one would replace the other
                    raise ValueError(f"--raw {raw}: {m.group(1).lower()}'s {('image', 'mask')[kind]} is there twice, "
                                     f"{paths[kind]} and {os.path.join(folder, f)}; remove one")
                paths[kind] = os.path.join(folder, f)
    return {c: tuple(p) for c, p in sorted(cases.items())}


def read_volume(path: str) -> Case:
    """A 3-D NIfTI with its geometry (``io.read_scan``); ``CaseError`` naming the file."""
    try:
        return io.read_scan(path)
    except (OSError, ValueError) as e:
        raise CaseError(str(e)) from e


def read_labels_on(path: str, image: Case, top: int) -> np.ndarray:
    """(Z, H, W) labels of ``path`` on ``image``'s grid (``io.read_labels_on``); ``CaseError``."""
    try:
        return io.read_labels_on(path, image, top, "the image")
    except (OSError, ValueError) as e:
        raise CaseError(str(e)) from e


def without_unit_geometry(path: str, case: Case) -> Case:
    """``case`` without spacing, origin and direction when the header of its scan ``path`` holds
    none (``io.header_free``: 1 mm voxels unrotated at the origin, what ITK writes for a bare
    array). Kept, its distances would pass for mm beside other cases' real ones; without them the
    root's own rules apply: distances in voxels, and a root that mixes both refused wherever
    distances are averaged (``inference.distance_units``)."""
    if not io.header_free(case):
        return case
    tqdm.write(f"note: {path}: no geometry in its header (1 mm voxels, unrotated at the origin): written "
               "without a spacing, so that its distances count in voxels")
    return dataclasses.replace(case, spacing=None, origin=None, direction=None)


def case_seed(seed: int, case: str) -> list[int]:
    """Seed of a case's generated scribbles: stable across runs and independent of case order."""
    return [seed, zlib.crc32(case.encode())]


def normalised(path: str, image: np.ndarray) -> np.ndarray:
    """``normalise_intensity`` of the image read from ``path``; ``CaseError`` naming the file."""
    try:
        return normalise_intensity(image, path)
    except ValueError as e:
        raise CaseError(str(e)) from e


def scribble_paths(scribble_dir: str, cases) -> dict[str, str]:
    """``{case: scribble_dir/<case>_scribble.nii.gz}`` for ``cases``, the file names matched in any
    letter case, as the frames are read (the folder is listed once)."""
    found: dict[str, str] = {}
    for f in sorted(os.listdir(scribble_dir)):
        found.setdefault(f.lower(), f)
    names = {case: f"{case}_scribble.nii.gz" for case in cases}
    return {case: os.path.join(scribble_dir, found.get(name.lower(), name)) for case, name in names.items()}


def process_raw_case(case: str, image_path: str | None, gt_path: str | None,
                     scribble_path: str | None, seed: int) -> Case:
    """Read one raw ACDC frame into a ``Case`` (image float32 [0, 1], label uint8, scribble uint16);
    without ``scribble_path`` the scribbles are generated from the mask."""
    if image_path is None:
        raise CaseError(f"{gt_path}: mask without its image {case}.nii.gz")
    if gt_path is None:
        raise CaseError(f"{image_path}: image without its mask {case}_gt.nii.gz")
    image = read_volume(image_path)
    label = read_labels_on(gt_path, image, io.NUM_CLASSES - 1).astype(np.uint8)
    try:
        io.check_class_order([label], io.CLASS_NAMES, f"{gt_path}: the mask", "ACDC does")
    except ValueError as e:
        raise CaseError(str(e)) from e
    if scribble_path is not None:
        if not os.path.isfile(scribble_path):
            raise CaseError(f"{scribble_path}: missing scribble file")
        scribble = read_labels_on(scribble_path, image, UNLABELED)
        check_mostly_unlabeled(scribble_path, scribble)
        scribble = scribble.astype(np.uint16)
    else:
        scribble = scribble_volume(label, np.random.default_rng(case_seed(seed, case)))
    converted = dataclasses.replace(image, name=case, image=normalised(image_path, image.image), label=label,
                                    scribble=scribble)
    return without_unit_geometry(image_path, converted)


# A scribble leaves most voxels 4 (unlabeled; ACDC's strokes cover about 4%): a label file with 4
# on fewer of its voxels than this is a dense mask with stray 4s or a fourth structure labelled 4,
# or a scribble that marks the unstroked voxels 0 (each would train as a background stroke).
def check_mostly_unlabeled(path: str, scribble: np.ndarray) -> None:
    """CaseError naming ``path`` when ``scribble`` leaves under ``io.MIN_UNLABELED`` of its voxels 4."""
    try:
        io.check_mostly_unlabeled(path, scribble)
    except ValueError as e:
        raise CaseError(str(e)) from None


def process_nifti_case(split: str, image_path: str, label_path: str, seed: int,
                       class_names=io.CLASS_NAMES) -> Case:
    """Read one image and its label file of a NIfTI data set into a ``Case`` with its geometry:
    image float32 [0, 1], ``label`` (dense mask) or ``scribble`` (given, or generated from the
    dense mask of a training case). ``CaseError`` naming the file for what cannot be read or
    would mislead: a scribble (by its name or its 4s) with 4 on under ``io.MIN_UNLABELED`` of the
    voxels (a dense mask with stray 4s, or unstroked voxels marked 0), and a scribble for a val
    or test case (those are scored, against dense masks); a dense mask that does not number the
    structures as ``class_names`` do (:func:`io.check_class_order`)."""
    num_classes = len(class_names) + 1
    try:
        scan = io.read_scan(image_path)
        labels = io.read_labels_on(label_path, scan, UNLABELED, "the image")
        kind = io.label_kind(label_path, labels)
        if kind == "scribble":
            io.check_scribble_classes(f"{label_path}: scribble", labels, num_classes)
        else:
            io.check_labels(label_path, labels, num_classes - 1)
            io.check_class_order([labels], class_names, f"{label_path}: the mask", "--class_names declares")
    except (OSError, ValueError) as e:
        raise CaseError(str(e)) from e
    if kind == "scribble":
        check_mostly_unlabeled(label_path, labels)
        if split != "train":
            raise CaseError(f"{label_path}: a scribble, but {split} cases are scored and need a dense mask "
                            f"(0..{num_classes - 1} everywhere)")
    label = labels.astype(np.uint8) if kind == "label" else None
    if kind == "scribble":
        scribble = labels.astype(np.uint16)
    elif split == "train":
        scribble = scribble_volume(label, np.random.default_rng(case_seed(seed, scan.name)))
    else:
        scribble = None
    converted = dataclasses.replace(scan, image=normalised(image_path, scan.image), label=label, scribble=scribble)
    return without_unit_geometry(image_path, converted)


def write_splits_json(out: str, splits: dict[str, list[str]]) -> None:
    """``OUT/splits.json``: {"train": [...], "val": [...], "test": [...]} (the parts present)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "splits.json"), "w") as f:
        json.dump(splits, f, indent=2)


def process_volume_file(path: str, out: str, copy_volume: bool = False) -> int:
    """Write the slice files of one ``<case>.h5`` volume into ``out`` (and with ``copy_volume``
    the volume file itself, for a root other than its own); returns the slice count."""
    case = os.path.basename(path)[:-3]
    try:
        d = read_h5(path)
    except (OSError, ValueError) as e:
        raise CaseError(str(e)) from e
    missing = [k for k in KEYS if k not in d]
    if missing:
        raise CaseError(f"{path}: missing key(s) {', '.join(missing)}")
    arrays = {k: d[k] for k in KEYS}
    shapes = {k: a.shape for k, a in arrays.items()}
    if len(set(shapes.values())) != 1 or arrays["image"].ndim != 3:
        raise CaseError(f"{path}: keys have shapes {shapes}, expected one (Z, H, W) shape")
    if copy_volume:
        os.makedirs(os.path.join(out, io.VOLUME_DIR), exist_ok=True)
        shutil.copyfile(path, io.volume_path(out, case))
    return write_slices(out, case, arrays, d["spacing"])


def copy_root_files(src: str):
    """A ``finish(dest, failed)`` step that copies the class names and splits of the data root
    ``src`` the volumes come from (``dataset.json``, ``splits.json``, where it has them), so that
    a root built from its volumes numbers and splits its cases alike."""
    def finish(dest: str, failed) -> None:
        for name in (io.DATASET_JSON, io.SPLITS_JSON):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
    return finish


def _run(jobs, dest: str, desc: str) -> list[str]:
    """Run ``(name, fn)`` jobs, ``fn(dest)``, with a progress bar; one stderr line per failure;
    the names that failed."""
    failed = []
    for name, fn in tqdm(jobs, desc=desc, unit="case"):
        try:
            fn(dest)
        except CaseError as e:
            failed.append(name)
            tqdm.write(f"error: {e}", file=sys.stderr)
    return failed


# What a conversion does: (jobs: (name, fn(dest)) pairs, a progress-bar label, a finish(dest,
# failed names) step or None, whether it adds slices to the root its volumes are in).
Plan = tuple[list, str, Callable | None, bool]


def nifti_plan(args) -> Plan:
    """The conversion of a ``--nifti`` data set; ValueError naming the flag for one that cannot be
    converted as a whole (repeated or odd case names, one scan or mask for two cases, a
    ``--patient_pattern`` that does not group them)."""
    found = io.find_nifti_dataset(args.nifti)
    stems = [io.nifti_stem(img) for pairs in found.values() for img, _ in pairs]
    if len(set(stems)) != len(stems):
        raise ValueError(f"--nifti {args.nifti}: a case name appears in two splits")
    odd = next((img for pairs in found.values() for img, _ in pairs
                if not CASE_NAME_RE.match(io.nifti_stem(img))), None)
    if odd:  # slice files and label caches are named after the case
        raise ValueError(f"--nifti {args.nifti}: {odd}: case names may hold letters, digits, '_', '-' and '.' only")
    check_distinct_files(f"--nifti {args.nifti}", (img for pairs in found.values() for img, _ in pairs))
    check_distinct_files(f"--nifti {args.nifti}", (lab for pairs in found.values() for _, lab in pairs
                                                   if "scribble" not in io.nifti_stem(lab).lower()), "mask")
    if args.patient_pattern:
        # Checked here, not when k-fold training groups the cases long after.
        try:
            patients = {io.patient_of(s, args.patient_pattern) for s in stems}
        except ValueError as e:
            raise ValueError(f"--patient_pattern: {e}") from None
        if len(stems) > 1 and len(patients) == 1:
            raise ValueError(f"--patient_pattern {args.patient_pattern!r}: all {len(stems)} cases are one patient "
                             f"{patients.pop()!r}; its first group must name the patient")
        print(f"--patient_pattern: {len(patients)} patients in {len(stems)} cases")

    def job(split, img, lab):
        return lambda dest: write_case(dest, process_nifti_case(split, img, lab, args.seed, args.class_names))

    def finish(dest, failed_names):
        # Failed cases have no volume, so they stay out of splits.json.
        write_splits_json(dest, {split: [io.nifti_stem(img) for img, _ in pairs
                                         if io.nifti_stem(img) not in failed_names]
                                 for split, pairs in found.items()})
        extra = {"patient_pattern": args.patient_pattern} if args.patient_pattern else {}
        io.write_dataset_json(dest, args.class_names, **extra)

    jobs = [(io.nifti_stem(img), job(split, img, lab)) for split, pairs in found.items() for img, lab in pairs]
    return jobs, "cases", finish, False


def raw_plan(args) -> Plan:
    """The conversion of a raw ACDC tree (``--raw``, ``--scribbles``); ValueError naming the flag
    for a tree without cases or with one scan or mask for two cases."""
    cases = find_raw_cases(args.raw)
    if not cases:
        raise ValueError(f"--raw {args.raw}: no patientXXX/patientXXX_frameYY[_gt].nii.gz files")
    check_distinct_files(f"--raw {args.raw}", (image for image, _ in cases.values() if image is not None))
    check_distinct_files(f"--raw {args.raw}", (mask for _, mask in cases.values() if mask is not None), "mask")
    scribbles = scribble_paths(args.scribbles, cases) if args.scribbles is not None else {}

    def job(case, paths):
        return lambda dest: write_case(dest, process_raw_case(case, *paths, scribbles.get(case), args.seed))

    return [(c, job(c, p)) for c, p in cases.items()], "cases", None, False


def volumes_plan(args) -> Plan:
    """Slices cut from a folder of h5 volumes (``--volumes``); ValueError naming it when it is
    missing or holds none."""
    if not os.path.isdir(args.volumes):
        raise ValueError(f"--volumes {args.volumes}: no such folder")
    files = sorted(os.path.join(args.volumes, f) for f in os.listdir(args.volumes) if f.endswith(".h5"))
    if not files:
        raise ValueError(f"--volumes {args.volumes}: no .h5 volumes")
    # Into its own root it adds the slices to the volumes and json files already there; into
    # another, the volumes go with their slices (a root of slices alone lists no cases).
    in_place = os.path.realpath(args.volumes) == os.path.realpath(os.path.join(args.out, io.VOLUME_DIR))
    jobs = [(f, lambda dest, f=f: process_volume_file(f, dest, copy_volume=not in_place)) for f in files]
    finish = None if in_place else copy_root_files(os.path.dirname(os.path.abspath(args.volumes)))
    return jobs, "volumes", finish, in_place


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", help="raw ACDC tree RAW/patientXXX/patientXXX_frameYY[_gt].nii.gz")
    src.add_argument("--nifti", help="NIfTI data set SRC/{train,val,test,TestSet}/{images,labels}/")
    src.add_argument("--volumes", help="folder of <case>.h5 volumes to cut into slice files")
    ap.add_argument("--out", required=True, help="data root to write into")
    ap.add_argument("--scribbles", help="folder of <case>_scribble.nii.gz (with --raw)")
    ap.add_argument("--seed", type=int, default=0, help="seed of generated scribbles (--raw, --nifti)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace the converted data already in --out (volumes, slices, dataset.json, "
                         "splits.json); it is replaced only when every case converts (default: refuse)")
    ap.add_argument("--class_names", nargs="+",
                    help="distinct names of labels 1..C, written to OUT/dataset.json (with --nifti; "
                         "default: RV MYO LV)")
    ap.add_argument("--patient_pattern",
                    help="regex whose first group is a case's patient, for k-fold splits; it must match every "
                         "case name (with --nifti; default: each case is its own patient)")
    args = ap.parse_args(argv)
    if args.raw is None and args.scribbles is not None:
        ap.error("--scribbles only applies to --raw")
    # ACDC's own layouts (--raw, --volumes) are RV/MYO/LV by patient folder; the flags were ignored.
    for flag in ("class_names", "patient_pattern"):
        if args.nifti is None and getattr(args, flag) is not None:
            ap.error(f"--{flag} only applies to --nifti")
    args.class_names = args.class_names or list(io.CLASS_NAMES)
    if args.scribbles is not None and not os.path.isdir(args.scribbles):
        ap.error(f"--scribbles {args.scribbles}: no such folder")
    try:
        io.check_class_names("--class_names", args.class_names)
        if args.patient_pattern:
            io.check_patient_pattern("--patient_pattern", args.patient_pattern)
    except ValueError as e:
        ap.error(str(e))

    try:
        plan = nifti_plan(args) if args.nifti is not None else raw_plan(args) if args.raw is not None \
            else volumes_plan(args)
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    jobs, desc, finish, in_place = plan
    outputs = (io.SLICE_DIR,) if in_place else io.ROOT_OUTPUTS
    held = io.held_outputs(args.out, outputs)
    if held and not args.overwrite:
        ap.error(f"--out {args.out} already holds converted data ({', '.join(held)}); pass --overwrite to "
                 "replace it (files of two conversions must not mix)")
    # A replacement is staged beside OUT, so that a failed conversion leaves OUT as it was.
    with io.staged(args.out, "converting") if held else contextlib.nullcontext(args.out) as dest:
        failed = _run(jobs, dest, desc)
        if finish is not None:
            finish(dest, failed)
        if held and not failed:
            io.replace_outputs(dest, args.out, outputs)
    if held and failed:
        print(f"{len(failed)} of {len(jobs)} cases failed; {args.out} left as it was", file=sys.stderr)
    else:
        print(f"{len(jobs) - len(failed)} of {len(jobs)} cases written to {args.out}"
              + (f"; {len(failed)} failed" if failed else ""), file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
