"""Build the ACDC h5 layout from the raw ACDC NIfTI tree, or derive slice files from volumes.

    python code/acdc_data_processing.py --raw RAW --out OUT [--scribbles DIR] [--seed S]
    python code/acdc_data_processing.py --volumes DIR --out OUT

``--raw``: RAW is the official ACDC training tree, ``RAW/patientXXX/patientXXX_frameYY.nii.gz``
with its dense mask ``patientXXX_frameYY_gt.nii.gz`` (the 4-D ``_4d.nii.gz`` cine and
``Info.cfg`` are ignored). Every frame with an image or a mask becomes
``OUT/ACDC_training_volumes/<case>.h5`` plus ``OUT/ACDC_training_slices/<case>_slice_<z>.h5``:
image float32 normalised as the published files (99th-percentile clip, min-max to [0, 1]),
label uint8, scribble uint16, and the voxel spacing (z, y, x) mm as the ``spacing`` attribute.
Scribbles are read from ``--scribbles DIR/<case>_scribble.nii.gz`` (e.g.
``patient001_frame01_scribble.nii.gz``; 0..3 classes, 4 unlabeled, same grid as the image), or,
without ``--scribbles``, generated from the mask (``dataloaders.scribbles``, seeded by ``--seed``
and the case, so reruns agree).

``--volumes``: DIR holds ``<case>.h5`` volumes (image, label, scribble); their 2-D slices
``volume[key][z]`` (dtypes kept) are written to ``OUT/ACDC_training_slices``. With
``--volumes X/ACDC_training_volumes --out X`` the root X becomes complete.

A case that cannot be read (unreadable NIfTI or h5, missing mask or image, shapes that disagree,
missing key) is reported on stderr in one line naming the file; the other cases are still
written, and the exit status is 1. Files are written atomically, so a failing case never
destroys a good file already in OUT.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import zlib

import numpy as np
from tqdm import tqdm

from dataloaders.io import KEYS, UNLABELED, Case, read_h5, read_nifti, write_case, write_slices
from dataloaders.phantoms import normalise_intensity
from dataloaders.scribbles import scribble_volume

FRAME_RE = re.compile(r"^(patient\d+_frame\d+)(_gt)?\.nii\.gz$")


class CaseError(Exception):
    """A case that cannot be processed; the message names the offending file."""


def find_raw_cases(raw: str) -> dict[str, tuple[str | None, str | None]]:
    """``{case: (image path or None, mask path or None)}`` of the frames under ``raw/patient*/``."""
    if not os.path.isdir(raw):
        raise FileNotFoundError(f"--raw {raw}: no such folder")
    cases: dict[str, list] = {}
    for patient in sorted(os.listdir(raw)):
        folder = os.path.join(raw, patient)
        if not (patient.startswith("patient") and os.path.isdir(folder)):
            continue
        for f in sorted(os.listdir(folder)):
            m = FRAME_RE.match(f)
            if m:
                cases.setdefault(m.group(1), [None, None])[1 if m.group(2) else 0] = os.path.join(folder, f)
    return {c: tuple(p) for c, p in sorted(cases.items())}


def read_volume(path: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(array (Z, H, W), spacing (z, y, x) mm) of a 3-D NIfTI; ``CaseError`` naming the file."""
    try:
        array, spacing = read_nifti(path)
    except OSError as e:
        raise CaseError(str(e)) from e
    if array.ndim != 3:
        raise CaseError(f"{path}: expected a 3-D image, got {array.ndim}-D")
    return array, spacing


def case_seed(seed: int, case: str) -> list[int]:
    """Seed of a case's generated scribbles: stable across runs and independent of case order."""
    return [seed, zlib.crc32(case.encode())]


def process_raw_case(case: str, image_path: str | None, gt_path: str | None,
                     scribble_dir: str | None, seed: int) -> Case:
    """Read one raw ACDC frame into a ``Case`` (image float32 [0, 1], label uint8, scribble uint16)."""
    if image_path is None:
        raise CaseError(f"{gt_path}: mask without its image {case}.nii.gz")
    if gt_path is None:
        raise CaseError(f"{image_path}: image without its mask {case}_gt.nii.gz")
    image, spacing = read_volume(image_path)
    if not np.isfinite(image).all():
        raise CaseError(f"{image_path}: image has non-finite values (NaN or inf)")
    label, _ = read_volume(gt_path)
    if label.shape != image.shape:
        raise CaseError(f"{gt_path}: mask shape {label.shape} differs from image shape {image.shape}")
    if label.min() < 0 or label.max() > 3:
        raise CaseError(f"{gt_path}: mask values outside 0..3")
    label = label.astype(np.uint8)
    if scribble_dir is not None:
        path = os.path.join(scribble_dir, f"{case}_scribble.nii.gz")
        if not os.path.isfile(path):
            raise CaseError(f"{path}: missing scribble file")
        scribble, _ = read_volume(path)
        if scribble.shape != image.shape:
            raise CaseError(f"{path}: scribble shape {scribble.shape} differs from image shape {image.shape}")
        if scribble.min() < 0 or scribble.max() > UNLABELED:
            raise CaseError(f"{path}: scribble values outside 0..{UNLABELED}")
        scribble = scribble.astype(np.uint16)
    else:
        scribble = scribble_volume(label, np.random.default_rng(case_seed(seed, case)))
    return Case(case, normalise_intensity(image), label, scribble, spacing)


def process_volume_file(path: str, out: str) -> int:
    """Write the slice files of one ``<case>.h5`` volume into ``out``; returns the slice count."""
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
    return write_slices(out, case, arrays, d["spacing"])


def _run(jobs, desc: str) -> int:
    """Run ``(name, fn)`` jobs with a progress bar; one stderr line per failure; the failure count."""
    failed = 0
    for _name, fn in tqdm(jobs, desc=desc, unit="case"):
        try:
            fn()
        except CaseError as e:
            failed += 1
            tqdm.write(f"error: {e}", file=sys.stderr)
    return failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", help="raw ACDC tree RAW/patientXXX/patientXXX_frameYY[_gt].nii.gz")
    src.add_argument("--volumes", help="folder of <case>.h5 volumes to cut into slice files")
    ap.add_argument("--out", required=True, help="data root to write into")
    ap.add_argument("--scribbles", help="folder of <case>_scribble.nii.gz (with --raw)")
    ap.add_argument("--seed", type=int, default=0, help="seed of generated scribbles (with --raw)")
    args = ap.parse_args(argv)
    if args.volumes is not None and args.scribbles is not None:
        ap.error("--scribbles only applies to --raw")
    if args.scribbles is not None and not os.path.isdir(args.scribbles):
        ap.error(f"--scribbles {args.scribbles}: no such folder")

    if args.raw is not None:
        try:
            cases = find_raw_cases(args.raw)
        except FileNotFoundError as e:
            ap.error(str(e))
        if not cases:
            ap.error(f"--raw {args.raw}: no patientXXX/patientXXX_frameYY[_gt].nii.gz files")

        def job(case, paths):
            return lambda: write_case(args.out, process_raw_case(case, *paths, args.scribbles, args.seed))

        failed = _run([(c, job(c, p)) for c, p in cases.items()], "cases")
        total = len(cases)
    else:
        if not os.path.isdir(args.volumes):
            ap.error(f"--volumes {args.volumes}: no such folder")
        files = sorted(os.path.join(args.volumes, f) for f in os.listdir(args.volumes) if f.endswith(".h5"))
        if not files:
            ap.error(f"--volumes {args.volumes}: no .h5 volumes")
        failed = _run([(f, lambda f=f: process_volume_file(f, args.out)) for f in files], "volumes")
        total = len(files)
    print(f"{total - failed} of {total} cases written to {args.out}"
          + (f"; {failed} failed" if failed else ""), file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
