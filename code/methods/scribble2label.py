"""Scribble2Label (Lee & Jeong, "Scribble2Label: scribble-supervised cell segmentation via
self-generating pseudo-labels with consistency", MICCAI 2020; the WSL4MIS baseline ``s2l``).

Each training slice keeps a memory m (C, h, w): an exponential moving average of the network's
softmax on that slice, m <- alpha p + (1 - alpha) m, starting from 0 (so a pixel needs several
agreeing updates before its average passes the threshold: a per-pixel warm-up). Pixels whose
averaged confidence max_c m exceeds ``--conf_threshold`` and that carry no scribble get the
pseudo label argmax_c m.

Frames. Training batches are augmented (rotations, flips), and the memory of a slice must stay
in one frame to be averaged. It lives in the slice's canonical frame: the un-augmented slice
resized to the patch size (``dataloaders.augment.resize``), precomputed in :meth:`prepare`.
Per iteration, with x the augmented batch and c the canonical copies of the same slices:

- every ``--memory_interval`` iterations the network, in eval mode and without gradient,
  segments c and the memories of those slices are updated (the authors update every slice every
  ``period`` iterations; updating the batch's slices each iteration visits each slice about once
  per epoch, for one eval-mode forward pass of the batch instead of a sweep over the data set);
- pCE of x on its (augmented) scribbles;
- from progress ``--pseudo_start`` on, CE of c on its confident, unscribbled pseudo labels
  (weight ``--w_pseudo``), so that pseudo labels and predictions share the canonical frame;
- consistency (weight ``--w_cons``): MSE between the softmax of c and that of T(c), brought back
  by T^-1, T a random rot90/flip. The authors' releases have no such term (``--w_cons 0``, which
  also saves the T(c) pass, reproduces them).

The memory is a uint8 buffer (N, C, h, w), probabilities quantised to 1/255 (half the size of
float16; the EMA's rounding error stays below 0.5/255/alpha ~ 0.01), saved and restored with the
method's ``state_dict``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dataloaders.augment import random_rot_flip, resize, rot_flip, unrot_flip
from dataloaders.io import UNLABELED
from losses.segmentation import partial_ce
from methods.base import Method

SCALE = 255.0


def update_memory(memory: torch.Tensor, probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """One EMA step on quantised memories: round(255 (alpha p + (1 - alpha) m / 255)).

    Args:
        memory: (B, C, h, w) uint8, probabilities times 255.
        probs: (B, C, h, w) float softmax in [0, 1].
        alpha: weight of the new prediction, in (0, 1].
    Returns:
        (B, C, h, w) uint8, the updated memories.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"--ema_alpha must lie in (0, 1], got {alpha}")
    new = alpha * probs.float() + (1.0 - alpha) * memory.float() / SCALE
    return (new * SCALE).round().clamp(0, SCALE).to(torch.uint8)


def confident_pseudo_labels(memory: torch.Tensor, scribble: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pseudo labels from quantised memories.

    Args:
        memory: (B, C, h, w) uint8, probabilities times 255.
        scribble: (B, h, w) integer, 4 = unlabeled.
        threshold: confidence in [0, 1]; a pixel is kept when max_c m / 255 > threshold.
    Returns:
        (B, h, w) int64: argmax_c m on kept, unscribbled pixels, 4 (unlabeled) elsewhere.
    """
    conf, label = (memory.float() / SCALE).max(1)
    keep = (conf > threshold) & (scribble == UNLABELED)
    return torch.where(keep, label, torch.full_like(label, UNLABELED))


class Scribble2Label(Method):
    """Scribble2Label (see the module docstring)."""

    name = "s2l"

    @classmethod
    def add_args(cls, p):
        p.add_argument("--conf_threshold", type=float, default=0.8,
                       help="averaged confidence above which a pixel gets a pseudo label (default 0.8)")
        p.add_argument("--ema_alpha", type=float, default=0.2,
                       help="weight of the newest prediction in the memory average (default 0.2)")
        p.add_argument("--memory_interval", type=int, default=1,
                       help="update the batch's memories every N iterations (default 1)")
        p.add_argument("--pseudo_start", type=float, default=0.1,
                       help="fraction of the run before the pseudo-label loss starts (default 0.1, "
                            "WSL4MIS: 6000 of 60000 iterations)")
        p.add_argument("--w_pseudo", type=float, default=0.5,
                       help="weight of the pseudo-label CE (default 0.5, as the authors)")
        p.add_argument("--w_cons", type=float, default=0.1,
                       help="weight of the rot90/flip consistency MSE (default 0.1; 0 turns it off)")

    @classmethod
    def check_args(cls, cfg):
        if tuple(cfg.input_size) != tuple(cfg.patch_size):
            raise ValueError("--input_size: s2l keeps a memory of whole slices at the patch size, "
                             "so --input_size must equal --patch_size")
        if cfg.memory_interval < 1:
            raise ValueError(f"--memory_interval must be >= 1, got {cfg.memory_interval}")
        if not 0.0 <= cfg.conf_threshold < 1.0:
            raise ValueError(f"--conf_threshold must lie in [0, 1), got {cfg.conf_threshold}")
        if not 0.0 < cfg.ema_alpha <= 1.0:
            raise ValueError(f"--ema_alpha must lie in (0, 1], got {cfg.ema_alpha}")

    def __init__(self, cfg):
        super().__init__(cfg)
        h, w = cfg.patch_size
        # Sized by prepare(); empty until then (a checkpoint loaded for inference restores it).
        self.register_buffer("memory", torch.zeros(0, cfg.num_classes, h, w, dtype=torch.uint8))
        # Canonical slices and scribbles: derived from the data, so never saved.
        self.register_buffer("canon_images", torch.zeros(0, 1, h, w, dtype=torch.float16), persistent=False)
        self.register_buffer("canon_targets", torch.zeros(0, h, w, dtype=torch.uint8), persistent=False)

    def prepare(self, train_set):
        """Resize every training slice (``train_set.images`` (H, W) float in [0, 1] and
        ``train_set.targets`` (H, W) int) to the patch size and size the memory (N, C, h, w)."""
        size = tuple(self.cfg.patch_size)
        images = np.stack([resize(np.asarray(im, dtype=np.float32), size, order=1) for im in train_set.images])
        targets = np.stack([resize(np.asarray(t), size, order=0) for t in train_set.targets])
        self.canon_images = torch.from_numpy(images)[:, None].to(torch.float16)
        self.canon_targets = torch.from_numpy(targets.astype(np.uint8))
        self.memory = torch.zeros(len(images), self.cfg.num_classes, *size, dtype=torch.uint8)
        return [f"s2l: prediction memory of {len(images)} slices, {self.memory.numel() / 2**20:.0f} MB"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # An unprepared method (e.g. rebuilt for inference) takes the saved memory's size.
        saved = state_dict.get(prefix + "memory")
        if saved is not None and len(self.memory) == 0:
            self.memory = torch.zeros_like(saved, device=self.memory.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def refresh_memory(self, index: torch.Tensor, canon: torch.Tensor, state) -> None:
        """EMA-update the memories of slices ``index`` (B,) from the eval-mode softmax of their
        canonical images ``canon`` (B, 1, h, w). In a data-parallel job every rank applies every
        rank's updates, so the ranks keep one memory (each checkpoint keeps rank 0's: the
        other ranks' updates were lost, and each rank's pseudo labels came from its own slices)."""
        was_training = self.net.training
        self.net.eval()
        with state.autocast():
            probs = self.net(canon).float().softmax(1)
        self.net.train(was_training)
        new = update_memory(self.memory[index], probs, self.cfg.ema_alpha)
        self.memory[state.dist.all_gather(index)] = state.dist.all_gather(new)

    def loss(self, batch, state):
        c = self.cfg
        if len(self.memory) == 0:
            raise RuntimeError("s2l: prepare(train_set) must run before training")
        image, target, index = batch["image"], batch["target"], batch["index"]
        canon = self.canon_images[index].to(image.dtype)
        if state.iteration % c.memory_interval == 0:
            self.refresh_memory(index, canon, state)
        use_pseudo, use_cons = state.progress >= c.pseudo_start, c.w_cons > 0
        views = [image]
        if use_pseudo or use_cons:
            views.append(canon)
        if use_cons:
            k, flip = random_rot_flip()
            views.append(rot_flip(canon, k, flip))
        # One pass over all views: cheaper than three, and batch norm sees them all together.
        if all(v.shape == image.shape for v in views):
            outs = self.net(torch.cat(views)).split(image.shape[0])
        else:  # an odd rot90 of a non-square patch: the views cannot share a batch
            outs = [self.net(v) for v in views]
        ce = partial_ce(outs[0], target)
        pseudo = cons = torch.zeros((), device=image.device)
        if use_pseudo:
            labels = confident_pseudo_labels(self.memory[index], self.canon_targets[index], c.conf_threshold)
            pseudo = partial_ce(outs[1], labels)
        if use_cons:
            p = outs[1].float().softmax(1)
            q = unrot_flip(outs[2].float().softmax(1), k, flip)
            cons = F.mse_loss(p, q)
        total = ce + c.w_pseudo * pseudo + c.w_cons * cons
        return total, {"pce": ce, "pseudo": pseudo, "cons": cons}
