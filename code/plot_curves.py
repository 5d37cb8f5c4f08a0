"""Figures from run folders and result files: validation curves and a bar chart of test scores.

    python code/plot_curves.py --runs model/maskmixadv_fold1/scribble model/pce_fold1/scribble \
        --out imgs/curves.png
    python code/plot_curves.py --results model/results/maskmixadv_fold1.json model/results/pce_fold1.json \
        --out imgs/results.png

Curves: validation Dice and HD95 against the iteration, one line per run, read from each run's
``log.txt`` (the engine logs one line per validation). The runs must have validated on the same
volumes (fold, ``--val_fraction``, ``--select_on_test`` of their ``config.json``); runs of other
data roots are named in a note. Bars: per-class and mean Dice of each
result JSON that ``test_2D_fully.py`` wrote. Labels default to the run folder's or file's name.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dataloaders import io  # noqa: E402
from summarize_results import (check_distinct, check_same, check_same_cases, classes_of, note_roots,  # noqa: E402
                               read_result, root_of, scored_of, scored_part, scoring_of)

# Up to the "(N s)" that ends the line: a line cut off by a killed run (hd95 "5" for 50.59) is skipped.
VALIDATION_LINE = re.compile(r"iteration (\d+):.*\| val dice ([-\d.naif]+) hd95 ([-\d.naif]+) \(")


def read_validation(run_dir: str) -> np.ndarray:
    """(N, 3) array of (iteration, validation Dice, validation HD95) from ``run_dir/log.txt``,
    one row per validation, sorted by iteration (a resumed run's repeated lines keep the last)."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such log (is {run_dir} a run folder?)")
    rows = {}
    with open(path) as f:
        for line in f:
            m = VALIDATION_LINE.search(line)
            if m:
                rows[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
    if not rows:
        raise ValueError(f"{path}: no validation lines yet")
    return np.array([(it, *rows[it]) for it in sorted(rows)])


def run_config(run_dir: str) -> dict:
    """The ``config.json`` a run writes when it starts."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (is {run_dir} a run folder?)")
    config = io.read_json_object(path)
    if "method" not in config:
        raise ValueError(f"{path}: names no method (is {run_dir} a run folder?)")
    return config


def validated_on(cfg: dict) -> tuple:
    """What decides a run's validation volumes: fold, validation fraction (not for ``--fold split``,
    whose splits.json names them) and selecting on the test fold."""
    return (cfg.get("fold"), None if cfg.get("fold") == "split" else cfg.get("val_fraction"),
            bool(cfg.get("select_on_test")))


def validation_cases(run: str) -> list[str] | None:
    """The validation cases a run saved in its ``last.pth`` (None without one)."""
    path = os.path.join(run, "last.pth")
    if not os.path.isfile(path):
        return None
    from checkpoint import read_checkpoint

    return (read_checkpoint(path).get("split") or {}).get("val")


def check_comparable(runs: list[str]) -> None:
    """ValueError naming a run that validated on other volumes than the first (another fold, an
    edited splits.json, or a data root generated again: its curve is not comparable); a note on
    stderr for other data roots and for validation predicted differently. Runs given twice are
    refused by :func:`main`."""
    configs = [(r, run_config(r)) for r in runs]
    check_same(configs, "validation volumes (fold, --val_fraction, --select_on_test)", validated_on)
    check_same_cases([(r, {"cases": validation_cases(r), "volumes_sha256": c.get("val_data_sha256")})
                      for r, c in configs])
    note_roots((c.get("root_path") for _, c in configs), "runs trained on")
    from checkpoint import with_defaults

    full = [with_defaults(c) for _, c in configs]
    note_settings([(c["postprocess"], c["resize_back"]) for c in full],
                  "runs validated with different (post-processing, resize back)")


def note_settings(settings: list, what: str) -> None:
    """A note on stderr when ``settings`` (one per curve or bar) differ: a comparison the labels
    must say (lcc alone lifts Dice and HD95), so a note, not an error."""
    if len(set(settings)) > 1:
        print(f"note: the {what}: {', '.join(map(str, dict.fromkeys(settings)))}", file=sys.stderr)


def plot_curves(runs: list[str], labels: list[str], out: str, title: str = "") -> None:
    curves = [read_validation(run) for run in runs]
    check_comparable(runs)
    fig, (ax_dice, ax_hd) = plt.subplots(1, 2, figsize=(10, 3.8))
    for v, label in zip(curves, labels):
        ax_dice.plot(v[:, 0], v[:, 1], marker="o", ms=3, label=label)
        ax_hd.plot(v[:, 0], v[:, 2], marker="o", ms=3, label=label)
    ax_dice.set(xlabel="iteration", ylabel="validation Dice (mean over classes)", ylim=(0, 1))
    ax_hd.set(xlabel="iteration", ylabel="validation HD95", yscale="log")
    for ax in (ax_dice, ax_hd):
        ax.grid(alpha=0.3)
    ax_dice.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def plot_bars(results: list[str], labels: list[str], out: str, title: str = "") -> None:
    summaries = [read_result(path) for path in results]
    check_same(list(zip(results, summaries)), "classes", classes_of)
    part = scored_part(list(zip(results, summaries)))
    note_roots(root_of(summary) for summary in summaries)
    note_settings([scoring_of(summary) for summary in summaries],
                  "results were predicted with different (post-processing, TTA, resize back)")
    note_settings([scored_of(summary).get("best_model") for summary in summaries],
                  "results scored their run's best validation model (True), another model (False) or did not say (None)")
    classes = list(summaries[0]["dice"])
    scores = [[summary["dice"][c] for c in classes] for summary in summaries]
    x, width = np.arange(len(classes)), 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(classes), 3.8))
    for i, (row, label) in enumerate(zip(scores, labels)):
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, row, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax.set(xticks=x, xticklabels=classes, ylabel=f"{'test' if part == 'test' else 'validation'} Dice", ylim=(0, 1.1))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def check_figure_out(out: str, overwrite: bool = False) -> None:
    """ValueError naming ``--out`` when matplotlib cannot write its format (by extension) or it
    exists and ``overwrite`` is not given: checked before anything is read or drawn."""
    formats = matplotlib.figure.Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(out)[1][1:].lower()
    if ext not in formats:
        raise ValueError(f"--out {out}: a figure file needs one of the extensions {', '.join(sorted(formats))}")
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it")


def check_labels(labels: list[str]) -> None:
    """ValueError naming a label given to two inputs: the legend could not tell them apart."""
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:
        raise ValueError(f"two inputs are labelled {twice}; give --labels that tell them apart")


def _save(fig, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", help="run folders (with log.txt): validation curves")
    src.add_argument("--results", nargs="+", help="test_2D_fully.py JSON files: a bar chart")
    p.add_argument("--labels", nargs="+", help="one label per run or file (default: their names)")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True, help="the figure (.png, .pdf, .svg)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    items = args.runs or args.results
    if args.labels and len(args.labels) != len(items):
        p.error(f"--labels: {len(args.labels)} labels for {len(items)} inputs")
    labels = args.labels or [run_name(i) for i in items]
    try:
        check_figure_out(args.out, args.overwrite)
        check_distinct(items)
        check_labels(labels)
        (plot_curves if args.runs else plot_bars)(items, labels, args.out, args.title)
    except (OSError, ValueError, KeyError) as e:
        p.exit(2, f"error: {e}\n")
    print(f"wrote {args.out}")
    return 0


def run_name(path: str) -> str:
    """A short label for a run folder or a result JSON: the file name without .json, or the
    experiment folder of ``model/<exp>_<fold>/<sup_type>``."""
    path = os.path.normpath(path)
    if path.endswith(".json"):
        return os.path.basename(path)[:-5]
    parent, leaf = os.path.split(path)
    # model/<exp>_<fold>/<sup_type>: the experiment folder names the run better than the sup type
    return os.path.basename(parent) if leaf in io.SUPERVISION_TYPES else leaf


if __name__ == "__main__":
    sys.exit(main())
