"""Print one table of the test results train_wss.sh wrote: means over folds and their spread.

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


def _row(name: str, n: int | None, runs: list[dict], stat) -> str:
    """One table line: ``stat`` over the folds of Dice (RV, MYO, LV, mean), mean HD95 and ASD."""
    v = lambda metric, c: stat([r[metric][c] for r in runs])  # noqa: E731
    return (f"{name:14s} {'' if n is None else n:>5} {v('dice', 'RV'):8.4f} {v('dice', 'MYO'):7.4f} "
            f"{v('dice', 'LV'):7.4f} {v('dice', 'mean'):7.4f} {v('hd95', 'mean'):7.2f} {v('asd', 'mean'):7.2f}")


def format_table(results: dict[str, list[dict]]) -> str:
    lines = [f"{'method':14s} {'folds':>5s} {'Dice RV':>8s} {'MYO':>7s} {'LV':>7s} {'mean':>7s} "
             f"{'HD95':>7s} {'ASD':>7s}"]
    for m, runs in results.items():
        if runs:
            lines.append(_row(m, len(runs), runs, np.mean))
        if len(runs) > 1:  # the spread between folds (sample standard deviation)
            lines.append(_row("  +- std", None, runs, lambda v: np.std(v, ddof=1)))
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
