"""The timing flags ``bench_train_step.py`` and ``release_step.py`` share (each runs in its own
process: the release's packages are named like ours)."""
from __future__ import annotations

import argparse


def add_step_args(p: argparse.ArgumentParser) -> None:
    """``--patch``, ``--batch``, ``--steps`` (timed) and ``--warmup`` (untimed, first)."""
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)


def check_step_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``p.error`` for a timing flag no step can run with (or divide by)."""
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.patch < 16 or args.patch % 16:
        p.error("--steps and --batch must be >= 1, --warmup >= 0, --patch a multiple of 16")
