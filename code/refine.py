"""Correct a scan's segmentation with a few strokes, or measure that with a simulated user.

    python code/refine.py --checkpoint CKPT --input scan.nii.gz --strokes strokes.nii.gz --output DIR
        [--save CKPT2] [--iters 60] [--time_limit 60] [--scope slices|volume] [--neighbours 2] [--device auto]
    python code/refine.py --simulate K --checkpoint CKPT --root ROOT --fold fold1 [--worst_slices 3]

The strokes are a label NIfTI on the scan's grid (its shape, spacing, origin and direction):
the model's labels on stroked voxels (0 background, then its classes in the order its checkpoint
records and ``refine.py`` prints, 1 RV, 2 MYO, 3 LV for ACDC's), 4 elsewhere. The scan is normalised as the
training data (99th-percentile clip, min-max), the model fine-tuned on it
(``refinement.refine_volume``), post-processed as ``predict.py`` does (the run's
``--postprocess`` unless given), and the corrected segmentation written as
``DIR/<scan>_refined.nii.gz`` with the scan's geometry (an existing one only replaced with
``--overwrite``). The checkpoint is only read; ``--save`` writes the fine-tuned model (with the
run's config and split) to a new path. ``--simulate K``
draws K strokes per slice on each test (``--split val``: validation) volume of ``--fold``
(``--worst_slices`` slices per volume) and prints the Dice before and after and the time per
refinement.
"""
from __future__ import annotations

import argparse
import os

import config
from checkpoint import cases_to_score, method_from_checkpoint, read_checkpoint, refined_scans, write_checkpoint
from dataloaders import io
from dataloaders.acdc import FOLD_CHOICES
from inference import Prediction, resolve_device
from refinement import SCOPES, RefineSettings, check_strokes, refine_volume, simulate_case, summarize_simulation


def parse_args(argv=None):
    d = RefineSettings()
    p = argparse.ArgumentParser(allow_abbrev=False, description="Correct a segmentation with a few strokes.")
    p.add_argument("--checkpoint", required=True, help="a .pth written by train.py (read only)")
    p.add_argument("--input", help="the scan, NIfTI (3-D)")
    p.add_argument("--strokes", help="label NIfTI on the scan's grid: 0..3 stroked, 4 elsewhere")
    p.add_argument("--output", help="folder for <scan>_refined.nii.gz")
    p.add_argument("--save", help="also write the fine-tuned model to this new checkpoint path")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/<scan>_refined.nii.gz")
    p.add_argument("--simulate", type=int, metavar="K", help="simulated user: K strokes per slice")
    p.add_argument("--root", "--root_path", help="--simulate: data root in the ACDC h5 layout")
    p.add_argument("--fold", default=config.DEFAULTS["fold"], choices=FOLD_CHOICES,
                   help="--simulate: the fold whose volumes are refined")
    p.add_argument("--split", "--on", default="test", choices=["val", "test"],
                   help="--simulate: the fold's validation volumes (to choose settings) or test volumes")
    p.add_argument("--worst_slices", type=int, default=3, help="--simulate: slices stroked per volume")
    p.add_argument("--seed", type=int, default=0, help="--simulate: seed of the simulated strokes")
    p.add_argument("--iters", type=int, default=d.iters, help="fine-tuning steps")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--anchor_weight", type=float, default=d.anchor_weight)
    p.add_argument("--anchor_margin", type=float, default=d.anchor_margin,
                   help="pixels around the strokes left free of the anchor")
    p.add_argument("--scope", default=d.scope, choices=SCOPES,
                   help="slices: fine-tune on and change only the stroked slices (and --neighbours); volume: all slices")
    p.add_argument("--neighbours", type=int, default=d.neighbours,
                   help="--scope slices: also the slices this many on each side of a stroked slice")
    p.add_argument("--time_limit", type=float, default=d.time_limit, help="seconds of fine-tuning at most")
    config.add_prediction_args(p, tta=False)  # post-processing: on the first and the refined prediction
    args = p.parse_args(argv)
    if args.simulate is None:
        missing = [f"--{f}" for f in ("input", "strokes", "output") if getattr(args, f) is None]
        if missing:
            p.error(f"{', '.join(missing)} required (or --simulate K with --root)")
    elif args.simulate < 1 or args.root is None:
        p.error("--simulate needs K >= 1 and --root")
    if args.iters < 0 or args.time_limit <= 0:
        p.error("--iters must be >= 0 and --time_limit > 0")
    if not 0 < args.lr <= 1:  # Adam's steps are about lr in size; above 1e38 torch itself overflows
        p.error(f"--lr must lie in (0, 1], got {args.lr}")
    # A negative anchor would reward moving away from the first prediction.
    for flag in ("anchor_weight", "anchor_margin"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.neighbours < 0:
        p.error(f"--neighbours must be >= 0, got {args.neighbours}")
    if args.worst_slices < 1:
        p.error(f"--worst_slices must be >= 1, got {args.worst_slices}")
    return args, p


def settings_of(args) -> RefineSettings:
    return RefineSettings(args.iters, args.lr, args.anchor_weight, args.anchor_margin, args.time_limit, args.scope,
                          args.neighbours)


def refined_path(output: str, scan: str) -> str:
    return os.path.join(output, f"{io.nifti_stem(scan)}_refined.nii.gz")


# What a refined checkpoint keeps of the one it was refined from (not the optimisers or RNGs).
KEPT = ("config", "method", "iteration", "split", "class_names", "train_images", "world_size")


def save_refined(path: str, checkpoint: str, ckpt: dict, method, scan: str) -> None:
    """A checkpoint ``load_method`` reads: the original's (``ckpt``, read from ``checkpoint``)
    config, split and record of its training data (``KEPT``), the weights refined on ``scan``,
    and where they came from: the run's own checkpoint and every scan refined on, also through
    earlier refinements (so that the scoring tools refuse it: ``checkpoint.check_unseen``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_checkpoint(path, {**{k: ckpt[k] for k in KEPT if k in ckpt}, "model": method.state_dict(),
                            "refined_from": ckpt.get("refined_from") or os.path.abspath(checkpoint),
                            "refined_on": [*refined_scans(ckpt), os.path.abspath(scan)]})


def check_save_path(save: str, out: str, output: str) -> None:
    """ValueError naming ``--save`` unless it is a new file path, other than the refined
    segmentation ``out`` and not a folder holding ``--output`` ``output``."""
    if os.path.realpath(save) == os.path.realpath(out):
        raise ValueError(f"--save {save} is the refined segmentation's path; the model would replace it")
    if os.path.exists(save):
        raise ValueError(f"--save {save} exists; the refined model goes to a new path")
    folder = os.path.realpath(output)
    if os.path.basename(save) in ("", ".", "..") or folder == os.path.realpath(save) or \
            folder.startswith(os.path.realpath(save) + os.sep):
        raise ValueError(f"--save {save} names a folder (or --output {output} lies in it); give the refined model "
                         "a file path")
    io.check_outputs("--save", [save])


def refine_scan(args, ckpt, method, how: Prediction) -> str:
    scan = how.read_scan(args.input)
    strokes = check_strokes(io.read_labels_on(args.strokes, scan, io.UNLABELED, args.input), scan.image.shape,
                            args.strokes, how.num_classes)
    if not (strokes != io.UNLABELED).any():
        raise ValueError(f"{args.strokes}: no voxel is stroked (all {io.UNLABELED}); nothing to correct")
    out = refined_path(args.output, args.input)
    if os.path.realpath(out) in (os.path.realpath(args.input), os.path.realpath(args.strokes)):
        raise ValueError(f"--output {args.output}: would overwrite {out}")
    io.check_segmentation_outputs("--output", [out], args.overwrite)
    if args.save is not None:
        check_save_path(args.save, out, args.output)
    pred, info = refine_volume(method.segmenter(), scan.image, strokes, how, settings_of(args), spacing=scan.spacing)
    os.makedirs(args.output, exist_ok=True)
    io.write_segmentation(out, pred, scan, ckpt.get("class_names"))
    if args.save is not None:
        save_refined(args.save, args.checkpoint, ckpt, method, args.input)
    # Checkpoints older than the record name no classes: their labels are the run's root's.
    names = ckpt.get("class_names") or [f"label {k}" for k in range(1, how.num_classes)]
    codes = ", ".join(f"{k} {n}" for k, n in enumerate(["background", *names]))
    print(f"{out}: {info['steps']} steps, {info['seconds']:.1f} s (strokes read as {codes})")
    return out


def simulate(args, method, how: Prediction, ckpt) -> dict:
    cases = cases_to_score(ckpt, args.checkpoint, args.root, args.fold, args.split)
    rows = []
    print(f"{'case':22s} {'dice before':>11s} {'after':>7s} {'change':>7s} {'voxels':>7s} {'steps':>5s} {'s':>6s}")
    for case in cases:
        r = simulate_case(method.segmenter(), case, args.simulate, how, args.worst_slices, args.seed,
                          settings_of(args))
        rows.append(r)
        print(f"{r['case']:22s} {r['dice_before']:11.4f} {r['dice_after']:7.4f} "
              f"{r['dice_after'] - r['dice_before']:+7.4f} {r['stroked_voxels']:7d} {r['steps']:5d} "
              f"{r['seconds']:6.1f}", flush=True)
    s = summarize_simulation(rows)
    drop = f"largest drop {s['largest_drop']:.4f}" if s["largest_drop"] else "none worse"
    print(f"all {s['n']} volumes: mean Dice {s['all_before']:.4f} -> {s['all_after']:.4f}; "
          f"worst {s['worst_n']}: {s['worst_before']:.4f} -> {s['worst_after']:.4f}; "
          f"{drop}; {s['seconds_mean']:.1f} s per refinement "
          f"(max {s['seconds_max']:.1f} s)")
    return s


def main(argv=None):
    args, parser = parse_args(argv)
    try:
        device = resolve_device(args.device)
        ckpt = read_checkpoint(args.checkpoint, device)
        method, cfg = method_from_checkpoint(ckpt, device)
        how = Prediction.of(cfg, device, args.resize_back, args.postprocess)
        if args.simulate:
            return simulate(args, method, how, ckpt)
        return refine_scan(args, ckpt, method, how)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
