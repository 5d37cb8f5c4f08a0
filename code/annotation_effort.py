"""The annotation-effort curve: test Dice against the pixels an annotator drew for training.

    python code/annotation_effort.py model/results/points.json model/results/scribble.json \
        --labels points scribbles --out imgs/annotation_effort.png

Each input is a ``test_2D_fully.py`` result of a checkpoint; its ``scored`` entry names the
checkpoint, and the run folder's ``config.json`` says how the model was supervised
(``--sup_type``, ``--labeled_patients``, fold, seed). The training targets are rebuilt as the
engine builds them (same split, same seeded dense patients, same points, scribbles or masks)
and counted (:meth:`dataloaders.acdc.SliceDataset.annotation`): drawn pixels (stroke and point
pixels, the outlines of dense masks: a mask is drawn by tracing its contours) and labelled
pixels. Prints a Markdown table and plots mean test Dice against drawn pixels (log scale), one
line per method.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dataloaders import io  # noqa: E402
from dataloaders.acdc import SliceDataset, dense_training_cases, make_split  # noqa: E402
from plot_curves import check_figure_out, run_name  # noqa: E402
from summarize_results import (check_same, check_same_root, check_same_selection, check_same_setting,  # noqa: E402
                               classes_of, note_roots, read_result, root_of, scored_of, scored_part, scoring_of,
                               result_units)

# What the training targets depend on, as train.py saves it in config.json (labeled_patients and
# target_spacing are absent from configs older than those flags).
TARGET_KEYS = ("fold", "val_fraction", "select_on_test", "sup_type", "seed", "patch_size", "input_size")
CONFIG_KEYS = ("method", "root_path", *TARGET_KEYS)
# What the points of one method's curves vary (with --sup_type, how its targets are resized).
ALONG_CURVES = ("sup_type", "labeled_patients", "point_resize")


def result_and_config(path: str) -> tuple[dict, dict, dict]:
    """(result, training config, what the run trained on as its checkpoint records it: ``cases``
    (None without a split) and ``data_sha256`` (None for runs older than the record)) of a
    ``test_2D_fully.py`` JSON scored on a checkpoint; the config has every flag (those its run
    predates at the value it trained with: ``checkpoint.with_defaults``)."""
    from checkpoint import read_checkpoint, with_defaults

    result = read_result(path)
    checkpoint = (result.get("scored") or {}).get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{path}: a test_2D_fully.py result of predictions, not of a checkpoint")
    config_path = os.path.join(os.path.dirname(checkpoint), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path}: no run config beside the checkpoint {path} scored")
    cfg = io.read_json_object(config_path)
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{config_path}: not a run config (missing {', '.join(missing)})")
    ckpt = read_checkpoint(checkpoint)
    check_same_run(path, result["scored"], ckpt["config"], cfg, config_path)
    # The split of the run, not the one the data root would give now (its splits.json may have changed).
    return result, with_defaults(cfg), {"cases": (ckpt.get("split") or {}).get("train"),
                         "data_sha256": ckpt["config"].get("train_data_sha256")}


def check_same_run(path: str, scored: dict, trained: dict, cfg: dict, config_path: str) -> None:
    """ValueError when ``config.json`` disagrees with the configuration ``trained`` of the
    checkpoint that the result ``path`` scored (that it is still that checkpoint,
    :func:`summarize_results.read_result` checked)."""
    if "config_sha256" not in scored:  # a result written before the digest was recorded
        return
    # root_path may change on --resume (config.json then says where the data is now).
    differ = [k for k in ("method", *TARGET_KEYS) if trained.get(k) != cfg.get(k)]
    if differ:
        raise ValueError(f"{config_path}: --{differ[0]} {cfg.get(differ[0])!r} differs from the checkpoint's "
                         f"{trained.get(differ[0])!r}")


def annotation(cfg: dict, root: str | None = None, cases: list[str] | None = None,
               data_sha256: str | None = None) -> dict[str, int]:
    """Drawn, labelled and all training pixels of the run configured by ``cfg`` (a
    ``config.json``) that trained on ``cases`` (default: its fold's training cases as the data
    root splits them now), its data read from ``root`` (default: the run's ``root_path``).
    ValueError naming the root when the run recorded another ``data_sha256`` of its training
    slices (:meth:`SliceDataset.digest`): the same cases, other data."""
    root = root or cfg["root_path"]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: data root of the run not found (pass --root)")
    if cases is None:
        cases = make_split(root, cfg["fold"], cfg["val_fraction"], cfg["select_on_test"]).train
    train, dense = dense_training_cases(cases, cfg["sup_type"], cfg["labeled_patients"], cfg["seed"],
                                        io.patient_pattern(root))
    # Counted and hashed on the slices as stored, before any --target_spacing resampling: not done here.
    data = SliceDataset(root, train, cfg["sup_type"], cfg["patch_size"], progress=False,
                        input_size=cfg["input_size"], dense_cases=dense)
    if data_sha256 is not None and data.digest() != data_sha256:
        raise ValueError(f"{root}: the training data differ from those the run trained on (the same cases, "
                         "other images or labels); count on the run's own data (--root)")
    return data.annotation()


def effort_rows(paths: list[str], labels: list[str], root: str | None = None) -> list[dict]:
    """One row per result: label, method, supervision, drawn/labelled/all training pixels, Dice, HD95."""
    read = [(path, label, *result_and_config(path)) for path, label in zip(paths, labels)]
    results = [(path, result) for path, _, result, _, _ in read]
    # All checked before the slow loading of each run's slices. One method's points form its
    # curves: they may differ only in the supervision.
    for method in dict.fromkeys(cfg["method"] for _, _, _, cfg, _ in read):
        check_same_setting([(p, r) for p, r in results if scored_of(r).get("method") == method], ignore=ALONG_CURVES)
    check_same(results, "classes", classes_of)
    check_same(results, "distance units", result_units)
    check_same_root(results)
    # One curve of Dice: each point predicted the same way (lcc alone lifts HD95 and Dice).
    check_same(results, "scoring (post-processing, TTA, resize back)", scoring_of)
    check_same_selection(results, "the curves")
    if scored_part(results) != "test":
        raise ValueError(f"{read[0][0]}: scored the validation part; the curve is of test Dice")
    counted: dict[tuple, dict[str, int]] = {}
    rows = []
    for path, label, result, cfg, trained in read:
        n = cfg["labeled_patients"]
        # Runs whose training targets are built alike share one count.
        key = (root or cfg["root_path"], json.dumps([cfg[k] for k in TARGET_KEYS]), n, str(cfg["target_spacing"]),
               json.dumps(trained["cases"]), trained["data_sha256"])
        if key not in counted:
            counted[key] = annotation(cfg, root, trained["cases"], trained["data_sha256"])
        # Points sampled by nearest neighbour (--point_resize nearest) trained on fewer of them.
        sup_type = cfg["sup_type"] + (" (nearest)" if cfg.get("point_resize") == "nearest" else "")
        supervision = sup_type + (f" + {n} dense" if n and cfg["sup_type"] != "label" else "")
        if n and cfg["sup_type"] == "label":
            supervision = f"dense, {n} patients only"
        rows.append({"label": label, "method": cfg["method"], "supervision": supervision, "sup_type": sup_type,
                     "dense_patients": n, **counted[key], "dice": result["dice"], "hd95": result["hd95"]["mean"]})
    note_roots(root_of(r) for _, r in results)
    return rows


def format_table(rows: list[dict]) -> str:
    classes = [c for c in rows[0]["dice"] if c != "mean"] if rows else []
    lines = ["| run | method | supervision | drawn pixels | labelled pixels | % of its training pixels | "
             + " | ".join(classes) + " | mean Dice | HD95 |", "|---" * (8 + len(classes)) + "|"]
    for r in rows:
        d = r["dice"]
        lines.append(f"| {r['label']} | {r['method']} | {r['supervision']} | {r['drawn']:,} | {r['labelled']:,} "
                     f"| {100 * r['labelled'] / r['pixels']:.3f} | "
                     + " | ".join(f"{d[c]:.3f}" for c in classes) + f" | {d['mean']:.3f} | {r['hd95']:.2f} |")
    return "\n".join(lines)


def plot_effort(rows: list[dict], out: str, title: str = "") -> None:
    """Left: mean test Dice against drawn pixels (log), one line per method. Right: against the
    number of densely labelled patients, one line per method and sparse supervision."""
    fig, (ax_px, ax_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["drawn"])
        ax_px.plot([r["drawn"] for r in mine], [r["dice"]["mean"] for r in mine], marker="o", label=method)
        for i, r in enumerate(mine):
            # Runs with nearly the same effort sit on one spot: stack their labels.
            near = sum(abs(math.log((q["drawn"] + 1) / (r["drawn"] + 1))) < 0.1 for q in mine[:i])
            ax_px.annotate(r["label"], (r["drawn"], r["dice"]["mean"]), fontsize=7,
                           xytext=(4, -10 - 9 * near), textcoords="offset points")
    for series in dict.fromkeys((r["method"], r["sup_type"]) for r in rows):
        mine = sorted((r for r in rows if (r["method"], r["sup_type"]) == series), key=lambda r: r["dense_patients"])
        ax_n.plot([r["dense_patients"] for r in mine], [r["dice"]["mean"] for r in mine], marker="o",
                  label=f"{series[0]}, " + ("dense patients only" if series[1] == "label" else f"{series[1]} + dense"))
    ylabel = f"test Dice (mean {'/'.join(c for c in rows[0]['dice'] if c != 'mean')})"  # the root's classes
    ax_px.set(xscale="log", xlabel="drawn training pixels (strokes, points, outlines of dense masks)",
              ylabel=ylabel, ylim=(0, 1))
    ax_n.set(xlabel="densely labelled training patients", ylabel=ylabel, ylim=(0, 1))
    for ax in (ax_px, ax_n):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", help="test_2D_fully.py JSON files of trained checkpoints")
    p.add_argument("--labels", nargs="+", help="one label per result (default: the file names)")
    p.add_argument("--root", "--root_path", help="the runs' data root (default: each run's --root_path)")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True, help="the figure (.png, .pdf, .svg)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.results):
        p.error(f"--labels: {len(args.labels)} labels for {len(args.results)} results")
    labels = args.labels or [run_name(r) for r in args.results]
    try:
        check_figure_out(args.out, args.overwrite)
        rows = effort_rows(args.results, labels, args.root)
    except (OSError, ValueError) as e:
        p.exit(2, f"error: {e}\n")
    print(format_table(rows))
    plot_effort(rows, args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
