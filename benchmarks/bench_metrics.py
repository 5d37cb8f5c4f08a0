"""Time ``metrics.volume_metrics`` against medpy's ``dc`` / ``hd95`` / ``asd`` on real label volumes.

Predictions are made from each ground truth (per class: in-plane erosion or dilation, a small
in-plane shift, and the RV dropped from a few slices), seeded per case. Both implementations run on
the same volumes in one process; the script checks that every value agrees to 1e-9 and prints the
speed-up. medpy (GPL) is used here only as the reference being timed, never by ``code/``.

    python benchmarks/bench_metrics.py --root DATA_ROOT [--n 40] [--spacing 1.5 1.0 1.0]

``DATA_ROOT`` holds ``ACDC_training_volumes/*.h5``. Timings are run once without spacing (voxel
units) and once with ``--spacing`` (z, y, x).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "code"))

from dataloaders.io import list_cases, read_h5, volume_path  # noqa: E402
from metrics import METRICS, summarize, units_of, volume_metrics  # noqa: E402

CLASSES = (1, 2, 3)


def fake_prediction(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible imperfect segmentation of a (Z, H, W) uint8 label volume (values 0..3)."""
    rng = np.random.default_rng(seed)
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    pred = np.zeros_like(gt)
    for c in (2, 3, 1):  # MYO first so LV and RV paint over its inner/outer edge
        m = gt == c
        it = int(rng.integers(1, 3))
        m = (ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion)(
            m, in_plane, iterations=it)
        dy, dx = rng.integers(-2, 3, size=2)
        m = ndimage.shift(m.astype(np.uint8), (0, dy, dx), order=0).astype(bool)
        pred[m] = c
    # RV missed in the last two slices that hold RV in gt (a typical basal/apical miss)
    z_rv = np.flatnonzero((gt == 1).any(axis=(1, 2)))
    if z_rv.size > 2:
        drop = pred[z_rv[-2:]]
        drop[drop == 1] = 0
        pred[z_rv[-2:]] = drop
    return pred


def medpy_volume(pred, gt, spacing, binary):
    """medpy per class, as peers call it (dc, hd95, asd each on the full volume)."""
    out = {}
    for c in CLASSES:
        p, g = pred == c, gt == c
        if not p.any() or not g.any():  # medpy raises; our convention covers these
            out[c] = None
            continue
        out[c] = {"dice": binary.dc(p, g),
                  "hd95": binary.hd95(p, g, voxelspacing=spacing, connectivity=1),
                  "asd": binary.asd(p, g, voxelspacing=spacing, connectivity=1)}
    return out


def run(pairs, spacing, binary):
    t0 = time.perf_counter()
    ours = [volume_metrics(p, g, spacing) for p, g in pairs]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [medpy_volume(p, g, spacing, binary) for p, g in pairs]
    t_ref = time.perf_counter() - t0
    worst, skipped = 0.0, 0
    for o, r in zip(ours, ref):
        for c in CLASSES:
            if r[c] is None:
                skipped += 1
                continue
            worst = max(worst, max(abs(o[c][m] - r[c][m]) for m in METRICS))
    return t_ours, t_ref, worst, skipped, summarize(ours)


def main(argv=None):
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    ap.add_argument("--root", "--root_path", required=True, help="data root holding ACDC_training_volumes/")
    ap.add_argument("--n", type=int, default=40, help="number of volumes (first N cases)")
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.0, 1.0),
                    metavar=("Z", "Y", "X"), help="spacing (mm) for the second timing")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    try:
        import medpy.metric.binary as binary
    except ImportError:
        sys.exit("bench_metrics: medpy is needed as the reference (pip install medpy)")

    try:
        cases = list_cases(args.root)[:args.n]
        pairs = []
        for i, case in enumerate(cases):
            gt = read_h5(volume_path(args.root, case), keys=("label",))["label"]
            pairs.append((fake_prediction(gt, seed=i), gt))
    except OSError as e:
        sys.exit(f"bench_metrics: --root: {e}")
    print(f"{len(pairs)} volumes, shapes e.g. {pairs[0][1].shape}")
    volume_metrics(*pairs[0])  # warm-up, so the first timing pays no one-off costs

    ok = True
    for spacing in (None, tuple(args.spacing)):
        t_ours, t_ref, worst, skipped, summary = run(pairs, spacing, binary)
        agree = worst <= 1e-9
        ok &= agree
        print(f"spacing={spacing}: ours {t_ours:.2f} s, medpy {t_ref:.2f} s, "
              f"speed-up {t_ref / t_ours:.1f}x, max |diff| {worst:.2e} "
              f"({'agree' if agree else 'DISAGREE'}), {skipped} empty class(es) not compared")
        print("  mean over volumes: " + ", ".join(
            f"{m} {summary[m]['mean']:.3f}" for m in METRICS) + f" (distances in {units_of(spacing)})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
