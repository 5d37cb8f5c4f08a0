"""USTM: uncertainty-aware self-ensembling and transformation-consistent mean teacher (Liu et al.,
"Weakly supervised segmentation of COVID19 infection with scribble annotation on CT images",
Pattern Recognition 122, 2022; the WSL4MIS baseline).

A student UNet trained with pCE on the scribbles, and a teacher whose weights are an exponential
moving average of the student's (Tarvainen & Valpola 2017). Per iteration, with x (B, 1, H, W):

- a random rot90/flip T is drawn; the teacher segments T(x) + noise (Gaussian, sigma 0.1,
  clipped to +-0.2) ``--mc_passes`` times with dropout active (MC dropout); the mean softmax,
  brought back with T^-1, is the target q (B, C, H, W) and its entropy the uncertainty u (B, H, W);
- consistency = mean over the pixels with u < tau of the per-class squared difference between
  the student's softmax p and q, where tau rises from 0.75 ln C to ln C over the run as in
  UA-MT (Yu et al. 2019; ln C is the largest possible entropy, ln 2 in UA-MT's binary task);
- loss = pCE(p) + ``w_cons`` * sigmoid_rampup(progress, ``cons_rampup``) * consistency;
- after the optimiser step, teacher <- d teacher + (1 - d) student with
  d = min(1 - 1/(iteration + 1), ``ema_decay``) (the true average while it is the better one).

The teacher's batch-norm statistics come from its own forward passes (it runs in training mode,
as in UA-MT); it is a non-trainable submodule, so checkpoints hold it and no optimiser sees it.
Inference uses the student. Deviation from the WSL4MIS script, to keep the cost down: the target
is the mean of the MC passes instead of one more noisy teacher pass.
"""
from __future__ import annotations

import copy
import math

import torch

from dataloaders.augment import random_rot_flip, rot_flip, unrot_flip
from losses.regularizers import pixel_entropy
from losses.segmentation import masked_mse, partial_ce
from methods.base import Method, ema_decay, ema_update, sigmoid_rampup


class USTM(Method):
    """USTM (see the module docstring). Network ``unet`` for student and teacher."""

    name = "ustm"

    @classmethod
    def add_args(cls, p):
        p.add_argument("--w_cons", type=float, default=0.1,
                       help="final weight of the consistency loss (default 0.1)")
        p.add_argument("--cons_rampup", type=float, default=1.0,
                       help="fraction of the run over which the consistency weight ramps up "
                            "(sigmoid ramp; default 1.0, as WSL4MIS)")
        p.add_argument("--ema_decay", type=float, default=0.99,
                       help="EMA decay of the teacher weights (default 0.99)")
        p.add_argument("--mc_passes", type=int, default=4,
                       help="stochastic teacher passes for the target and its uncertainty "
                            "(default 4; WSL4MIS uses 8)")

    @classmethod
    def check_args(cls, cfg):
        if cfg.mc_passes < 1:
            raise ValueError(f"--mc_passes must be >= 1, got {cfg.mc_passes}")
        if not 0.0 <= cfg.ema_decay <= 1.0:
            raise ValueError(f"--ema_decay must lie in [0, 1], got {cfg.ema_decay}")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)

    @torch.no_grad()
    def teacher_target(self, image: torch.Tensor) -> torch.Tensor:
        """Mean teacher softmax over ``mc_passes`` noisy passes of T(image), mapped back by T^-1:
        (B, 1, H, W) -> (B, C, H, W) float32."""
        k, flip = random_rot_flip()
        x = rot_flip(image, k, flip).repeat(self.cfg.mc_passes, 1, 1, 1)
        x = x + (torch.randn_like(x) * 0.1).clamp(-0.2, 0.2)
        probs = self.teacher(x).float().softmax(1)
        probs = probs.reshape(self.cfg.mc_passes, image.shape[0], *probs.shape[1:]).mean(0)
        return unrot_flip(probs, k, flip)

    def loss(self, batch, state):
        c = self.cfg
        image = batch["image"]
        logits = self.net(image)
        ce = partial_ce(logits, batch["target"])
        target = self.teacher_target(image)
        tau = (0.75 + 0.25 * sigmoid_rampup(state.progress, 1.0)) * math.log(target.shape[1])
        certain = pixel_entropy(target) < tau
        cons = masked_mse(logits.float().softmax(1), target, certain)
        w = c.w_cons * sigmoid_rampup(state.progress, c.cons_rampup)
        return ce + w * cons, {"pce": ce, "cons": cons, "w_cons": torch.tensor(w),
                               "certain": certain.float().mean()}

    def training_step(self, batch, state):
        """The student's step, then the teacher's EMA update towards it."""
        logs = super().training_step(batch, state)
        ema_update(self.teacher, self.net, ema_decay(state.iteration + 1, self.cfg.ema_decay))
        return logs
