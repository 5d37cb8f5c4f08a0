"""The MaskMixAdv ablation on real scans: each component added in turn, with seed repeats.

    python benchmarks/ablation.py --root data/ACDC --shape_prior ../shared/data/MSCMR/val/labels

pCE -> + two complementary views (pCE on each) -> + reconstruction -> + mixed pseudo labels ->
+ adversarial shape prior (= MaskMixAdv), and feature- instead of image-level masking; pCE and
the full method also with a second seed, so that the table shows the size of seed noise. Every
variant is MaskMixAdv with some weights set to 0 (flags of the method, not copies of it), trained
by ``train_wss.sh --protocol quick`` (``--protocol``, ``--train_args`` to change), model chosen on
the validation split, scored once on the test fold. Finished runs are only re-scored.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (method, flags). Weights as in the paper; 0 switches a term off.
OFF = {"pseudo": ["--w_pseudo", "0"], "rec": ["--w_rec", "0"], "adv": ["--w_adv", "0"]}
VARIANTS = {
    "pce": ("pce", []),
    "pce_seed1": ("pce", ["--seed", "1"]),
    "views": ("maskmixadv", OFF["pseudo"] + OFF["rec"] + OFF["adv"]),
    "views_rec": ("maskmixadv", OFF["pseudo"] + OFF["adv"]),
    "views_rec_pseudo": ("maskmixadv", OFF["adv"]),
    "maskmixadv": ("maskmixadv", []),
    "maskmixadv_seed1": ("maskmixadv", ["--seed", "1"]),
    "maskmixadv_feature": ("maskmixadv", ["--mask_level", "feature"]),
}


def check_train_args(train_args: str) -> None:
    """ValueError when ``--train_args`` sets a flag that defines a variant: given after the
    variant's own, it would win (``--seed 7`` made the seed repeats copies of their runs)."""
    defining = {f for _, flags in VARIANTS.values() for f in flags if f.startswith("--")} | {"--shape_prior"}
    given = {word.split("=")[0] for word in shlex.split(train_args)}
    clash = sorted(given & defining)
    if clash:
        raise ValueError(f"--train_args: {', '.join(clash)} defines the variants (or has its own flag); "
                         "leave it to them")


def run_variant(name: str, args) -> dict:
    """Train (or resume) and test one variant with ``train_wss.sh``; its result JSON."""
    method, flags = VARIANTS[name]
    prefix = f"{args.exp_prefix}{name}_"
    cmd = ["bash", os.path.join(HERE, "..", "train_wss.sh"), "--root", args.root, "--folds", args.fold,
           "--protocol", args.protocol, "--methods", method, "--exp_prefix", prefix]
    if args.shape_prior and method == "maskmixadv":  # train_wss.sh refuses --args of a method it does not run
        cmd += ["--args", "maskmixadv", f"--shape_prior {args.shape_prior}"]
    subprocess.run([*cmd, "--", *flags, *shlex.split(args.train_args)], check=True)
    # train_wss.sh writes model/ in the current directory, as this script's paths are read.
    with open(os.path.join("model", "results", f"{prefix}{method}_{args.fold}.json")) as f:
        return json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--root", "--root_path", default="data/ACDC")
    p.add_argument("--fold", default="fold1")
    p.add_argument("--protocol", default="quick", choices=["quick", "long", "paper"])
    p.add_argument("--shape_prior", help="unpaired dense masks for the adversarial variants")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--exp_prefix", default="abl_")
    p.add_argument("--train_args", default="", help="extra flags for every training run")
    args = p.parse_args(argv)
    try:
        check_train_args(args.train_args)
    except ValueError as e:
        p.error(str(e))
    rows = {name: run_variant(name, args) for name in args.variants}
    classes = list(next(iter(rows.values()))["dice"])  # the data root's classes, then "mean"
    print(f"{'variant':20s} " + " ".join(f"{'Dice ' + c if i == 0 else c:>8s}" for i, c in enumerate(classes))
          + f" {'HD95':>7s} {'ASD':>7s}")
    for name, r in rows.items():
        print(f"{name:20s} " + " ".join(f"{r['dice'][c]:8.4f}" for c in classes)
              + f" {r['hd95']['mean']:7.2f} {r['asd']['mean']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
