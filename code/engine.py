"""The one training engine that every method runs on.

The engine owns everything methods share: seeding, data, optimisers and the poly learning-rate
schedule, mixed precision, validation on the model-selection split, checkpoints (best and last,
resumable exactly), tensorboardX scalars and images, a tqdm bar and ``log.txt``. A method (see
:mod:`methods.base`) owns its networks and its training step, nothing else.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time

import numpy as np
import torch
from tensorboardX import SummaryWriter
from torch.optim.lr_scheduler import PolynomialLR
from torch.utils.data import DataLoader
from tqdm import tqdm

from config import DEFAULTS, save_config
from dataloaders import io
from dataloaders.acdc import (SliceDataset, TrainBatchSampler, VolumeSet, dense_training_cases, fold_split,
                              labeled_patients)
from inference import autocast, evaluate


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainState:
    """What a method's training step may use: the iteration, the optimisers and precision.

    Attributes:
        iteration: 0-based index of the current step; ``max_iterations`` the run's length.
        optimizers: name -> optimiser, as returned by ``Method.configure_optimizers``.
    """

    def __init__(self, cfg, device: torch.device, optimizers: dict):
        self.cfg, self.device, self.optimizers = cfg, device, optimizers
        self.iteration, self.max_iterations = 0, cfg.max_iterations
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    def autocast(self):
        return autocast(self.device, self.cfg.amp)

    def optimize(self, loss: torch.Tensor, *names: str) -> None:
        """Zero the gradients of the named optimisers, back-propagate ``loss``, and step them."""
        opts = [self.optimizers[n] for n in names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in opts:
            self.scaler.step(opt)
        self.scaler.update()

    @property
    def progress(self) -> float:
        """Fraction of the run done, in [0, 1]."""
        return self.iteration / max(1, self.max_iterations)


def _logger(out_dir: str) -> logging.Logger:
    log = logging.getLogger(f"maskmixadv.{out_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        fh = logging.FileHandler(os.path.join(out_dir, "log.txt"))
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(fh)
    return log


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


def save_checkpoint(path: str, cfg, method, optimizers, schedulers, state: TrainState, best: dict) -> None:
    """Everything needed to resume exactly, written atomically (a crash never leaves half a file)."""
    ckpt = {
        "config": vars(cfg),
        "method": cfg.method,
        "model": method.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "scaler": state.scaler.state_dict(),
        "iteration": state.iteration,
        "best": best,
        "rng": rng_state(),
    }
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_method(path: str, device: torch.device):
    """Rebuild the method a checkpoint names, with its weights, in eval mode: (method, config)."""
    from methods import get_method

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    cfg = argparse.Namespace(**ckpt["config"])
    method = get_method(ckpt["method"])(cfg)
    method.load_state_dict(ckpt["model"])
    return method.to(device).eval(), cfg


# Settings that may change when a run is resumed; any other change would silently alter the run
# (e.g. a longer --max_iterations would keep the finished poly schedule at lr 0).
RESUME_MAY_CHANGE = {"resume", "device", "num_workers", "progress", "val_interval", "out_dir", "amp",
                     "channels_last", "root_path", "exp"}


def check_resumable(saved: dict, cfg) -> None:
    """Raise ValueError naming the first flag whose value differs from the saved run's."""
    for key, value in sorted(vars(cfg).items()):
        # A flag newer than the saved run counts as given at its default.
        if key not in RESUME_MAY_CHANGE and saved.get(key, DEFAULTS.get(key)) != value:
            raise ValueError(f"--resume: --{key} is {value!r} but the run was started with "
                             f"{saved.get(key)!r}; use the same value or another --exp")


def _to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def train(cfg: argparse.Namespace, method_cls) -> dict:
    """Train ``method_cls`` as ``cfg`` says; returns the best validation summary.

    Writes to ``cfg.out_dir``: ``config.json``, ``log.txt``, ``best.pth``, ``last.pth``,
    tensorboard events under ``tb/``. An existing run there is never overwritten: pass
    ``--resume`` to continue it, or choose another ``--exp`` / ``--out_dir``.
    """
    last_path = os.path.join(cfg.out_dir, "last.pth")
    if os.path.exists(last_path) and not cfg.resume:
        raise FileExistsError(f"{cfg.out_dir} already holds a run; pass --resume or another --exp")
    if cfg.resume and not os.path.exists(last_path):
        raise FileNotFoundError(f"--resume: {last_path} does not exist")
    if cfg.resume:
        # On the CPU: the RNG states must stay CPU tensors; load_state_dict moves the rest.
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        check_resumable(ckpt["config"], cfg)
    split = fold_split(io.list_cases(cfg.root_path), cfg.fold, cfg.val_fraction, cfg.select_on_test)
    train_cases, dense_cases = dense_training_cases(split.train, cfg.sup_type, cfg.labeled_patients, cfg.seed)
    cfg.labeled_patient_ids = labeled_patients(split.train, cfg.labeled_patients, cfg.seed)
    os.makedirs(cfg.out_dir, exist_ok=True)
    log = _logger(cfg.out_dir)
    save_config(cfg, os.path.join(cfg.out_dir, "config.json"))
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)

    log.info("command: %s", " ".join(sys.argv))
    log.info("split %s: %d train, %d validation, %d test volumes%s", cfg.fold, len(train_cases),
             len(split.val), len(split.test), " (selecting on the TEST fold)" if cfg.select_on_test else "")
    if cfg.labeled_patients:
        log.info("dense masks for %d training patients (--labeled_patients): %s", cfg.labeled_patients,
                 " ".join(cfg.labeled_patient_ids))
    train_set = SliceDataset(cfg.root_path, train_cases, cfg.sup_type, cfg.patch_size, progress=cfg.progress,
                             dense_cases=dense_cases)
    val_set = list(VolumeSet(cfg.root_path, split.val))

    method = method_cls(cfg)
    method.prepare(train_set, log)
    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizers = method.configure_optimizers()
    schedulers = {k: PolynomialLR(o, total_iters=cfg.max_iterations, power=cfg.poly_power)
                  for k, o in optimizers.items()}
    state = TrainState(cfg, device, optimizers)
    best = {"iteration": -1, "dice": -math.inf}
    if cfg.resume:
        method.load_state_dict(ckpt["model"])
        for k, o in optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        for k, s in schedulers.items():
            s.load_state_dict(ckpt["schedulers"][k])
        state.scaler.load_state_dict(ckpt["scaler"])
        state.iteration, best = ckpt["iteration"], ckpt["best"]

    loader = DataLoader(train_set, batch_sampler=TrainBatchSampler(len(train_set), cfg.batch_size, cfg.seed,
                                                                   state.iteration),
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    batches = iter(loader)
    if cfg.resume:
        # Restored only now: creating the loader's iterator draws from the global RNG.
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at iteration %d", last_path, state.iteration)
    writer = SummaryWriter(os.path.join(cfg.out_dir, "tb"))
    log.info("training %s on %s (amp %s) for %d iterations from %d", cfg.method, device, cfg.amp,
             cfg.max_iterations, state.iteration)
    # Redirected to a file, a bar redraws ~10 times a second: slow it to keep logs readable.
    bar = tqdm(total=cfg.max_iterations, initial=state.iteration, disable=not cfg.progress, desc=cfg.method,
               mininterval=0.1 if sys.stderr.isatty() else 30)
    start = time.time()
    method.train()
    while state.iteration < cfg.max_iterations:
        batch = _to(next(batches), device, cfg.channels_last)
        logs = method.training_step(batch, state)
        for s in schedulers.values():
            s.step()
        state.iteration += 1
        bar.update()
        if state.iteration % 10 == 0 or state.iteration == cfg.max_iterations:
            logs = {k: float(v) for k, v in logs.items()}
            if not all(math.isfinite(v) for v in logs.values()):
                raise FloatingPointError(f"iteration {state.iteration}: non-finite loss {logs}")
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
            for k, v in logs.items():
                writer.add_scalar(f"train/{k}", v, state.iteration)
            writer.add_scalar("train/lr", next(iter(optimizers.values())).param_groups[0]["lr"], state.iteration)
        if state.iteration % cfg.val_interval == 0 or state.iteration == cfg.max_iterations:
            summary = validate(cfg, method, val_set, device, batch, writer, state.iteration)
            log.info("iteration %d: %s | val dice %.4f hd95 %.2f (%.0f s)", state.iteration,
                     " ".join(f"{k} {float(v):.4f}" for k, v in logs.items()),
                     summary["dice"]["mean"], summary["hd95"]["mean"], time.time() - start)
            if summary["dice"]["mean"] > best["dice"]:
                best = {"iteration": state.iteration, "dice": summary["dice"]["mean"],
                        "hd95": summary["hd95"]["mean"]}
                save_checkpoint(os.path.join(cfg.out_dir, "best.pth"), cfg, method, optimizers,
                                schedulers, state, best)
            save_checkpoint(last_path, cfg, method, optimizers, schedulers, state, best)
            method.train()
    bar.close()
    writer.close()
    log.info("done in %.0f s; best validation dice %.4f at iteration %d", time.time() - start,
             best["dice"], best["iteration"])
    with open(os.path.join(cfg.out_dir, "best.json"), "w") as f:
        json.dump(best, f, indent=2)
    return best


def validate(cfg, method, val_set, device, batch, writer, iteration) -> dict:
    """Score the method's segmenter on the validation volumes and log scalars and an image grid."""
    model = method.segmenter()
    _, summary = evaluate(model, val_set, cfg.patch_size, device, cfg.amp, cfg.channels_last)
    for metric in ("dice", "hd95", "asd"):
        for k, v in summary[metric].items():
            writer.add_scalar(f"val/{metric}_{k}", v, iteration)
    model.eval()
    with torch.no_grad(), autocast(device, cfg.amp):
        pred = model(batch["image"][:4]).float().argmax(1, keepdim=True)
    target = batch["target"][:4, None].float()
    scale = cfg.num_classes  # maps classes (and the unlabeled value 4) into [0, 1]
    writer.add_images("train/image_prediction_target",
                      torch.cat([batch["image"][:4].float(), pred / scale, target / scale]).cpu(),
                      iteration)
    return summary
