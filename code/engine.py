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

from config import build_parser, finalize, input_size, save_config
from dataloaders.acdc import (SliceDataset, Split, TrainBatchSampler, VolumeSet, dense_training_cases,
                              labeled_patients, make_split)
from inference import autocast, evaluate
from run_folder import Interrupted, RunFolder, StopSignals


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

    def optimize(self, loss: torch.Tensor, *names: str, retain_graph: bool = False) -> None:
        """Zero the gradients of the named optimisers, back-propagate ``loss`` into their
        parameters only (no gradient is computed for other networks, e.g. a discriminator that
        only passes the gradient on), and step them. ``retain_graph`` keeps the graph for a
        second backward through a shared part (e.g. the discriminator's scores of the fakes)."""
        opts = [self.optimizers[n] for n in names]
        params = [p for opt in opts for group in opt.param_groups for p in group["params"]]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(inputs=params, retain_graph=retain_graph)
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


def save_checkpoint(path: str, cfg, method, optimizers, schedulers, state: TrainState, best: dict,
                    split: Split | None = None) -> None:
    """Everything needed to resume exactly (and the split's case lists, so that a resume on other
    data is refused), written atomically and durably: a uniquely named temporary file, fsync'ed,
    renamed, and the folder fsync'ed, so a crash or power cut never leaves half a file.
    A model with a non-finite weight is never written (FloatingPointError naming the tensor)."""
    for name, t in method.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise FloatingPointError(f"iteration {state.iteration}: {name} holds NaN or inf; "
                                     f"not writing {path}")
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
        "split": None if split is None else vars(split),
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


CHECKPOINT_KEYS = ("config", "method", "model", "iteration")


def read_checkpoint(path: str, device="cpu") -> dict:
    """A checkpoint written by :func:`save_checkpoint`; FileNotFoundError, OSError (unreadable,
    truncated) or ValueError (not this project's, e.g. a bare state_dict) naming ``path``."""
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
    return ckpt


def load_method(path: str, device: torch.device):
    """Rebuild the method a checkpoint names, with its weights, in eval mode: (method, config)."""
    from methods import get_method

    ckpt = read_checkpoint(path, device)
    cfg = argparse.Namespace(**ckpt["config"])
    cfg.input_size = input_size(cfg)
    method = get_method(ckpt["method"])(cfg)
    method.load_state_dict(ckpt["model"])
    return method.to(device).eval(), cfg


# Settings that may change when a run is resumed; any other change would silently alter the run
# (e.g. a longer --max_iterations would keep the finished poly schedule at lr 0).
RESUME_MAY_CHANGE = {"resume", "overwrite", "save_every", "postprocess", "device", "num_workers", "progress",
                     "val_interval", "out_dir", "amp", "channels_last", "root_path", "exp"}


def check_resumable(saved: dict, cfg, method_cls) -> None:
    """Raise ValueError naming the first flag whose value differs from the saved run's. A flag
    that did not exist when the run was saved takes its default (so new flags never make old
    runs un-resumable)."""
    defaults = vars(finalize(build_parser(method_cls).parse_args([]), method_cls))
    saved = {**defaults, "input_size": None, **saved}
    saved["input_size"] = input_size(argparse.Namespace(**saved))
    for key, value in sorted(vars(cfg).items()):
        if key not in RESUME_MAY_CHANGE and saved.get(key) != value:
            raise ValueError(f"--resume: --{key} is {value!r} but the run was started with "
                             f"{saved.get(key)!r}; use the same value or another --exp")


def check_same_split(saved: dict | None, split: Split, path: str) -> None:
    """ValueError when the data now gives another split than the saved run trained on."""
    if saved is None:
        return
    for part, cases in vars(split).items():
        if saved.get(part) != cases:
            changed = sorted(set(saved.get(part) or []) ^ set(cases))
            raise ValueError(f"--resume: the {part} cases differ from those {path} was trained on "
                             f"(e.g. {changed[0] if changed else 'their order'}); use the same --root_path")


def _to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def train(cfg: argparse.Namespace, method_cls) -> dict:
    """Train ``method_cls`` as ``cfg`` says; returns the best validation summary.

    Writes to ``cfg.out_dir``: ``config.json``, ``log.txt``, ``best.pth``, ``last.pth``,
    tensorboard events under ``tb/``, while holding the folder's lock (:class:`RunFolder`). An
    existing run there is never overwritten unless ``--overwrite``: pass ``--resume`` to continue
    it, or choose another ``--exp`` / ``--out_dir``. On SIGTERM or SIGINT it saves ``last.pth``
    and raises :class:`run_folder.Interrupted`.
    """
    folder = RunFolder(cfg.out_dir, cfg.resume, cfg.overwrite)
    folder.check()
    # Everything that can be checked is checked before the folder is created or touched.
    # On the CPU: the RNG states must stay CPU tensors; load_state_dict moves the rest.
    ckpt = read_checkpoint(folder.file("last.pth")) if cfg.resume else None
    if ckpt is not None:
        check_resumable(ckpt["config"], cfg, method_cls)
    device = resolve_device(cfg.device)
    split = make_split(cfg.root_path, cfg.fold, cfg.val_fraction, cfg.select_on_test)
    if ckpt is not None:
        check_same_split(ckpt.get("split"), split, folder.file("last.pth"))
    training = dense_training_cases(split.train, cfg.sup_type, cfg.labeled_patients, cfg.seed)
    cfg.labeled_patient_ids = labeled_patients(split.train, cfg.labeled_patients, cfg.seed)
    with folder, StopSignals() as stop:
        return _train(cfg, method_cls, folder, ckpt, device, split, stop, training)



def _train(cfg, method_cls, folder: RunFolder, ckpt: dict | None, device: torch.device, split: Split,
           stop: StopSignals, training: tuple[list[str], list[str]]) -> dict:
    """The training proper, in a checked and locked run folder; ``training`` = (the cases that
    train, those of them that use their dense masks)."""
    train_cases, dense_cases = training
    last_path = folder.file("last.pth")
    log = _logger(cfg.out_dir)
    save_config(cfg, folder.file("config.json"))
    seed_everything(cfg.seed)
    log.info("command: %s", " ".join(sys.argv))
    log.info("split %s: %d train, %d validation, %d test volumes%s", cfg.fold, len(train_cases),
             len(split.val), len(split.test), " (selecting on the TEST fold)" if cfg.select_on_test else "")
    if cfg.labeled_patients:
        log.info("dense masks for %d training patients (--labeled_patients): %s", cfg.labeled_patients,
                 " ".join(cfg.labeled_patient_ids))
    train_set = SliceDataset(cfg.root_path, train_cases, cfg.sup_type, cfg.patch_size, progress=cfg.progress,
                             input_size=cfg.input_size, fg_prob=cfg.fg_prob,
                             target_spacing=cfg.target_spacing, dense_cases=dense_cases)
    val_set = list(VolumeSet(cfg.root_path, split.val))
    if not val_set:
        log.info("no validation split (--val_fraction 0, or no 'val' in splits.json): no model "
                 "selection, the last model is kept (best.pth = last.pth)")

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
    # Every iteration's losses are checked on the device (no host sync); the flag is read before
    # anything is logged or saved, so a model trained through a NaN is never written.
    finite = torch.ones((), dtype=torch.bool, device=device)

    def save(name: str) -> None:
        if not bool(finite):
            raise FloatingPointError(f"a non-finite loss at or before iteration {state.iteration} "
                                     f"(last losses {({k: float(v) for k, v in logs.items()})}); "
                                     "nothing was saved after it")
        save_checkpoint(folder.file(name), cfg, method, optimizers, schedulers, state, best, split)

    while state.iteration < cfg.max_iterations:
        batch = _to(next(batches), device, cfg.channels_last)
        logs = method.training_step(batch, state)
        finite &= torch.stack([torch.as_tensor(v, device=device).float().reshape(())
                               for v in logs.values()]).isfinite().all()
        for s in schedulers.values():
            s.step()
        state.iteration += 1
        bar.update()
        validating = state.iteration % cfg.val_interval == 0 or state.iteration == cfg.max_iterations
        if state.iteration % 10 == 0 or validating:
            if not bool(finite):
                save("last.pth")  # raises FloatingPointError: nothing is written
            logs = {k: float(v) for k, v in logs.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
            for k, v in logs.items():
                writer.add_scalar(f"train/{k}", v, state.iteration)
            writer.add_scalar("train/lr", next(iter(optimizers.values())).param_groups[0]["lr"], state.iteration)
        if validating:
            losses = " ".join(f"{k} {float(v):.4f}" for k, v in logs.items())
            if val_set:
                summary = validate(cfg, method, val_set, device, batch, writer, state.iteration)
                log.info("iteration %d: %s | val dice %.4f hd95 %.2f (%.0f s)", state.iteration, losses,
                         summary["dice"]["mean"], summary["hd95"]["mean"], time.time() - start)
                tqdm.write(f"{cfg.method} iteration {state.iteration}/{cfg.max_iterations}: validation Dice "
                           f"{summary['dice']['mean']:.4f} HD95 {summary['hd95']['mean']:.2f} "
                           f"(best {max(best['dice'], summary['dice']['mean']):.4f})")
                improved = summary["dice"]["mean"] > best["dice"]
                if improved:
                    best = {"iteration": state.iteration, "dice": summary["dice"]["mean"],
                            "hd95": summary["hd95"]["mean"]}
            else:
                log.info("iteration %d: %s | no validation: keeping the last model (%.0f s)",
                         state.iteration, losses, time.time() - start)
                best = {"iteration": state.iteration, "dice": None, "hd95": None,
                        "selection": "last model (no validation split)"}
                improved = True
            if improved:
                save("best.pth")
            save("last.pth")
            method.train()
        elif state.iteration % cfg.save_every == 0:
            save("last.pth")
        if stop.received:
            if not validating and state.iteration % cfg.save_every:
                save("last.pth")
            log.info("%s at iteration %d: saved %s", stop.received, state.iteration, last_path)
            raise Interrupted(f"{stop.received} at iteration {state.iteration}: saved {last_path}; "
                              "continue with the same command and --resume")
    bar.close()
    writer.close()
    if val_set:
        log.info("done in %.0f s; best validation dice %.4f at iteration %d", time.time() - start,
                 best["dice"], best["iteration"])
    else:
        log.info("done in %.0f s; no validation: best.pth is the last model (iteration %d)",
                 time.time() - start, best["iteration"])
    with open(folder.file("best.json"), "w") as f:
        json.dump(best, f, indent=2)
    return best


def validate(cfg, method, val_set, device, batch, writer, iteration) -> dict:
    """Score the method's segmenter on the validation volumes and log scalars and an image grid."""
    model = method.segmenter()
    _, summary = evaluate(model, val_set, cfg.input_size, device, cfg.amp, cfg.channels_last,
                          cfg.postprocess, getattr(cfg, "target_spacing", None))
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
