"""What a run's checkpoint holds, and the checks every tool makes before it uses one.

:func:`save_checkpoint` writes everything a run needs to resume exactly (weights and their
digest, optimisers, schedules, RNG states, the split, the class names); :func:`read_checkpoint`
refuses damaged and foreign files; :func:`method_from_checkpoint` rebuilds the method with every
flag the saved configuration lacks at the value the run trained with (:func:`with_defaults`).
:func:`cases_to_score` picks the cases a run may be scored on (:func:`check_unseen`,
:func:`check_predicts`). Scoring and prediction tools need only this module, not the engine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from config import build_parser, finalize, input_size
from dataloaders import io
from dataloaders.acdc import POINTS, Split, make_split, split_part, trained_on_image
from dataloaders.io import Case
from inference import predicting_amp, reference_volumes

if TYPE_CHECKING:  # annotations only: the engine imports this module
    from distributed import Distributed
    from engine import TrainState
    from run_folder import RunFolder


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, cfg, method, optimizers, schedulers, state, best: dict,
                    split: Split | None = None, rngs: list[dict] | None = None,
                    train_images: list[str] | None = None) -> None:
    """Everything needed to resume exactly (and the split's case lists, so that a resume on other
    data is refused; ``train_images``: the training slices' ``image_fingerprint``, so that no
    scoring runs on them under other names), written by :func:`write_checkpoint`.
    ``state``: the engine's ``TrainState`` (iteration, gradient scaler); ``rngs``: every rank's
    RNG states in a data-parallel job (default: this process's).
    A model with a non-finite weight is never written (FloatingPointError naming the tensor)."""
    model = method.state_dict()
    name = non_finite_weight(model)
    if name is not None:
        raise FloatingPointError(f"iteration {state.iteration}: {name} holds NaN or inf; not writing {path}")
    ckpt = {
        "config": vars(cfg),
        "method": cfg.method,
        "model": model,
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "scaler": state.scaler.state_dict(),
        "iteration": state.iteration,
        "best": best,
        "rng": rngs[0] if rngs else rng_state(),
        "world_size": len(rngs) if rngs else 1,
        "split": None if split is None else vars(split),
        "class_names": list(io.class_names(cfg.root_path)),  # what its labels 1..C are, for scoring elsewhere
        "train_images": train_images,
    }
    if rngs and len(rngs) > 1:
        ckpt["rng_ranks"] = rngs
    write_checkpoint(path, ckpt)


def write_checkpoint(path: str, ckpt: dict) -> None:
    """Write ``ckpt`` (its ``model`` a state dict) with the weights' digest (:func:`weights_digest`,
    so a damaged file is refused), atomically and durably: a uniquely named temporary file,
    fsync'ed, renamed, and the folder fsync'ed, so a crash or power cut never leaves half a file."""
    with io.atomic_path(path, fsync=True) as tmp:
        torch.save({**ckpt, "model_sha256": weights_digest(ckpt["model"])}, tmp)


CHECKPOINT_KEYS = ("config", "method", "model", "iteration")


def non_finite_weight(state_dict: dict) -> str | None:
    """The name of the first floating-point tensor of ``state_dict`` holding NaN or inf, or None."""
    return next((name for name, t in state_dict.items()
                 if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


def config_digest(config: dict) -> str:
    """A short SHA-256 of a checkpoint's configuration: results record it, so a result can be
    matched with the checkpoint it scored."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_digest(state_dict: dict) -> str:
    """SHA-256 of a state_dict's names and tensor bytes: torch.load does not notice a changed byte
    inside a tensor, this does."""
    digest = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        digest.update(name.encode())
        if torch.is_tensor(t):
            digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def stopped_early(path: str) -> tuple[int, int] | None:
    """(iteration, max_iterations) of the run of the checkpoint at ``path`` when the ``last.pth``
    beside it shows that the run stopped before its last iteration (SIGTERM, SIGINT: waiting for
    ``--resume``); None when it finished, or when no ``last.pth`` lies beside it (a checkpoint
    copied alone)."""
    last = os.path.join(os.path.dirname(os.path.realpath(path)), "last.pth")  # a link's run folder
    if not os.path.isfile(last):
        return None
    ckpt = read_checkpoint(last)
    total = ckpt["config"]["max_iterations"]
    return (ckpt["iteration"], total) if ckpt["iteration"] < total else None


def read_checkpoint(path: str, device="cpu") -> dict:
    """A checkpoint written by :func:`save_checkpoint`; FileNotFoundError, OSError (unreadable,
    truncated) or ValueError (not this project's, e.g. a bare state_dict; a NaN or inf weight; weights
    that differ from the digest written with them) naming ``path``. Checkpoints written before
    the digest existed are read without it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch raises many kinds (zip, pickle, EOF) for a damaged file
        raise OSError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[0] if str(e).strip() else 'damaged'})") from e
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a checkpoint of this project (no {', '.join(missing)}; "
                         "a bare state_dict?)")
    if not isinstance(ckpt["model"], dict):
        raise ValueError(f"{path}: its model is a {type(ckpt['model']).__name__}, not a state_dict")
    name = non_finite_weight(ckpt["model"])
    if name is not None:
        raise ValueError(f"{path}: weight {name} holds NaN or inf")
    if "model_sha256" in ckpt and weights_digest(ckpt["model"]) != ckpt["model_sha256"]:
        raise ValueError(f"{path}: damaged checkpoint (its weights differ from the digest written with them)")
    return ckpt


def load_method(path: str, device: torch.device):
    """Rebuild the method a checkpoint names, with its weights, in eval mode: (method, config)."""
    return method_from_checkpoint(read_checkpoint(path, device), device)


def method_from_checkpoint(ckpt: dict, device: torch.device):
    """:func:`load_method` for a checkpoint already read by :func:`read_checkpoint`."""
    from methods import get_method

    method_cls = get_method(ckpt["method"])
    cfg = argparse.Namespace(**with_defaults(ckpt["config"], method_cls))
    cfg.amp = predicting_amp(cfg.amp, device)
    method = method_cls(cfg)
    method.load_state_dict(ckpt["model"])
    return method.to(device).eval(), cfg


# Flags added after runs were saved, with the value those runs behaved by (their validations
# chose the best model that way): a saved run without the flag keeps it, not today's default.
LEGACY = {"resize_back": "labels"}


# Settings that may change when a run is resumed; any other change would silently alter the run
# (e.g. a longer --max_iterations would keep the finished poly schedule at lr 0).
# Not --postprocess or --resize_back: the best model so far was chosen on validation scores with
# the old setting.
RESUME_MAY_CHANGE = {"resume", "overwrite", "save_every", "device", "num_workers", "progress",
                     "val_interval", "out_dir", "amp", "channels_last", "root_path", "exp"}


# What may differ between the folds of one setting: where and how each run ran, its fold, seed,
# dense patients (drawn per fold) and data, its resumes.
PER_RUN = RESUME_MAY_CHANGE | {"fold", "seed", "labeled_patient_ids", "resumes"}
# Config keys ending so hold digests of what a run read (its training slices, validation
# volumes, a method's prepared data such as a shape prior): per run, and checked on --resume.
DATA_DIGEST = "_data_sha256"


def with_defaults(config: dict, method_cls=None) -> dict:
    """A saved configuration with every flag it lacks at the value its run trained with: the
    run had no such flag, so :data:`LEGACY` or the flag's default (the input size: the patch size).
    ``method_cls``: the method whose flags it has (default: the one ``config["method"]`` names)."""
    if method_cls is None:
        from methods import get_method

        method_cls = get_method(config["method"])
    defaults = vars(finalize(build_parser(method_cls).parse_args([]), method_cls))
    # Points runs saved before --point_resize sampled their points by nearest neighbour.
    legacy = {**LEGACY, **({"point_resize": "nearest"} if config.get("sup_type") in POINTS else {})}
    config = {**defaults, **legacy, "input_size": None, **config}
    config["input_size"] = input_size(argparse.Namespace(**config))
    return config


def complete_setting(method: str, setting: dict) -> dict:
    """A :func:`training_setting` (possibly recorded before some flags existed) with every flag."""
    from methods import get_method

    full = with_defaults(setting, get_method(method))
    return {**{k: v for k, v in sorted(full.items()) if k not in PER_RUN and not k.endswith(DATA_DIGEST)},
            "world_size": setting.get("world_size", 1)}


def training_setting(ckpt: dict) -> dict:
    """A checkpoint's configuration without :data:`PER_RUN` and data digests, with its number of data-parallel
    processes and every flag it lacks at its default: what the folds averaged into one row of a
    table must share (results record it)."""
    return complete_setting(ckpt["method"], {**ckpt["config"], "world_size": ckpt.get("world_size", 1)})


def check_predicts(path: str, ckpt: dict, root: str) -> None:
    """ValueError when the checkpoint ``ckpt`` (read from ``path``) would be scored on, or resume
    with, a data root with another number of classes (its Dice would count absent classes as
    perfect) or, where the checkpoint records them, other class names in its label order (its
    label 1 would be scored against another structure)."""
    trained, root_names = ckpt["config"].get("num_classes"), io.class_names(root)
    if trained != len(root_names) + 1:
        raise ValueError(f"{path} predicts {trained} classes, {root} has {len(root_names) + 1} "
                         "(background and the classes of its dataset.json)")
    names = ckpt.get("class_names")
    if names is not None and tuple(names) != root_names:
        raise ValueError(f"{path} predicts labels 1..{len(names)} as {', '.join(names)}, {root} numbers its "
                         f"classes {', '.join(root_names)}; use a data root with the classes in the run's order")


def refined_scans(ckpt: dict) -> list[str]:
    """The scans ``refine.py --save`` fine-tuned the checkpoint ``ckpt`` on (one path before
    2026-12-06, a list since; none for a run's own checkpoint)."""
    scans = ckpt.get("refined_on") or []
    return [scans] if isinstance(scans, str) else list(scans)


def check_unseen(ckpt: dict, cases: list[str], path: str, part: str = "test") -> None:
    """ValueError when the checkpoint ``ckpt`` (read from ``path``) would be scored on cases it
    trained on (another fold, or a data root whose patients differ so that its positional folds
    shift) or, scoring ``part`` "test", on cases it chose its model on (its validation split,
    unless that was the test fold: ``--select_on_test``), or when ``refine.py --save`` fine-tuned
    it on a scan with strokes (the scores would pass for the run's, and the scan may be a case to
    score)."""
    if ckpt.get("refined_from"):
        scans = ", ".join(refined_scans(ckpt)) or "one scan"
        raise ValueError(f"{path} was fine-tuned by refine.py on {scans} "
                         f"(from {ckpt['refined_from']}); its scores are not the run's: score the run's checkpoint")
    saved = ckpt.get("split") or {}
    roles = {"train": "trained on"}
    if part == "test" and saved.get("val") != saved.get("test"):
        roles["val"] = "chose its model on"
    for role, done in roles.items():
        seen = sorted(set(saved.get(role) or []) & set(cases))
        if seen:
            raise ValueError(f"{path} {done} {len(seen)} of the {len(cases)} cases to score (e.g. {seen[0]}); "
                             "score the fold and data root it was trained with")
    chose_on = saved.get("val")
    if part == "val" and chose_on is not None and sorted(chose_on) != sorted(cases):
        example = (sorted(set(chose_on) ^ set(cases)) or ["a case listed twice"])[0]
        raise ValueError(f"{path} chose its model on other validation cases than the {len(cases)} to score (e.g. "
                         f"{example}); score them with the data root and splits it was trained with")


def cases_to_score(ckpt: dict, path: str, root: str, fold: str, part: str) -> list[Case]:
    """The ``part`` ("val" or "test") volumes of ``fold`` of ``root`` as the checkpoint ``ckpt``
    (read from ``path``) split them (its own ``--val_fraction`` and ``--select_on_test``), checked
    for scoring (:func:`inference.reference_volumes`). ValueError when there are none, when the
    run trained or chose its model on them (:func:`check_unseen`; by their images too: a training
    scan under another case name, or a root whose names hold other scans), or when it predicts
    other classes than the root has (:func:`check_predicts`), or resamples to a target spacing
    that volumes without a spacing cannot give."""
    from methods import get_method

    saved = with_defaults(ckpt["config"], get_method(ckpt["method"]))  # the checkpoint names its method
    names = split_part(root, fold, part, saved["val_fraction"], saved["select_on_test"])
    if not ckpt.get("split"):  # saved before checkpoints recorded it: the split its flags give this root
        try:
            split = make_split(root, saved["fold"], saved["val_fraction"], saved["select_on_test"])
        except ValueError as e:
            raise ValueError(f"{path} was saved before checkpoints recorded their split, and its --fold "
                             f"{saved['fold']} cannot be rebuilt on {root} to check the cases to score ({e})") from None
        ckpt = {**ckpt, "split": vars(split)}
    check_unseen(ckpt, names, path, part)
    check_predicts(path, ckpt, root)
    cases = reference_volumes(root, names, saved["num_classes"], saved["target_spacing"])
    leaked = trained_on_image(cases, ckpt.get("train_images") or ())
    if leaked:
        raise ValueError(f"{path} trained on the image of slice {leaked[1]} of {io.volume_path(root, leaked[0])} "
                         "(a training scan under another case name, or another data root's cases under these "
                         "names); score cases it did not train on")
    return cases


class Checkpointer:
    """Writes a run's ``last.pth`` / ``best.pth``. In a data-parallel job every rank calls
    :meth:`save` at the same iterations (it gathers every rank's RNG state and checks that the
    ranks' weights agree), and rank 0 alone writes, into ``folder``."""

    def __init__(self, folder: RunFolder, cfg, method, optimizers: dict, schedulers: dict, state: TrainState,
                 split: Split, dist: Distributed, train_images: list[str]):
        self.folder, self.cfg, self.method, self.split, self.dist = folder, cfg, method, split, dist
        self.train_images = train_images
        self.optimizers, self.schedulers, self.state = optimizers, schedulers, state
        self._finite_at = -1  # the iteration last checked: logging and saving share one check

    def check_finite(self, finite: torch.Tensor, logs: dict) -> None:
        """FloatingPointError unless every loss of every rank was finite so far."""
        if self._finite_at == self.state.iteration:
            return
        if not self.dist.all(finite):
            raise FloatingPointError(f"a non-finite loss at or before iteration {self.state.iteration} "
                                     f"(last losses {({k: float(v) for k, v in logs.items()})}); "
                                     "nothing was saved after it")
        self._finite_at = self.state.iteration

    def save(self, names: list[str], best: dict, finite: torch.Tensor, logs: dict) -> None:
        self.check_finite(finite, logs)
        self.dist.check_identical(self.method)
        # The parameters are equal (checked); batch-norm statistics differ between ranks.
        self.dist.broadcast(self.method.buffers())
        rngs = self.dist.gather(rng_state())
        if self.dist.is_main:
            for name in names:
                save_checkpoint(self.folder.file(name), self.cfg, self.method, self.optimizers, self.schedulers,
                                self.state, best, self.split, rngs, self.train_images)


def restore(ckpt: dict, method, optimizers: dict, schedulers: dict, state: TrainState) -> dict:
    """Load a resumed run's weights, optimizer, scheduler and scaler states and iteration from
    ``ckpt`` into place; returns its best validation record."""
    method.load_state_dict(ckpt["model"])
    for k, o in optimizers.items():
        o.load_state_dict(ckpt["optimizers"][k])
    for k, s in schedulers.items():
        s.load_state_dict(ckpt["schedulers"][k])
    state.scaler.load_state_dict(ckpt["scaler"])
    state.iteration = ckpt["iteration"]
    return ckpt["best"]
