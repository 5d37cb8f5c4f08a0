"""How much Dice and HD95 the training resolution alone costs: a perfect model at ``--input_size``.

    python benchmarks/resolution_bound.py --root data/ACDC --fold fold1 --split val \\
        [--sizes 128 192 256]

The prediction path (``inference.predict_volume``) resizes each slice to the input size,
segments it there, and brings the prediction back to the slice's size (``--resize_back``). A
model that is perfect at that size gives each of its pixels the share of the pixel's area that
each class covers as its class scores. This script builds that prediction from the dense truth
(area averages of the one-hot labels), brings it back with ``inference.back_to_slice`` both ways
(labels: argmax, then nearest neighbour; scores: bilinear, then argmax) and scores it like
``test_2D_fully.py`` (no post-processing): the ceiling of any model trained at that size.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "code"))

import metrics  # noqa: E402
from dataloaders import io  # noqa: E402
from dataloaders.acdc import FOLD_CHOICES, split_part  # noqa: E402
from inference import RESIZE_BACK, back_to_slice, distance_units, reference_volumes, score_cases  # noqa: E402


def perfect_at(label: np.ndarray, size, resize_back: str = "labels", num_classes: int = io.NUM_CLASSES) -> np.ndarray:
    """The (Z, H, W) uint8 prediction of a model that is perfect at ``size`` (h, w): per
    low-resolution pixel the area share of each class as its scores (with "labels": the class
    of the largest share, ties to the lower class), brought back to (H, W) as ``predict_volume``
    does."""
    one_hot = F.one_hot(torch.from_numpy(label.astype(np.int64)), num_classes).permute(0, 3, 1, 2).float()
    scores = F.adaptive_avg_pool2d(one_hot, tuple(size))
    return back_to_slice(scores, label.shape[1:], resize_back)[:, 0].to(torch.uint8).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--root", "--root_path", required=True, help="data root in the ACDC h5 layout")
    p.add_argument("--fold", default="fold1", choices=FOLD_CHOICES)
    p.add_argument("--split", "--on", default="val", choices=["val", "test"])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256],
                   help="square input sizes to score")
    args = p.parse_args(argv)
    if min(args.sizes) < 1:
        p.error(f"--sizes must be positive, got {args.sizes}")
    try:
        names = io.class_names(args.root)  # the data root's classes, as test_2D_fully.py scores them
        cases = reference_volumes(args.root, split_part(args.root, args.fold, args.split), len(names) + 1)
        units = distance_units(args.root, cases)
    except (OSError, ValueError, KeyError) as e:
        p.exit(2, f"error: {e}\n")
    print(f"{args.split} of {args.fold} ({len(cases)} volumes), a model perfect at the input size:")
    for s in args.sizes:
        for r in RESIZE_BACK:
            preds = {c.name: perfect_at(c.label, (s, s), r, len(names) + 1) for c in cases}
            summary = metrics.summarize(list(score_cases(preds, cases, len(names) + 1).values()), names)
            dice = " ".join(f"{n} {summary['dice'][n]:.4f}" for n in names)
            print(f"{s}x{s}, back as {r}: Dice {dice} mean {summary['dice']['mean']:.4f}; "
                  f"HD95 {summary['hd95']['mean']:.2f} {units}")


if __name__ == "__main__":
    main()
