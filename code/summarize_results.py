"""Print one table of the test results that ``train_wss.sh`` wrote (means over folds).

    python code/summarize_results.py --results model/results --methods pce maskmixadv --folds fold1
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def load_results(folder: str, methods, folds, prefix: str = "") -> dict[str, list[dict]]:
    """{method: [summary JSON of each fold found]}; a missing fold is reported on stderr."""
    out = {}
    for m in methods:
        out[m] = []
        for f in folds:
            path = os.path.join(folder, f"{prefix}{m}_{f}.json")
            if os.path.exists(path):
                with open(path) as fh:
                    out[m].append(json.load(fh))
            else:
                print(f"{m}: no result for {f} ({path})", file=sys.stderr)
    return out


def format_table(results: dict[str, list[dict]]) -> str:
    lines = [f"{'method':14s} {'folds':>5s} {'Dice RV':>8s} {'MYO':>7s} {'LV':>7s} {'mean':>7s} "
             f"{'HD95':>7s} {'ASD':>7s}"]
    for m, runs in results.items():
        if runs:
            mean = lambda metric, c: np.mean([r[metric][c] for r in runs])  # noqa: E731
            lines.append(f"{m:14s} {len(runs):5d} {mean('dice', 'RV'):8.4f} {mean('dice', 'MYO'):7.4f} "
                         f"{mean('dice', 'LV'):7.4f} {mean('dice', 'mean'):7.4f} "
                         f"{mean('hd95', 'mean'):7.2f} {mean('asd', 'mean'):7.2f}")
    units = sorted({r["units"] for runs in results.values() for r in runs})
    lines.append(f"distances (HD95, ASD) in {', '.join(units) or 'n/a'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="model/results", help="folder of <exp>_<fold>.json files")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--folds", nargs="+", required=True)
    p.add_argument("--exp_prefix", default="")
    args = p.parse_args(argv)
    results = load_results(args.results, args.methods, args.folds, args.exp_prefix)
    print(format_table(results))
    return 0 if all(len(r) == len(args.folds) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
