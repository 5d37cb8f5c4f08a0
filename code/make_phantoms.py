"""Generate the synthetic cardiac phantom data set in the ACDC h5 layout.

    python code/make_phantoms.py --out data/ACDC_phantom --patients 20 --seed 0 [--size 128] [--raw RAW]
    python code/make_phantoms.py --figure imgs/phantoms.png [--seed 0]

Writes ``OUT/ACDC_training_volumes/patientXXX_frameYY.h5`` and ``OUT/ACDC_training_slices/...``
(ED = frame01, ES = frame08..15; image float32 in [0, 1], label uint8, scribble uint16, spacing
(z, y, x) mm) and, with ``--raw``, the raw ACDC-style NIfTI tree that ``acdc_data_processing.py
--raw`` reads. An OUT that already holds converted data, or a RAW with ``patient*`` folders, is
refused unless ``--overwrite`` (the old patients would join the new ones: other seeds, sizes,
data sets); ``--overwrite`` writes beside them and then replaces those entries (other files in
OUT, such as caches, stay), as ``acdc_data_processing.py --overwrite`` does.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

from dataloaders import io
from dataloaders.io import UNLABELED
from dataloaders.phantoms import MIN_SIZE, render_patient, write_phantoms

# RV red, MYO green, LV blue; background scribbles yellow.
COLOURS = np.array([[1, 1, 0], [1, 0.2, 0.2], [0.2, 1, 0.2], [0.3, 0.5, 1]])


def draw_figure(path: str, seed: int, size: int, columns: int = 6) -> None:
    """Save a PNG of phantom patient001: ED and ES rows of image, label and scribble overlays."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, _ = render_patient(0, seed, size)
    fig, axes = plt.subplots(6, columns, figsize=(1.6 * columns, 1.6 * 6))
    for f, case in enumerate(cases):
        zs = np.linspace(0, case.image.shape[0] - 1, columns).round().astype(int)
        for j, z in enumerate(zs):
            img = case.image[z]
            lab, scr = case.label[z], case.scribble[z]
            over = np.repeat(img[..., None], 3, axis=2)
            rows = (img, np.where((lab > 0)[..., None], 0.5 * over + 0.5 * COLOURS[lab], over),
                    np.where((scr < UNLABELED)[..., None], COLOURS[np.minimum(scr, 3)], over))
            for r, picture in enumerate(rows):
                ax = axes[3 * f + r, j]
                ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"z={z}", fontsize=8)
                if j == 0:
                    phase = "ED" if f == 0 else "ES"
                    ax.set_ylabel(f"{phase} {('image', 'label', 'scribble')[r]}", fontsize=8)
    fig.suptitle(f"phantom {cases[0].name[:10]} (seed {seed}), base to apex", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="data root to write the h5 layout into")
    ap.add_argument("--figure", help="instead, save a PNG of patient001's slices here")
    ap.add_argument("--patients", type=int, default=20, help="number of patients (2 volumes each)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    ap.add_argument("--size", type=int, default=128, help=f"slice height and width in pixels (>= {MIN_SIZE})")
    ap.add_argument("--raw", default=None, help="also write a raw ACDC NIfTI tree here")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace the data already in --out (volumes, slices, dataset.json, splits.json) "
                         "and the patient folders of --raw (default: refuse)")
    args = ap.parse_args(argv)
    if (args.out is None) == (args.figure is None):
        ap.error("give exactly one of --out and --figure")
    if args.patients < 1:
        ap.error(f"--patients must be >= 1, got {args.patients}")
    if args.size < MIN_SIZE:
        ap.error(f"--size must be >= {MIN_SIZE}, got {args.size}")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    for flag, path in (("--out", args.out), ("--raw", args.raw)):
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            ap.error(f"{flag} {path} exists and is not a folder")
    if args.out is not None and args.raw is not None:
        out, raw = os.path.realpath(args.out), os.path.realpath(args.raw)
        if os.path.commonpath([out, raw]) in (out, raw):  # one tree inside the other: replacing one breaks both
            ap.error(f"--raw {args.raw} and --out {args.out} must be separate folders, neither inside the other")
    if args.figure is not None and os.path.exists(args.figure) and not args.overwrite:
        ap.error(f"--figure {args.figure} exists; pass --overwrite to replace it")
    if args.figure is not None:
        draw_figure(args.figure, args.seed, args.size)
        return 0
    held = [(args.out, io.ROOT_OUTPUTS, io.held_outputs(args.out, io.ROOT_OUTPUTS))]
    if args.raw is not None:
        held.append((args.raw, None, raw_patients(args.raw)))
    for path, _, names in held:
        if names and not args.overwrite:
            ap.error(f"{'--out' if path == args.out else '--raw'} {path} already holds data ({', '.join(names[:3])}"
                     f"{', ...' if len(names) > 3 else ''}); pass --overwrite to replace it (phantoms must not "
                     "mix with other patients)")
    t0 = time.perf_counter()
    # Written beside OUT and RAW first, then moved in by renaming, as the conversion does.
    with contextlib.ExitStack() as stack:
        dest = {path: stack.enter_context(io.staged(path, "phantoms")) for path, _, old in held if old}
        try:
            names = write_phantoms(dest.get(args.out, args.out), args.patients, args.seed, args.size,
                                   dest.get(args.raw, args.raw) if args.raw else None, progress=True)
            for path, outputs, old in held:
                if old:
                    io.replace_outputs(dest[path], path, outputs or sorted(set(old) | set(raw_patients(dest[path]))))
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"wrote {len(names)} volumes of {args.patients} patients to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def raw_patients(raw: str) -> list[str]:
    """The ``patient*`` entries of a raw tree (none when it does not exist)."""
    return sorted(n for n in os.listdir(raw) if n.startswith("patient")) if os.path.isdir(raw) else []


if __name__ == "__main__":
    sys.exit(main())
