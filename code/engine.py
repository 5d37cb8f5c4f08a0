"""The one training engine that every method runs on.

The engine owns everything methods share: seeding, data, optimisers and the poly learning-rate
schedule, mixed precision, validation on the model-selection split, saving best and last
checkpoints (resumable exactly; what they hold: :mod:`checkpoint`; what a resume checks:
:mod:`resume`), tensorboardX scalars and images, a tqdm bar and ``log.txt``. A method (see
:mod:`methods.base`) owns its networks and its training step, nothing else.
"""
from __future__ import annotations

import argparse
import contextlib
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

from checkpoint import Checkpointer, check_predicts, read_checkpoint, restore, set_rng_state
from config import save_config
from dataloaders import io
from dataloaders.acdc import (SliceDataset, Split, TrainBatchSampler, dense_training_cases,
                              labeled_patients, make_split, trained_on_image, volumes_digest)
from distributed import Distributed
from host_memory import keep_freed_memory
import inference
import metrics
from inference import Prediction, autocast, evaluate, resolve_amp, resolve_device
from resume import check_resumable, check_same_data, check_same_split, check_same_world, finished, record_resume
from run_folder import Interrupted, RunFolder, StopSignals


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainState:
    """What a method's training step may use: the iteration, the optimisers and precision.

    Attributes:
        iteration: 0-based index of the current step; ``max_iterations`` the run's length.
        optimizers: name -> optimiser, as returned by ``Method.configure_optimizers``.
        dist: the data-parallel job (a single process by default); gradients are averaged over
            its ranks before every optimiser step.
    """

    def __init__(self, cfg, device: torch.device, optimizers: dict, dist: Distributed | None = None):
        self.cfg, self.device, self.optimizers = cfg, device, optimizers
        self.dist = dist or Distributed()
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
        self.dist.average_gradients(params)
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
    # A fresh handler per run: an earlier run in this process (same folder) may have left one
    # open on a log.txt that --overwrite has since moved away.
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fh = logging.FileHandler(os.path.join(out_dir, "log.txt"))
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(fh)
    return log


def check_classes(cfg) -> None:
    """ValueError unless ``--num_classes`` is the data root's background + foreground classes."""
    names = io.class_names(cfg.root_path)
    if cfg.num_classes != len(names) + 1:
        raise ValueError(f"--num_classes {cfg.num_classes}: {cfg.root_path} has {len(names) + 1} classes "
                         f"(background, {', '.join(names)})")


class _NoWriter:
    """Stands in for the tensorboard writer on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    add_images = add_scalar
    close = add_scalar


def _to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def load_data(cfg, split: Split, saved: dict | None, path: str) -> tuple[SliceDataset, list]:
    """The run's training slices and validation volumes, checked: the dense patients and, on a
    resume (``saved``: the config of the run saved at ``path``), the same as before; no validation
    volume holding a training slice's image. Records in ``cfg`` the dense patients and digests of
    both (:func:`resume.check_same_data`). Every rank loads and checks the same data, so that all of
    them fail together before the process group starts."""
    pattern = io.patient_pattern(cfg.root_path)
    training = dense_training_cases(split.train, cfg.sup_type, cfg.labeled_patients, cfg.seed, pattern)
    cfg.labeled_patient_ids = labeled_patients(split.train, cfg.labeled_patients, cfg.seed, pattern)
    saved_ids = (saved or {}).get("labeled_patient_ids", cfg.labeled_patient_ids)
    if saved_ids != cfg.labeled_patient_ids:
        raise ValueError(f"--resume: the dense patients {' '.join(cfg.labeled_patient_ids)} differ from those "
                         f"{path} was trained with ({' '.join(saved_ids)}); was the data root's patient_pattern "
                         "changed?")
    train_set = SliceDataset(cfg.root_path, training[0], cfg.sup_type, cfg.patch_size, progress=cfg.progress,
                             input_size=cfg.input_size, fg_prob=cfg.fg_prob,
                             scale=cfg.aug_scale, intensity=cfg.aug_intensity,
                             target_spacing=cfg.target_spacing, dense_cases=training[1],
                             keep_points=cfg.point_resize != "nearest")
    cfg.train_data_sha256 = train_set.digest()
    val_set = inference.reference_volumes(cfg.root_path, split.val, cfg.num_classes, cfg.target_spacing)
    leaked = trained_on_image(val_set, train_set.image_fingerprints)
    if leaked:
        raise ValueError(f"{io.volume_path(cfg.root_path, leaked[0])}: slice {leaked[1]} holds the image of a training "
                         "slice, so the model would be chosen on data it trains on (one scan under two case names?)")
    cfg.val_data_sha256 = volumes_digest(val_set)
    return train_set, val_set


def train(cfg: argparse.Namespace, method_cls) -> dict:
    """Train ``method_cls`` as ``cfg`` says; returns the best validation summary.

    Writes to ``cfg.out_dir``: ``config.json``, ``log.txt``, ``best.pth``, ``last.pth``,
    tensorboard events under ``tb/``, while holding the folder's lock (:class:`RunFolder`). An
    existing run there is never overwritten unless ``--overwrite``: pass ``--resume`` to continue
    it, or choose another ``--exp`` / ``--out_dir``. On SIGTERM or SIGINT it saves ``last.pth``
    and raises :class:`run_folder.Interrupted`. Under ``torchrun`` it trains data-parallel
    (:mod:`distributed`); rank 0 alone writes the folder.
    """
    dist = Distributed.from_env()
    folder = RunFolder(cfg.out_dir, cfg.resume, cfg.overwrite)
    folder.check()
    # Everything that can be checked is checked before the folder is created or touched.
    # On the CPU: the RNG states must stay CPU tensors; load_state_dict moves the rest.
    ckpt = read_checkpoint(folder.file("last.pth")) if cfg.resume else None
    device = resolve_device(cfg.device)
    cfg.amp = resolve_amp(cfg.amp, device)  # config.json records the precision the run trained in
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the activations each step frees and allocates again
    if ckpt is not None:
        check_resumable(ckpt["config"], cfg, method_cls)
        check_same_world(ckpt, dist, folder.file("last.pth"))
        check_predicts(folder.file("last.pth"), ckpt, cfg.root_path)  # --root_path may change on --resume
    check_classes(cfg)
    split = make_split(cfg.root_path, cfg.fold, cfg.val_fraction, cfg.select_on_test)
    if ckpt is not None:
        check_same_split(ckpt.get("split"), split, folder.file("last.pth"))
    train_set, val_set = load_data(cfg, split, ckpt and ckpt["config"], folder.file("last.pth"))
    val_set = val_set if dist.is_main else []  # rank 0 validates
    if ckpt is not None and finished(ckpt, cfg, folder.file("last.pth"), dist):
        check_same_data(ckpt["config"], cfg, folder.file("last.pth"))  # a re-test needs no method
        return ckpt["best"]
    # Each rank draws its own masks and noise; the weights start equal (broadcast in _train).
    seed_everything(cfg.seed + dist.rank)
    method = method_cls(cfg)
    notes = method.prepare(train_set)  # what it reads (e.g. a shape prior) is checked below too
    if ckpt is not None:
        check_same_data(ckpt["config"], cfg, folder.file("last.pth"))
        record_resume(ckpt["config"], cfg, ckpt["iteration"])
    device = dist.start(device)
    try:
        with folder if dist.is_main else contextlib.nullcontext(), StopSignals() as stop:
            best = _train(cfg, method, notes, folder, ckpt, device, split, stop, train_set, val_set, dist)
        dist.barrier()  # rank 0 writes best.json last; the others wait before leaving the group
        return best
    finally:
        dist.stop()


def _train(cfg, method, notes: list[str], folder: RunFolder, ckpt: dict | None, device: torch.device,
           split: Split, stop: StopSignals, train_set: SliceDataset, val_set: list, dist: Distributed) -> dict:
    """The training proper of the prepared ``method`` (``notes``: what its preparation logs), in
    a checked and locked run folder, on ``train_set``, validating on ``val_set`` (rank 0; empty
    elsewhere)."""
    last_path = folder.file("last.pth")
    log = _run_logger(cfg, folder, dist)
    _log_setup(log, cfg, train_set, split, dist)
    if dist.is_main and not val_set:
        log.info("no validation split (--val_fraction 0, or no 'val' in splits.json): no model "
                 "selection, the last model is kept (best.pth = last.pth)")
    for note in notes:
        log.info("%s", note)
    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizers = method.configure_optimizers()
    schedulers = {k: PolynomialLR(o, total_iters=cfg.max_iterations, power=cfg.poly_power)
                  for k, o in optimizers.items()}
    state = TrainState(cfg, device, optimizers, dist)
    best = restore(ckpt, method, optimizers, schedulers, state) if cfg.resume else \
        {"iteration": -1, "dice": -math.inf}
    dist.broadcast(method.state_dict().values())  # the ranks were seeded apart
    checkpointer = Checkpointer(folder, cfg, method, optimizers, schedulers, state, split, dist,
                                train_set.image_fingerprints)

    batches = _batches(cfg, train_set, state, device, dist)
    if cfg.resume:
        # Restored only now: creating the loader's iterator draws from the global RNG.
        set_rng_state(ckpt["rng_ranks"][dist.rank] if dist.enabled else ckpt["rng"])
        log.info("resumed from %s at iteration %d; changed: %s", last_path, state.iteration,
                 ", ".join(f"--{k} {a!r} -> {b!r}" for k, (a, b) in cfg.resumes[-1]["changed"].items()) or "nothing")
    writer = SummaryWriter(os.path.join(cfg.out_dir, "tb")) if dist.is_main else _NoWriter()
    log.info("training %s on %s (amp %s) for %d iterations from %d", cfg.method, device, cfg.amp,
             cfg.max_iterations, state.iteration)
    if cfg.amp == "bf16" and not inference.native_bf16(device):
        _warn(log, dist, f"bf16 is emulated on this {device.type.upper()} and far slower than fp32 (16x per "
                         "step on an AVX2 CPU); --amp auto trains in fp32 here")
    # Redirected to a file, a bar redraws ~10 times a second: slow it to keep logs readable.
    bar = tqdm(total=cfg.max_iterations, initial=state.iteration, disable=not (cfg.progress and dist.is_main), desc=cfg.method,
               mininterval=0.1 if sys.stderr.isatty() else 30)
    folder.started = True
    start = time.time()
    method.train()
    # Every iteration's losses are checked on the device (no host sync); the flag is read before
    # anything is logged or saved, so a model trained through a NaN is never written.
    finite = torch.ones((), dtype=torch.bool, device=device)
    while state.iteration < cfg.max_iterations:
        batch = _to(next(batches), device, cfg.channels_last)
        logs = method.training_step(batch, state)
        method.update_average(state.iteration + 1)
        finite &= torch.stack([torch.as_tensor(v, device=device).float().reshape(())
                               for v in logs.values()]).isfinite().all()
        for s in schedulers.values():
            s.step()
        state.iteration += 1
        bar.update()
        validating = state.iteration % cfg.val_interval == 0 or state.iteration == cfg.max_iterations
        stopping = dist.any(stop.received is not None)  # all ranks stop at the same iteration
        if state.iteration % 10 == 0 or validating:
            checkpointer.check_finite(finite, logs)
            logs = _log_scalars(logs, writer, bar, optimizers, state.iteration)
        names = []
        if validating:
            improved = False
            if dist.is_main:
                best, improved = validation_point(cfg, method, val_set, device, batch, writer, state.iteration,
                                                  logs, best, log, time.time() - start)
                method.train()
            names = ["best.pth", "last.pth"] if improved else ["last.pth"]
        elif state.iteration % cfg.save_every == 0 or stopping:
            names = ["last.pth"]
        if names:
            checkpointer.save(names, best, finite, logs)
        if stopping:
            received = stop.received or "a stop signal on another rank"
            log.info("%s at iteration %d: saved %s", received, state.iteration, last_path)
            raise Interrupted(f"{received} at iteration {state.iteration}: saved {last_path}; "
                              "continue with the same command and --resume")
    bar.close()
    writer.close()
    _finish(log, folder, best, bool(val_set), time.time() - start, dist)
    return best


def _batches(cfg, train_set: SliceDataset, state: TrainState, device: torch.device, dist: Distributed):
    """The endless iterator of this rank's training batches from ``state.iteration`` on
    (:class:`TrainBatchSampler`: a pure function of seed and iteration)."""
    sampler = TrainBatchSampler(len(train_set), cfg.batch_size, cfg.seed, state.iteration, dist.rank, dist.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    return iter(loader)


def _log_scalars(logs: dict, writer, bar, optimizers: dict, iteration: int) -> dict[str, float]:
    """The step's ``logs`` as floats (one host sync), shown on the progress ``bar`` and written to
    tensorboard with the learning rate."""
    logs = {k: float(v) for k, v in logs.items()}
    bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
    for k, v in logs.items():
        writer.add_scalar(f"train/{k}", v, iteration)
    writer.add_scalar("train/lr", next(iter(optimizers.values())).param_groups[0]["lr"], iteration)
    return logs


def _finish(log: logging.Logger, folder: RunFolder, best: dict, validated: bool, seconds: float,
            dist: Distributed) -> None:
    """Log the end of training and write ``best.json`` (rank 0)."""
    if validated:
        log.info("done in %.0f s; best validation dice %.4f at iteration %d", seconds, best["dice"], best["iteration"])
    else:
        log.info("done in %.0f s; no validation: best.pth is the last model (iteration %d)", seconds, best["iteration"])
    if dist.is_main:
        with open(folder.file("best.json"), "w") as f:
            json.dump(best, f, indent=2)


def _run_logger(cfg, folder: RunFolder, dist: Distributed) -> logging.Logger:
    """Rank 0's logger (console and ``log.txt``), which also writes ``config.json``; a silent one
    on the other ranks."""
    if dist.is_main:
        log = _logger(cfg.out_dir)
        save_config(cfg, folder.file("config.json"))
        return log
    log = logging.getLogger(f"maskmixadv.rank{dist.rank}")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def _log_setup(log: logging.Logger, cfg, train_set: SliceDataset, split: Split, dist: Distributed) -> None:
    """The command, the split, the dense patients, the data-parallel layout and the supervision."""
    log.info("command: %s", " ".join(sys.argv))
    log.info("split %s: %d train, %d validation, %d test volumes%s", cfg.fold, len(train_set.cases),
             len(split.val), len(split.test), " (selecting on the TEST fold)" if cfg.select_on_test else "")
    if cfg.labeled_patients:
        log.info("dense masks for %d training patients (--labeled_patients): %s", cfg.labeled_patients,
                 " ".join(cfg.labeled_patient_ids))
    if dist.enabled:
        log.info("data-parallel: %d processes of batch %d, effective batch %d", dist.world_size,
                 cfg.batch_size, dist.world_size * cfg.batch_size)
    if dist.is_main:  # only rank 0 logs; the others need not count
        effort = train_set.annotation()
        log.info("supervision %s: %d of %d training pixels labelled (%.3f%%), %d drawn", cfg.sup_type,
                 effort["labelled"], effort["pixels"], 100 * effort["labelled"] / effort["pixels"], effort["drawn"])


def _warn(log: logging.Logger, dist: Distributed, warning: str) -> None:
    """A warning in ``log.txt`` and, from rank 0, on the console (under the progress bar)."""
    log.warning(warning)
    if dist.is_main:
        tqdm.write(f"warning: {warning}", file=sys.stderr)


def validation_point(cfg, method, val_set, device, batch, writer, iteration: int, logs: dict, best: dict,
                     log, elapsed: float) -> tuple[dict, bool]:
    """Validate (or, without a validation split, take the last model), log one line; returns
    (the best so far, whether this model is it)."""
    losses = " ".join(f"{k} {float(v):.4f}" for k, v in logs.items())
    if not val_set:
        log.info("iteration %d: %s | no validation: keeping the last model (%.0f s)", iteration, losses, elapsed)
        return {"iteration": iteration, "dice": None, "hd95": None,
                "selection": "last model (no validation split)"}, True
    summary = validate(cfg, method, val_set, device, batch, writer, iteration)
    dice, hd95 = summary["dice"]["mean"], summary["hd95"]["mean"]
    log.info("iteration %d: %s | val dice %.4f hd95 %.2f (%.0f s)", iteration, losses, dice, hd95, elapsed)
    tqdm.write(f"{cfg.method} iteration {iteration}/{cfg.max_iterations}: validation Dice {dice:.4f} "
               f"HD95 {hd95:.2f} (best {max(best['dice'], dice):.4f})")
    if dice > best["dice"]:
        return {"iteration": iteration, "dice": dice, "hd95": hd95}, True
    return best, False


def validate(cfg, method, val_set, device, batch, writer, iteration) -> dict:
    """Score the method's segmenter on the validation volumes (the data root's classes) and log
    scalars and an image grid."""
    model = method.segmenter()
    _, summary = evaluate(model, val_set, Prediction.of(cfg, device), io.class_names(cfg.root_path))
    for metric in metrics.METRICS:
        for k, v in summary[metric].items():
            writer.add_scalar(f"val/{metric}_{k}", v, iteration)
    model.eval()
    with torch.no_grad(), autocast(device, cfg.amp):
        pred = model(batch["image"][:4]).float().argmax(1, keepdim=True)
    target = batch["target"][:4, None].float()
    scale = max(cfg.num_classes - 1, io.UNLABELED)  # maps classes and the unlabeled value 4 into [0, 1]
    writer.add_images("train/image_prediction_target",
                      torch.cat([batch["image"][:4].float(), pred / scale, target / scale]).cpu(),
                      iteration)
    return summary
