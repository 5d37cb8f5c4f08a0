"""Score a fold's test volumes: Dice, HD95 and ASD per volume and per class.

``--fold fold1..fold5`` as in training, or ``--fold split`` (the data root's ``splits.json``);
``--on val`` scores the validation part instead of the test part. Class names come from the
data root's ``dataset.json`` (default RV, MYO, LV).

Two sources of predictions:

- a trained checkpoint: ``--exp NAME --sup_type scribble [--checkpoint best|last|PATH]`` (the run
  in ``model/<exp>_<fold>/<sup_type>``), predicted slice by slice at the training input size;
- ``--pred_dir DIR``: label volumes ``<case>.nii.gz`` or ``<case>.h5`` (key ``label``; extensions
  in any letter case, one file per case), in the same (Z, H, W) order as the h5 ``label``.

Writes the summary JSON (``--out_json``), a per-volume, per-class CSV beside it, optionally the
predictions as NIfTI with the scan's geometry (``--save_nii``: spacing, and origin and direction
for data converted from NIfTI), and prints a table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
import torch

import config
import metrics
from dataloaders import io
from dataloaders.acdc import FOLD_CHOICES, split_part, volumes_digest
from inference import Prediction, distance_units, reference_volumes, resolve_device, score_cases, table_rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--root_path", "--root", default=config.DEFAULTS["root_path"],
                   help="data root in the ACDC h5 layout")
    p.add_argument("--fold", default=config.DEFAULTS["fold"], choices=FOLD_CHOICES,
                   help="fold1..fold5, or split (ROOT/splits.json)")
    p.add_argument("--on", "--split", default="test", choices=("test", "val"), help="which part of the split to score")
    p.add_argument("--out_json", required=True, help="summary JSON; the CSV is written beside it")
    p.add_argument("--pred_dir", help="score the label volumes in this folder")
    p.add_argument("--exp", help="experiment name of a trained run")
    p.add_argument("--sup_type", default="scribble", choices=io.SUPERVISION_TYPES)
    p.add_argument("--model_dir", help="default: model/<exp>_<fold>/<sup_type>")
    p.add_argument("--checkpoint", default="best", help="best | last | a checkpoint path")
    p.add_argument("--unfinished", action="store_true",
                   help="score a checkpoint of a run that stopped before its last iteration (default: refuse; "
                        "summarize_results.py, plot_curves.py and annotation_effort.py refuse such results)")
    config.add_prediction_args(p)
    p.add_argument("--save_nii", help="write the predictions as <case>.nii.gz here")
    p.add_argument("--overwrite", action="store_true", help="--save_nii may replace existing files")
    p.add_argument("--check_outputs", action="store_true",
                   help="only check that --out_json may be written for this run (train_wss.sh, before training)")
    args = p.parse_args(argv)
    if bool(args.pred_dir) == bool(args.exp or args.model_dir or args.checkpoint not in ("best", "last")):
        p.error("give either --pred_dir or a trained run (--exp / --model_dir, or --checkpoint PATH)")
    if args.pred_dir:
        given = [f for f in ("postprocess", "tta", "resize_back") if getattr(args, f)]
        if given:  # they apply to a trained run's predictions; a folder's were scored as they are
            p.error(f"--{given[0]} applies to a trained run's predictions, not to --pred_dir's")
    if not args.out_json.endswith(".json"):
        p.error(f"--out_json {args.out_json} must end with .json (the per-volume CSV goes beside it)")
    if args.pred_dir and args.save_nii and os.path.realpath(args.pred_dir) == os.path.realpath(args.save_nii):
        p.error(f"--save_nii {args.save_nii} is --pred_dir: the predictions scored would be overwritten")
    return args, p


def prediction_files(pred_dir: str, case: str) -> list[str]:
    """The files of ``pred_dir`` named ``<case>.nii.gz|.nii|.h5``, extensions in any letter case."""
    found = []
    for f in sorted(os.listdir(pred_dir)):
        stem = io.nifti_stem(f) if io.is_nifti(f) else f[:-3] if f.lower().endswith(".h5") else None
        if stem == case:
            found.append(os.path.join(pred_dir, f))
    return found


def read_prediction(pred_dir: str, case: io.Case, top: int, root: str | None = None) -> np.ndarray:
    """The label volume ``<case>.nii.gz|.nii|.h5`` of ``pred_dir``, classes 0..``top``; ValueError
    when the case has several (which one was meant?), or when it is a data volume (the case's own
    in the data ``root``, or an h5 file holding an image or scribbles: a copy of the data folder).
    A NIfTI prediction must lie on the case's grid (``io.read_labels_on``; for a case of h5 data,
    without an origin and direction, the one ``--save_nii`` writes, or unrotated at the origin),
    an h5 prediction too where it records its geometry: the same array order is only guaranteed
    by the same geometry. The case's own spacing is used."""
    paths = prediction_files(pred_dir, case.name)
    if not paths:
        raise FileNotFoundError(f"--pred_dir {pred_dir}: no prediction for case {case.name} "
                                f"({case.name}.nii.gz or {case.name}.h5)")
    if len(paths) > 1:
        raise ValueError(f"--pred_dir {pred_dir}: {' and '.join(map(os.path.basename, paths))} are predictions "
                         f"of the same case {case.name}; remove all but one")
    if root is not None and os.path.realpath(paths[0]) == os.path.realpath(io.volume_path(root, case.name)):
        # The data folder given for the predictions: its labels would score as perfect.
        raise ValueError(f"--pred_dir {pred_dir}: {paths[0]} is the case's own volume (with its labels), "
                         "not a prediction")
    if io.is_nifti(paths[0]):
        if root is not None:
            io.check_segmentation_classes(paths[0], io.class_names(root), root)
    else:
        data = sorted(io.h5_datasets(paths[0]) & {"image", "scribble"})
        if data:
            raise ValueError(f"--pred_dir {pred_dir}: {paths[0]} holds {' and '.join(map(repr, data))} beside its "
                             "labels: a data volume (a copy of the data folder?), not a prediction")
    return io.read_labels_on(paths[0], case, top, ref_name=f"case {case.name}")


def checkpoint_path(args) -> str:
    """The checkpoint that ``--exp``/``--model_dir``/``--checkpoint`` name."""
    model_dir = args.model_dir or os.path.join("model", f"{args.exp}_{args.fold}", args.sup_type)
    return args.checkpoint if args.checkpoint not in ("best", "last") else \
        os.path.join(model_dir, f"{args.checkpoint}.pth")


def read_run(args) -> tuple[str, dict, torch.device, tuple[int, int] | None]:
    """(path, contents, device, (iteration, max_iterations) where its run stopped early
    (:func:`checkpoint.stopped_early`; refused without ``--unfinished``)) of the checkpoint that
    ``--exp``/``--model_dir``/``--checkpoint`` name."""
    from checkpoint import read_checkpoint, stopped_early
    from run_folder import RunFolder

    path = checkpoint_path(args)
    training = RunFolder(os.path.dirname(os.path.abspath(path))).training_pid()
    if training is not None:  # its best.pth may still change: the result would name the wrong model
        raise ValueError(f"{path}: its run is still training (process {training} holds its .lock); score it when "
                         "the run has ended")
    stopped = stopped_early(path)
    if stopped and not args.unfinished:  # its result would be summarised as the method's
        raise ValueError(f"{path}: its run stopped at iteration {stopped[0]} of {stopped[1]} (interrupted, or a "
                         "non-finite loss: see its log.txt); finish it (train.py with --resume) and score it then, "
                         "or pass --unfinished to score this checkpoint as it is")
    device = resolve_device(args.device)
    return path, read_checkpoint(path, device), device, stopped


def predict_checkpoint(args, run, cases) -> tuple[dict[str, np.ndarray], dict]:
    """Predictions of a trained run (:func:`read_run`) for ``cases`` and what was scored: method,
    checkpoint path, its iteration and whether it is the run's best validation model, a hash of
    its configuration, its training setting (with the number of data-parallel processes),
    post-processing, precision, and, for a run that stopped early (``--unfinished``), where it
    stopped, which the summaries refuse. The cases were checked by ``checkpoint.cases_to_score``."""
    from checkpoint import config_digest, method_from_checkpoint, training_setting

    path, ckpt, device, stopped = run
    method, cfg = method_from_checkpoint(ckpt, device)
    model = method.segmenter()
    how = Prediction.of(cfg, device, args.resize_back, args.postprocess, args.tta)
    preds = {c.name: how.labels(model, c.image, c.spacing) for c in cases}
    best_model = ckpt["iteration"] == (ckpt.get("best") or {}).get("iteration")
    return preds, {"method": ckpt["method"], "checkpoint": os.path.abspath(path),
                   "iteration": ckpt["iteration"], "best_model": best_model, "postprocess": how.post, "tta": how.tta,
                   "resize_back": how.resize_back,
                   "amp": cfg.amp, "trained_on": {"root_path": cfg.root_path, "fold": cfg.fold},
                   "selected_on_test": cfg.select_on_test,
                   "config_sha256": config_digest(ckpt["config"]), "setting": training_setting(ckpt),
                   **({"unfinished": {"iteration": stopped[0], "max_iterations": stopped[1]}} if stopped else {})}


CSV_FIELDS = ("case", "class", *metrics.METRICS)  # the per-volume CSV's header


def csv_path(out_json: str) -> str:
    """The per-volume CSV written beside the summary JSON ``out_json``."""
    return os.path.splitext(out_json)[0] + ".csv"


def is_inside(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or lies below it, links resolved."""
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def is_result(path: str) -> bool:
    """True for a summary JSON or per-volume CSV that :func:`write_results` wrote."""
    try:
        with open(path, newline="") as f:
            if path.endswith(".csv"):
                return tuple(next(csv.reader(f), ())) == CSV_FIELDS
            result = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(result, dict) and isinstance(result.get("scored"), dict) and \
        all(isinstance(result.get(m), dict) for m in metrics.METRICS)


def check_out_json(args) -> None:
    """ValueError naming ``--out_json`` when it or its CSV would replace an input or another file:
    a path inside ``--root_path`` or ``--pred_dir`` (splits.json, dataset.json, predictions), or
    an existing file other than an earlier result (a run's config.json, the user's own table).
    Called before any work."""
    inputs = [("--root_path", args.root_path)] + ([("--pred_dir", args.pred_dir)] if args.pred_dir else [])
    for path in (args.out_json, csv_path(args.out_json)):
        for flag, folder in inputs:
            if is_inside(path, folder):
                raise ValueError(f"--out_json: {path} lies inside {flag} {folder}; write results outside it")
        if os.path.exists(path) and not is_result(path):
            raise ValueError(f"--out_json: {path} exists and is not a result of test_2D_fully.py; "
                             "choose another name")


def check_same_source(out_json: str, source: str) -> None:
    """ValueError naming ``out_json`` when it holds the scores of another checkpoint or prediction
    folder than ``source``: replacing them would lose them (e.g. a run of another
    ``--sup_type`` scored into the same results file)."""
    if not os.path.isfile(out_json):
        return
    with open(out_json) as f:
        scored = json.load(f)["scored"]
    old = scored.get("checkpoint") or scored.get("pred_dir")
    if old and os.path.realpath(old) != os.path.realpath(source):
        raise ValueError(f"--out_json: {out_json} holds the scores of {old}; choose another name "
                         "or remove it first")


def nii_path(out_dir: str, case: io.Case) -> str:
    return os.path.join(out_dir, f"{case.name}.nii.gz")


def save_nii(out_dir: str, case: io.Case, pred: np.ndarray, class_names) -> None:
    os.makedirs(out_dir, exist_ok=True)
    io.write_segmentation(nii_path(out_dir, case), pred, case, class_names)


def write_results(out_json: str, scores: dict, units: str, scored: dict | None = None,
                  names=io.CLASS_NAMES) -> dict:
    """Write the summary JSON (with ``scored``: what produced the predictions) and the per-volume
    CSV beside it, classes named ``names``; returns the summary."""
    summary = metrics.summarize(list(scores.values()), names)
    summary.update(n_volumes=len(scores), units=units, scored=scored or {})
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=2)
    with open(csv_path(out_json), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(table_rows(scores, names))
    return summary


def format_table(summary: dict) -> str:
    names = [n for n in summary["dice"] if n != "mean"] + ["mean"]
    lines = [f"{'':8s}" + "".join(f"{n:>9s}" for n in names)]
    for m in metrics.METRICS:
        lines.append(f"{m:8s}" + "".join(f"{summary[m][n]:9.4f}" for n in names))
    lines.append(f"{summary['n_volumes']} volumes; distances in {summary['units']}")
    return "\n".join(lines)


def source_and_cases(args, num_classes: int) -> tuple[tuple | None, list]:
    """(the trained run of ``read_run``, None for ``--pred_dir``; the volumes to score, checked:
    for a run, those it did not train on or choose its model on, :func:`checkpoint.cases_to_score`)."""
    if args.pred_dir:
        return None, reference_volumes(args.root_path, split_part(args.root_path, args.fold, args.on), num_classes)
    from checkpoint import cases_to_score

    run = read_run(args)
    return run, cases_to_score(run[1], run[0], args.root_path, args.fold, args.on)


def predictions(args, run, cases, num_foreground: int) -> tuple[dict[str, np.ndarray], dict]:
    """({case: (Z, H, W) uint8 labels}, what to record of how they were made): read from
    ``--pred_dir`` or predicted by the run; ValueError naming a case whose prediction has
    another shape than its label."""
    if args.pred_dir:
        preds = {c.name: read_prediction(args.pred_dir, c, num_foreground, args.root_path) for c in cases}
        scored = {"pred_dir": os.path.abspath(args.pred_dir)}
    else:
        preds, scored = predict_checkpoint(args, run, cases)
    for c in cases:
        if preds[c.name].shape != c.label.shape:
            raise ValueError(f"prediction for {c.name} has shape {preds[c.name].shape}, the label {c.label.shape}")
    return preds, scored


def main(argv=None) -> dict:
    args, parser = parse_args(argv)
    try:
        check_out_json(args)
        if args.check_outputs:  # the run may not exist yet: its path is enough
            check_same_source(args.out_json, args.pred_dir or checkpoint_path(args))
            return {"out_json": args.out_json}
        names = io.class_names(args.root_path)
        run, cases = source_and_cases(args, len(names) + 1)  # checked before minutes of predicting
        units = distance_units(args.root_path, cases)
        root_sha256 = io.root_digest(args.root_path)  # every volume read: a bad one fails before predicting
        if args.save_nii:
            outputs = [nii_path(args.save_nii, c) for c in cases]
            io.check_segmentation_outputs("--save_nii", outputs, args.overwrite)
        check_same_source(args.out_json, args.pred_dir or run[0])
        preds, scored = predictions(args, run, cases, len(names))
        scores = score_cases(preds, cases, len(names) + 1)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    if args.save_nii:
        for c in cases:
            save_nii(args.save_nii, c, preds[c.name], names)
    scored.update(root_path=os.path.abspath(args.root_path), root_sha256=root_sha256, fold=args.fold, on=args.on,
                  cases=sorted(c.name for c in cases),
                  volumes_sha256=volumes_digest(sorted(cases, key=lambda c: c.name)))
    summary = write_results(args.out_json, scores, units, scored, names)
    print(format_table(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
