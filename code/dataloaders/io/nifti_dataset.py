"""A NIfTI data set's folders (``train``/``val``/``test`` with ``images/`` and ``labels/``):
its image-label pairs, and everything the conversion would otherwise skip without a word."""
from __future__ import annotations

import os

import numpy as np

from dataloaders.io.layout import UNLABELED
from dataloaders.io.nifti import is_nifti, nifti_stem


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
