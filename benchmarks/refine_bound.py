"""How much the simulated user's strokes can be worth: upper bounds for ``refine.py --simulate``.

    python benchmarks/refine_bound.py --checkpoint CKPT --root data/ACDC --fold fold1 --split val \\
        [--simulate 1] [--worst_slices 3] [--seed 0]

For each volume of the split, the checkpoint's prediction and the simulated strokes exactly as
``refine.py --simulate`` draws them (``refinement.simulate_strokes``), then the mean Dice of
three volumes: the prediction; the prediction with every wrong region that a stroke touches set
to its true class (each stroke's region: the connected wrong pixels of the stroke's class, in its
slice), what a refinement could reach if it fixed exactly what the user pointed at; and the
prediction with the stroked slices replaced by the truth. Prints the means over all volumes and
over the 10 with the lowest Dice before, as ``refine.py --simulate`` does. Trains nothing.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "code"))

from checkpoint import cases_to_score, method_from_checkpoint, read_checkpoint  # noqa: E402
from dataloaders import io  # noqa: E402
from dataloaders.acdc import FOLD_CHOICES  # noqa: E402
from inference import RESIZE_BACK, Prediction, resolve_device  # noqa: E402
from postprocess import POSTPROCESS  # noqa: E402
from refinement import mean_dice, simulate_strokes  # noqa: E402


def fix_stroked_regions(pred: np.ndarray, truth: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """``pred`` with each connected wrong region (of one true class, in one slice) that a stroke
    of that class touches set to the truth. All (Z, H, W) integer label volumes."""
    fixed = pred.copy()
    wrong = pred != truth
    for z in np.flatnonzero((strokes != io.UNLABELED).reshape(len(strokes), -1).any(1)):
        for c in np.unique(strokes[z][strokes[z] != io.UNLABELED]):
            regions, _ = ndimage.label(wrong[z] & (truth[z] == c))
            hit = np.unique(regions[(strokes[z] == c) & (regions > 0)])
            fixed[z][np.isin(regions, hit) & (regions > 0)] = c
    return fixed


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", "--root_path", required=True)
    p.add_argument("--fold", default="fold1", choices=FOLD_CHOICES)
    p.add_argument("--split", "--on", default="val", choices=["val", "test"])
    p.add_argument("--simulate", type=int, default=1, metavar="K")
    p.add_argument("--worst_slices", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resize_back", choices=RESIZE_BACK, help="default: the run's own")
    p.add_argument("--postprocess", choices=POSTPROCESS, help="default: the run's own (as refine.py)")
    args = p.parse_args(argv)
    if args.simulate < 1 or args.worst_slices < 1:  # a negative count took slices from the end
        p.error(f"--simulate and --worst_slices must be >= 1, got {args.simulate} and {args.worst_slices}")
    device = resolve_device("auto")
    try:
        ckpt = read_checkpoint(args.checkpoint, device)
        method, cfg = method_from_checkpoint(ckpt, device)
        cases = cases_to_score(ckpt, args.checkpoint, args.root, args.fold, args.split)
    except (OSError, ValueError) as e:
        p.exit(2, f"error: {e}\n")
    how = Prediction.of(cfg, device, args.resize_back, args.postprocess)
    model = method.segmenter().eval()
    rows = []
    for case in cases:
        pred = how.labels(model, case.image, case.spacing)
        strokes = simulate_strokes(pred, case.label, args.simulate, args.seed, args.worst_slices)
        slices = (strokes != io.UNLABELED).reshape(len(strokes), -1).any(1)
        perfect = pred.copy()
        perfect[slices] = case.label[slices]
        fixed = fix_stroked_regions(pred, case.label, strokes)
        rows.append([mean_dice(v, case.label, cfg.num_classes) for v in (pred, fixed, perfect)])
    rows = np.array(sorted(rows))
    for label, part in (("all", rows), ("worst 10", rows[:10])):
        before, regions, slices = part.mean(0)
        print(f"{label} ({len(part)} volumes): before {before:.4f}; stroked regions fixed {regions:.4f} "
              f"({regions - before:+.4f}); stroked slices perfect {slices:.4f} ({slices - before:+.4f})")


if __name__ == "__main__":
    main()
