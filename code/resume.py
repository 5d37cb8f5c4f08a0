"""What a resumed run must keep, checked before it trains on: the same flags (but those that may
change, :data:`checkpoint.RESUME_MAY_CHANGE`), split, data and number of processes; and the record
of what did change (``cfg.resumes``)."""
from __future__ import annotations

import sys

from checkpoint import DATA_DIGEST, RESUME_MAY_CHANGE, with_defaults
from dataloaders.acdc import SPLIT_FOLD, Split
from distributed import Distributed


def check_resumable(saved: dict, cfg, method_cls) -> None:
    """Raise ValueError naming the first flag whose value differs from the saved run's. A flag
    that did not exist when the run was saved takes the value the run had (:data:`checkpoint.LEGACY`) or its
    default."""
    saved = with_defaults(saved, method_cls)
    # --fold split ignores --val_fraction (splits.json names the validation cases); runs saved
    # before it was refused there may hold any value.
    meaningless = {"val_fraction"} if cfg.fold == SPLIT_FOLD else set()
    for key, value in sorted(vars(cfg).items()):
        if key not in RESUME_MAY_CHANGE | meaningless and saved.get(key) != value:
            raise ValueError(f"--resume: --{key} is {value!r} but the run was started with "
                             f"{saved.get(key)!r}; use the same value or another --exp")


# Bookkeeping flags whose change says nothing about how the weights were trained.
NOT_RECORDED = {"resume", "overwrite", "progress"}


def record_resume(saved: dict, cfg, iteration: int) -> None:
    """Append to ``cfg.resumes`` (kept in config.json and the checkpoints) the iteration of this
    resume and every allowed change of a setting, ``{flag: [before, after]}`` (e.g. ``--amp``),
    so that a run's record says how each part of it was trained."""
    changed = {k: [saved.get(k), v] for k, v in sorted(vars(cfg).items())
               if k in RESUME_MAY_CHANGE - NOT_RECORDED and k in saved and saved[k] != v}
    cfg.resumes = [*saved.get("resumes", []), {"iteration": iteration, "changed": changed}]


def finished(ckpt: dict, cfg, path: str, dist: Distributed) -> bool:
    """True, with a note on stderr, when the run resumed from ``ckpt`` (read from ``path``) has no
    iteration left. train_wss.sh re-tests finished runs through --resume: nothing is written then,
    so config.json keeps the precision the run trained in (``--amp auto`` may resolve otherwise here)."""
    if ckpt["iteration"] < cfg.max_iterations:
        return False
    if dist.is_main:
        print(f"{path}: the run finished at iteration {ckpt['iteration']}; nothing to train", file=sys.stderr)
    return True


def check_same_split(saved: dict | None, split: Split, path: str) -> None:
    """ValueError when the data now gives another split than the saved run trained on."""
    if saved is None:
        return
    for part, cases in vars(split).items():
        if saved.get(part) != cases:
            changed = sorted(set(saved.get(part) or []) ^ set(cases))
            raise ValueError(f"--resume: the {part} cases differ from those {path} was trained on "
                             f"(e.g. {changed[0] if changed else 'their order'}); use the same --root_path")


def check_same_data(saved: dict, cfg, path: str) -> None:
    """ValueError when data the run reads now differ from those the run saved at ``path`` used:
    every ``<part>_data_sha256`` of ``cfg`` (:meth:`SliceDataset.digest` of the training slices,
    :func:`volumes_digest` of the validation volumes, what a method's ``prepare`` loaded, e.g. a
    shape prior) against the saved config ``saved`` (absent from runs older than the record):
    the same names on another data root, or the data converted again otherwise."""
    for key in sorted(k for k in vars(cfg) if k.endswith(DATA_DIGEST)):
        if saved.get(key) is not None and saved[key] != getattr(cfg, key):
            part = key[:-len(DATA_DIGEST)]
            part = {"train": "training", "val": "validation"}.get(part, part.replace("_", " "))
            raise ValueError(f"--resume: the {part} data differ from those {path} "
                             "was trained with (the same names, other images or labels: another or re-converted "
                             "data?); use the same data, or train a new run")


def check_same_world(ckpt: dict, dist: Distributed, path: str) -> None:
    """ValueError when a run is resumed with another number of processes (which would change
    its effective batch and its batches)."""
    saved = ckpt.get("world_size", 1)
    if saved != dist.world_size:
        raise ValueError(f"--resume: {path} was trained by {saved} process(es), this job has "
                         f"{dist.world_size}; resume with torchrun --nproc_per_node {saved}")
