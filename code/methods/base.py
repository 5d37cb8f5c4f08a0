"""The interface every method implements, so that one engine trains them all.

A method is an ``nn.Module`` that owns its networks (everything in its ``state_dict`` is saved
and restored) and its training step. The engine calls, in order: ``Method(cfg)``,
``prepare(train_set)``, ``configure_optimizers()``, then ``training_step(batch, state)``
once per iteration followed by ``update_average(iteration)``, and ``segmenter()`` for validation
and testing.

Adding a method: subclass :class:`Method` in a new module of this package, set ``name`` (and
``network`` / ``sup_type`` if they differ), implement :meth:`loss` (or :meth:`training_step`
when the step is more than one backward pass), and add one line to ``methods.METHODS``.
"""
from __future__ import annotations

import argparse
import copy
import math

import torch
from torch import nn

from networks import build_network


def sigmoid_rampup(progress: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = progress / length clipped to [0, 1] (Laine & Aila 2017):
    a weight that rises smoothly from ~0.007 to 1 over the first ``length`` of the run."""
    if length <= 0:
        return 1.0
    t = min(max(progress / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def branch_mean(loss, out1: torch.Tensor, out2: torch.Tensor, *args) -> torch.Tensor:
    """0.5 (loss(out1, *args) + loss(out2, *args)): one loss term for two branches or views
    trained on the same target (DMPLS, MaskMixAdv)."""
    return 0.5 * (loss(out1, *args) + loss(out2, *args))


def mixed_pseudo_label(p1: torch.Tensor, p2: torch.Tensor, weight) -> torch.Tensor:
    """argmax over classes of weight*p1 + (1-weight)*p2, cut from the graph.

    Args:
        p1, p2: (B, C, H, W) class probabilities of two branches or views.
        weight: a float in [0, 1] (DMPLS's random mix) or a (B, 1, H, W) tensor in {0, 1}
            (MaskMix: each view labels the pixels it saw).
    Returns:
        (B, H, W) int64 class indices, without gradient.
    """
    if not torch.is_tensor(weight) and not 0.0 <= weight <= 1.0:
        raise ValueError(f"mixing weight must lie in [0, 1], got {weight}")
    # max(1).indices is argmax(1) (the first maximum on ties), but ~10x faster on the CPU for
    # contiguous (B, C, H, W), where argmax over a non-innermost dim takes a slow path.
    return (weight * p1.detach() + (1 - weight) * p2.detach()).max(1).indices


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float, buffers: bool = False) -> None:
    """average <- decay * average + (1 - decay) * model for every parameter (``decay`` in [0, 1]);
    with ``buffers`` also for the floating-point buffers (batch-norm statistics), the others
    (step counters) copied."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
    pairs = zip(average.state_dict().values(), model.state_dict().values(), strict=True) if buffers else \
        zip(average.parameters(), model.parameters(), strict=True)
    for a, m in pairs:
        if a.is_floating_point():
            a.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        else:
            a.copy_(m)


def ema_decay(step: int, decay: float) -> float:
    """min(1 - 1/step, ``decay``) at optimisation step ``step`` >= 1: an average of weights with
    it is the plain mean of the steps so far while that is the smaller."""
    return min(1.0 - 1.0 / step, decay)


class Method(nn.Module):
    """Base method: one segmentation network trained by SGD on :meth:`loss`.

    Batches are dicts: ``image`` (B, 1, H, W) float in [0, 1], ``target`` (B, H, W) int64 with
    classes 0..``num_classes``-1 of the data root and 4 = unlabeled (the supervision named by
    ``--sup_type``). ``average`` is a copy of ``net`` holding the exponential moving average of
    its weights with ``--model_ema`` (None without), stored without gradients.
    """

    name = ""
    network = "unet"
    sup_type = "scribble"

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this method's own flags (weights, options); the shared ones live in config.py."""

    @classmethod
    def check_args(cls, cfg: argparse.Namespace) -> None:
        """Raise ValueError naming the flag when ``cfg`` asks for something this method cannot do;
        called before anything is written to disk."""

    def __init__(self, cfg: argparse.Namespace):
        super().__init__()
        self.cfg = cfg
        self.net = build_network(self.network, 1, cfg.num_classes, upsampling=cfg.upsampling,
                                 head_kernel=cfg.head_kernel)
        # --model_ema: the weight average that validation, best.pth and inference use (saved with
        # the method, so a resumed run continues the same average).
        self.average = copy.deepcopy(self.net).requires_grad_(False) if cfg.model_ema else None

    def prepare(self, train_set) -> list[str]:
        """Hook run once before training and before the run folder is touched (e.g. to load a
        shape prior: its errors leave nothing behind); returns lines for the run's log. A digest
        of what it reads, set as ``cfg.<part>_data_sha256``, is checked on ``--resume``
        (:func:`resume.check_same_data`). Default: nothing."""
        return []

    def segmenter(self) -> nn.Module:
        """The network used at inference: (B, 1, H, W) -> (B, C, H, W) logits (the weight
        average with ``--model_ema``)."""
        return self.net if self.average is None else self.average

    def update_average(self, iteration: int) -> None:
        """After optimisation step ``iteration`` (1, 2, ...): with ``--model_ema`` d, the average
        moves towards the network with decay min(1 - 1/iteration, d) (the plain mean of the
        steps so far while that is the smaller), batch-norm statistics included."""
        if self.average is not None:
            ema_update(self.average, self.net, ema_decay(iteration, self.cfg.model_ema), buffers=True)

    def sgd(self, params) -> torch.optim.Optimizer:
        """The shared segmenter optimiser (SGD with the configured lr, momentum, weight decay)."""
        c = self.cfg
        return torch.optim.SGD(params, lr=c.base_lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"seg": self.sgd(self.net.parameters())}

    def loss(self, batch: dict, state) -> tuple[torch.Tensor, dict]:
        """(total loss, dict of named 0-dim terms to log) for one batch; runs under autocast."""
        raise NotImplementedError

    def training_step(self, batch: dict, state) -> dict:
        """One optimisation step; returns the terms to log."""
        with state.autocast():
            total, logs = self.loss(batch, state)
        state.optimize(total, "seg")
        return {"loss": total.detach(), **{k: v.detach() for k, v in logs.items()}}
