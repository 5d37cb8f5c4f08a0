"""Every training default in one place, and the command line built from it.

Methods add only the flags of their own method (``Method.add_args``); everything else (optimiser,
learning rate, batch, patch, iterations, seed, precision, validation) is shared, so that methods
compared on this engine differ only where the methods differ. Defaults follow the paper protocol.
"""
from __future__ import annotations

import argparse
import json
import math
import os

from dataloaders.acdc import FOLD_CHOICES, POINTS, SPLIT_FOLD, SUPERVISION, make_split
from dataloaders.spacing import parse_target_spacing
from networks.unet import HEAD_KERNELS, UPSAMPLING
from inference import AMP, RESIZE_BACK
from postprocess import POSTPROCESS

# How --sup_type points targets are resized (dataloaders.augment.keep_points, or nearest neighbour).
POINT_RESIZE = ("keep", "nearest")

DEFAULTS = dict(
    root_path="data/ACDC_phantom",
    fold="fold1",
    exp=None,
    sup_type=None,
    labeled_patients=0,
    point_resize=None,
    out_dir=None,
    num_classes=4,
    upsampling="transposed",
    head_kernel=1,
    max_iterations=60000,
    batch_size=12,
    patch_size=[256, 256],
    input_size=None,
    fg_prob=0.5,
    aug_scale=0.0,
    aug_intensity=False,
    target_spacing="off",
    postprocess="none",
    resize_back="scores",
    base_lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    poly_power=0.9,
    model_ema=0.0,
    seed=2022,
    device="auto",
    amp="off",
    channels_last=True,
    num_workers=2,
    val_interval=200,
    val_fraction=0.1,
    select_on_test=False,
    resume=False,
    overwrite=False,
    save_every=500,
    progress=True,
)


def build_parser(method_cls=None, method_choices=None) -> argparse.ArgumentParser:
    """The shared flags, plus the method's own (``method_cls.add_args``) when one is given."""
    p = argparse.ArgumentParser(allow_abbrev=False, description="Train a scribble-supervised segmentation method.")
    d = DEFAULTS
    if method_choices is not None:
        p.add_argument("--method", required=True, choices=method_choices)
    p.add_argument("--root_path", default=d["root_path"], help="data root in the ACDC h5 layout")
    p.add_argument("--fold", default=d["fold"], help="fold1..fold5, or split (ROOT/splits.json)")
    p.add_argument("--exp", default=d["exp"], help="experiment name (default: the method name)")
    p.add_argument("--sup_type", default=d["sup_type"],
                   help="scribble | points | label | random_walker (default: the method's own)")
    p.add_argument("--labeled_patients", type=int, default=d["labeled_patients"],
                   help="N training patients (seeded choice) train on dense masks, the others on "
                        "--sup_type; with --sup_type label only those N train")
    p.add_argument("--point_resize", choices=POINT_RESIZE, default=d["point_resize"],
                   help="--sup_type points: resizes keep every point (keep, the default) or sample them by "
                        "nearest neighbour (nearest: how points runs saved without this flag trained; to resume one)")
    p.add_argument("--out_dir", default=d["out_dir"], help="default: model/<exp>_<fold>/<sup_type>")
    p.add_argument("--num_classes", type=int, default=d["num_classes"])
    p.add_argument("--upsampling", default=d["upsampling"], choices=UPSAMPLING,
                   help="decoders' x2 upsampling: transposed convolution, or 1x1 conv + bilinear as the "
                        "WSL4MIS and MaskMixAdv releases run it")
    p.add_argument("--head_kernel", type=int, default=d["head_kernel"], choices=HEAD_KERNELS,
                   help="kernel of the decoders' last convolution: 1, or 3 as the releases' out_conv")
    p.add_argument("--max_iterations", type=int, default=d["max_iterations"])
    p.add_argument("--batch_size", type=int, default=d["batch_size"])
    p.add_argument("--patch_size", type=int, nargs=2, default=d["patch_size"], metavar=("H", "W"))
    p.add_argument("--input_size", type=int, nargs=2, default=d["input_size"], metavar=("H", "W"),
                   help="resize whole slices to this size, then train on random --patch_size crops "
                        "and infer on the whole resized slice (default: the patch size, no crops)")
    p.add_argument("--target_spacing", default=d["target_spacing"],
                   help="resample slices in-plane to this spacing (mm, 'y,x' or one value; 'median' = "
                        "the training cases' median) and centre crop/pad them to --input_size, instead of "
                        "resizing whole slices (default off)")
    p.add_argument("--fg_prob", type=float, default=d["fg_prob"],
                   help="probability that a training crop is centred on a labelled foreground pixel")
    p.add_argument("--aug_scale", type=float, default=d["aug_scale"],
                   help="zoom half the training slices about their centre by a factor in [1 - S, 1 + S] "
                        "(default 0: never, as WSL4MIS and the MaskMixAdv release)")
    p.add_argument("--aug_intensity", action=argparse.BooleanOptionalAction, default=d["aug_intensity"],
                   help="jitter the gamma and contrast of training images (default off)")
    p.add_argument("--postprocess", default=d["postprocess"], choices=POSTPROCESS,
                   help="post-processing of predicted volumes in validation and testing "
                        "(lcc: keep each class's largest 3-D connected component)")
    p.add_argument("--resize_back", default=d["resize_back"], choices=RESIZE_BACK,
                   help="predictions return from --input_size to the slice's size as bilinear class "
                        "scores, or as labels (nearest neighbour, as WSL4MIS and the paper)")
    p.add_argument("--base_lr", type=float, default=d["base_lr"], help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=d["momentum"])
    p.add_argument("--weight_decay", type=float, default=d["weight_decay"])
    p.add_argument("--poly_power", type=float, default=d["poly_power"], help="poly LR decay power")
    p.add_argument("--model_ema", type=float, default=d["model_ema"],
                   help="validate, save and predict with an exponential moving average of the segmenter's "
                        "weights of this decay (e.g. 0.999); 0: the weights themselves")
    p.add_argument("--seed", type=int, default=d["seed"])
    add_device_arg(p)
    p.add_argument("--amp", default=d["amp"], choices=AMP,
                   help="mixed precision: bf16 is ~2x faster on CPUs with AMX and on GPUs, but emulated and "
                        "~16x slower on other CPUs; auto = bf16 where it is native, else off (fp32)")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction,
                   default=d["channels_last"], help="channels-last memory format")
    p.add_argument("--num_workers", type=int, default=d["num_workers"], help="data loader workers")
    p.add_argument("--val_interval", type=int, default=d["val_interval"],
                   help="validate (and save checkpoints) every N iterations")
    p.add_argument("--val_fraction", type=float, default=None,
                   help=f"fraction of training patients held out for model selection (default "
                        f"{d['val_fraction']}; 0: none, the last model is kept); not with --fold split, whose "
                        "splits.json names the validation cases")
    p.add_argument("--select_on_test", action="store_true",
                   help="select the model on the test fold, as the peers do (biased; for comparison)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pth")
    p.add_argument("--overwrite", action="store_true", help="replace the run in <out_dir> (default: refuse)")
    p.add_argument("--save_every", type=int, default=d["save_every"],
                   help="write last.pth every N iterations besides validations (preemption safety)")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    if method_cls is not None:
        method_cls.add_args(p.add_argument_group(f"{method_cls.name} options"))
    return p


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=DEFAULTS["device"], help="auto | cpu | cuda | cuda:N")


def add_prediction_args(p: argparse.ArgumentParser, tta: bool = True) -> None:
    """The flags of how a trained run predicts, shared by test_2D_fully.py, predict.py and
    refine.py: the device, and post-processing, resizing back (and ``tta``: test-time flips)
    that default to the run's own."""
    add_device_arg(p)
    p.add_argument("--postprocess", choices=POSTPROCESS,
                   help="post-processing of the predictions (default: the run's own)")
    p.add_argument("--resize_back", choices=RESIZE_BACK,
                   help="predictions return to the slice's size as scores or labels (default: the run's own)")
    if tta:
        p.add_argument("--tta", action="store_true", help="average the softmax over the flips of each slice (4 passes)")


def finalize(cfg: argparse.Namespace, method_cls) -> argparse.Namespace:
    """Fill the defaults that depend on the method, and check the values before anything is
    written to disk."""
    cfg.method = method_cls.name
    cfg.exp = cfg.exp or method_cls.name
    cfg.sup_type = cfg.sup_type or method_cls.sup_type
    cfg.out_dir = cfg.out_dir or os.path.join("model", f"{cfg.exp}_{cfg.fold}", cfg.sup_type)
    if cfg.sup_type in POINTS:
        cfg.point_resize = cfg.point_resize or "keep"
    elif cfg.point_resize is not None:
        raise ValueError(f"--point_resize applies to --sup_type points, not {cfg.sup_type}")
    # poly_power < 0 raised ZeroDivisionError at the last step; torch named no flag for the others.
    # nan passes every "< 0" check (--weight_decay nan made the weights NaN; --poly_power inf
    # trained nothing at exit 0): no flag of a method or of the engine takes one.
    for flag, value in sorted(vars(cfg).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{flag} must be a finite number, got {value}")
    for flag in ("labeled_patients", "num_workers", "weight_decay", "poly_power"):
        if getattr(cfg, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0, got {getattr(cfg, flag)}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise ValueError(f"--momentum must lie in [0, 1), got {cfg.momentum}")
    for flag in ("max_iterations", "batch_size", "val_interval", "save_every"):
        if getattr(cfg, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(cfg, flag)}")
    if cfg.fold not in FOLD_CHOICES:
        raise ValueError(f"--fold must be one of {', '.join(FOLD_CHOICES)}, got {cfg.fold!r}")
    if cfg.sup_type not in SUPERVISION:
        raise ValueError(f"--sup_type must be one of {sorted(SUPERVISION)}, got {cfg.sup_type!r}")
    if any(s < 16 or s % 16 for s in cfg.patch_size):
        raise ValueError(f"--patch_size must be multiples of 16, got {cfg.patch_size}")
    cfg.input_size = input_size(cfg)
    if any(s % 16 or s < p for s, p in zip(cfg.input_size, cfg.patch_size)):
        raise ValueError(f"--input_size must be multiples of 16 and >= --patch_size {cfg.patch_size}, "
                         f"got {cfg.input_size}")
    if cfg.val_fraction is not None and cfg.fold == SPLIT_FOLD:  # make_split would ignore it
        raise ValueError(f"--val_fraction {cfg.val_fraction} does not apply to --fold split: splits.json's 'val' "
                         "part names the validation cases (none: the last model is kept)")
    if cfg.val_fraction is None:
        cfg.val_fraction = DEFAULTS["val_fraction"]
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"--val_fraction must lie in [0, 1), got {cfg.val_fraction}")
    if not 0.0 <= cfg.fg_prob <= 1.0:
        raise ValueError(f"--fg_prob must lie in [0, 1], got {cfg.fg_prob}")
    if not 0.0 <= cfg.aug_scale < 1.0:
        raise ValueError(f"--aug_scale must lie in [0, 1), got {cfg.aug_scale}")
    if not 0.0 <= cfg.model_ema < 1.0:
        raise ValueError(f"--model_ema must lie in [0, 1), got {cfg.model_ema}")
    if cfg.base_lr <= 0 or cfg.seed < 0:  # lr 0 trained nothing at exit 0; torch named neither flag
        raise ValueError(f"--base_lr must be > 0 and --seed >= 0, got {cfg.base_lr} and {cfg.seed}")
    # Every method's loss weights are --w_*: a negative one would train away from its target.
    for flag, value in sorted(vars(cfg).items()):
        if flag.startswith("w_") and value < 0:
            raise ValueError(f"--{flag} must be >= 0, got {value}")
    training = make_split(cfg.root_path, cfg.fold, cfg.val_fraction, cfg.select_on_test).train \
        if cfg.target_spacing == "median" else None
    cfg.target_spacing = parse_target_spacing(cfg.target_spacing, cfg.root_path, training)
    method_cls.check_args(cfg)
    return cfg


def input_size(cfg) -> list[int]:
    """The size whole slices are resized to for training and inference: ``--input_size``, or the
    patch size for configs that have none (today's default and runs saved before the flag)."""
    return list(getattr(cfg, "input_size", None) or cfg.patch_size)


def save_config(cfg: argparse.Namespace, path: str) -> None:
    with open(path, "w") as f:
        json.dump(vars(cfg), f, indent=2, sort_keys=True)
