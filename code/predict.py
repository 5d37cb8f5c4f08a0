"""Segment new short-axis scans with a trained checkpoint: NIfTI in, label NIfTI out.

    python code/predict.py --checkpoint model/<run>/best.pth --input scan.nii.gz|DIR --output OUT
                           [--overlay] [--device auto|cpu|cuda] [--tta] [--postprocess none|lcc]
                           [--resize_back scores|labels]

Each scan (any size, spacing, orientation; a 3-D stack of 2-D slices, the file's third voxel axis
being the slice axis, see ``dataloaders.io.read_scan``) is normalised as in training
(99th-percentile clip, min-max), segmented slice by slice by the same function as validation and
``test_2D_fully.py`` (``inference.predict_volume``), and written as ``OUT/<stem>.nii.gz`` (the input's
file name without its extension) with labels 0..C and the input's exact geometry (size, spacing, origin,
direction). ``--overlay`` also writes ``OUT/<stem>.png``, a grid of slices with the predicted
contours. Existing files are never replaced unless ``--overwrite`` is given, and never an input.
A file that cannot be segmented is named on stderr and skipped; the exit status is the number of
failed files (0: all written).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from io import BytesIO

import numpy as np
from tqdm import tqdm

import config
from dataloaders import io
from inference import Prediction, resolve_device

# Contour colours of classes 1..3 (RV red, MYO green, LV blue), as in the phantom figure.
COLOURS = ("#ff3333", "#33ff33", "#4d80ff", "#ffcc00", "#ff66ff")


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a best.pth / last.pth of a trained run")
    p.add_argument("--input", required=True, help="a .nii.gz scan or a folder of them")
    p.add_argument("--output", required=True, help="folder for the label NIfTIs (and overlays)")
    p.add_argument("--overlay", action="store_true", help="also write a PNG of contours per scan")
    config.add_prediction_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing predictions of the same name")
    return p.parse_args(argv), p


def input_files(path: str) -> list[str]:
    """The NIfTI files of ``path`` (a file or a folder, sorted); ValueError naming it if none, or
    if the folder holds a scan in another format (:func:`io.other_scans`), which would be skipped."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ValueError(f"--input {path}: no such file or folder")
    others = io.other_scans(path)
    if others:
        raise ValueError(f"--input {path}: {os.path.basename(others[0])}"
                         f"{f' and {len(others) - 1} other file(s)' if len(others) > 1 else ''} not NIfTI "
                         "(.nii, .nii.gz): convert them, or move them out")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if io.is_nifti(f))
    if not files:
        raise ValueError(f"--input {path}: no .nii or .nii.gz files")
    return files


def output_paths(source: str, files: list[str], output: str, overlay: bool = False,
                 overwrite: bool = False) -> list[str]:
    """``output/<stem>.nii.gz`` for each input file of ``source`` (a file or folder); ValueError
    when ``output`` is a file or the input folder (predictions would mix with the scans), when
    two inputs would be written to one path (``a.nii`` and ``a.nii.gz``; ``A.nii`` and ``a.nii.gz``
    where letter case is ignored) or an output is an input,
    and when an output or its ``overlay`` PNG exists (with ``overwrite``: when it is not a file
    this project wrote, or a segmentation edited since)."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file, not a folder")
    if os.path.isdir(output) and os.path.samefile(source if os.path.isdir(source) else os.path.dirname(
            os.path.abspath(source)), output):
        raise ValueError(f"--output {output} is the input's folder; predictions would mix with the scans or "
                         "a scan of the same name would be overwritten")
    outs = [os.path.join(output, io.nifti_stem(f) + ".nii.gz") for f in files]
    first = {}
    for f, o in zip(files, outs):
        # Names that differ only in letter case are one file on macOS and Windows file systems.
        if o.casefold() in first:
            earlier, written = first[o.casefold()]
            raise ValueError(f"--input: {earlier} and {f} would both be written to {o}"
                             + ("" if written == o else f" (one file with {written} where letter case is ignored)"))
        first[o.casefold()] = f, o
    inputs = {os.path.realpath(f) for f in files}
    for o in outs:
        if os.path.realpath(o) in inputs:
            raise ValueError(f"--output {output}: {o} is an input scan; it would be overwritten")
    io.check_segmentation_outputs("--output", outs, overwrite)
    if overlay:
        check_overlay_outputs([overlay_path(o) for o in outs], overwrite)
    return outs


# The PNG ``Description`` of every overlay this project writes, then a digest of its pixels:
# ``--overwrite`` replaces only those still as written, never a user's own picture that shares a
# prediction's name or an overlay marked up since.
OVERLAY_NOTE = "MaskMixAdv overlay"


def pixels_digest(png) -> str:
    """16 hex digits of the SHA-256 of a PIL image's RGBA pixels and size."""
    rgba = np.asarray(png.convert("RGBA"))
    return hashlib.sha256(repr(rgba.shape).encode() + rgba.tobytes()).hexdigest()[:16]


def check_overlay_outputs(paths: list[str], overwrite: bool = False) -> None:
    """:func:`io.check_outputs` for overlay PNGs, and with ``overwrite`` a ValueError naming
    ``--output`` when an existing one is not an overlay :func:`draw_overlay` wrote, or has been
    edited since."""
    from PIL import Image

    io.check_outputs("--output", paths, overwrite)
    for path in paths:
        if not os.path.isfile(path):
            continue
        try:
            with Image.open(path) as png:
                note, digest = png.info.get("Description"), pixels_digest(png)
        except OSError:
            note = digest = None
        if not isinstance(note, str) or not note.startswith(OVERLAY_NOTE):
            raise ValueError(f"--output: {path} exists and is not an overlay this project wrote (those written before "
                             "2026-12-07 carry no mark); --overwrite replaces only those: write elsewhere, or remove "
                             "the file yourself")
        if note != f"{OVERLAY_NOTE} {digest}":
            raise ValueError(f"--output: {path} was written by this project but its pixels have changed since: "
                             "--overwrite would lose the edits: write elsewhere, or remove the file yourself")


def overlay_path(out: str) -> str:
    """``OUT/<stem>.png`` beside the prediction ``OUT/<stem>.nii.gz``."""
    return out[:-len(".nii.gz")] + ".png"


def segment_scan(path: str, model, how: Prediction) -> tuple[io.Case, np.ndarray]:
    """(the scan with its geometry and its image normalised to [0, 1], its (Z, H, W) uint8
    prediction). ValueError naming ``path`` for a scan without geometry in its header when the
    model resamples to a target spacing: read as 1 mm voxels, its heart would be seen at the
    wrong scale."""
    scan = how.read_scan(path)
    return scan, how.labels(model, scan.image, scan.spacing).astype(np.uint8)


def draw_overlay(path: str, scan: io.Case, pred: np.ndarray, columns: int = 6) -> None:
    """Save a PNG grid of up to 2 x ``columns`` slices (base to apex) of ``scan`` (its image in
    [0, 1]) with the contours of each predicted class; the image is shown in voxel order with the
    in-plane aspect of its spacing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    n = min(scan.image.shape[0], 2 * columns)
    zs = np.linspace(0, scan.image.shape[0] - 1, n).round().astype(int)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2 * rows), squeeze=False)
    aspect = scan.spacing[1] / scan.spacing[2] if scan.spacing else 1.0
    for ax in axes.ravel():
        ax.axis("off")
    for ax, z in zip(axes.ravel(), zs):
        ax.imshow(scan.image[z], cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        for c in range(1, int(pred.max()) + 1):
            if (pred[z] == c).any():
                ax.contour(pred[z] == c, levels=[0.5], colors=COLOURS[(c - 1) % len(COLOURS)], linewidths=0.8)
        ax.set_title(f"z={z}", fontsize=8)
    fig.suptitle(os.path.basename(path), fontsize=9)
    fig.tight_layout()
    buffer = BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=80)
    finally:
        plt.close(fig)
    with Image.open(buffer) as png, io.atomic_path(path, ".png") as tmp:
        note = PngInfo()
        note.add_text("Description", f"{OVERLAY_NOTE} {pixels_digest(png)}")
        png.save(tmp, pnginfo=note)


def main(argv=None) -> int:
    args, parser = parse_args(argv)
    from checkpoint import method_from_checkpoint, read_checkpoint

    try:
        files = input_files(args.input)
        outs = output_paths(args.input, files, args.output, args.overlay, args.overwrite)
        device = resolve_device(args.device)
        ckpt = read_checkpoint(args.checkpoint, device)
        method, cfg = method_from_checkpoint(ckpt, device)
    except (ValueError, FileNotFoundError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    model = method.segmenter().eval()
    how = Prediction.of(cfg, device, args.resize_back, args.postprocess, args.tta)
    os.makedirs(args.output, exist_ok=True)
    failed = 0
    for path, out in tqdm(list(zip(files, outs)), desc="predicting", unit="scan"):
        try:
            scan, pred = segment_scan(path, model, how)
            io.write_segmentation(out, pred, scan, ckpt.get("class_names"))
            if args.overlay:
                draw_overlay(overlay_path(out), scan, pred)
        except (OSError, ValueError, RuntimeError) as e:
            failed += 1
            message = str(e) if path in str(e) else f"{path}: {e}"
            tqdm.write(f"error: {message} (skipped)", file=sys.stderr)
    print(f"{len(files) - failed} of {len(files)} scans segmented into {args.output}"
          + (f"; {failed} failed" if failed else ""), file=sys.stderr if failed else sys.stdout)
    return min(failed, 255)


if __name__ == "__main__":
    sys.exit(main())
