"""Segmentation losses on (B, C, H, W) network outputs and (B, H, W) integer targets.

Targets hold class indices 0..C-1; ``ignore_index`` (4 = unlabeled scribble pixel) marks pixels
that carry no supervision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dataloaders.io import UNLABELED


def partial_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = UNLABELED) -> torch.Tensor:
    """Partial cross-entropy (Tang et al. 2018): CE averaged over the labeled pixels only.

    Args:
        logits: (B, C, H, W) raw scores.
        target: (B, H, W) int64 in {0..C-1, ignore_index}.
    Returns:
        0-dim tensor >= 0; 0 when no pixel is labeled (so an empty batch adds nothing).
    """
    if (target != ignore_index).any():
        return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    return logits.sum() * 0.0


def dice_loss(probs: torch.Tensor, target: torch.Tensor, ignore_index: int | None = UNLABELED,
              eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss, 1 - mean over classes of 2|P∩T| / (|P|² + |T|²) (V-Net form, as WSL4MIS).

    Args:
        probs: (B, C, H, W) class probabilities in [0, 1].
        target: (B, H, W) int64 class indices; pixels equal to ``ignore_index`` are left out
            (the "partial" Dice used for pseudo labels that cover part of the image). With
            ``ignore_index=None`` every pixel counts, so ``target`` must hold 0..C-1 only.
    Returns:
        0-dim tensor in [0, 1].
    """
    probs = probs.float()
    c = probs.shape[1]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    onehot = F.one_hot(target.clamp(0, c - 1), c).permute(0, 3, 1, 2).float()
    w = valid.unsqueeze(1).float()
    p, t = probs * w, onehot * w
    inter = (p * t).sum((0, 2, 3))
    denom = (p * p).sum((0, 2, 3)) + (t * t).sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = UNLABELED) -> torch.Tensor:
    """0.5 CE + 0.5 Dice on (B, C, H, W) logits vs (B, H, W) labels (``ignore_index`` left out):
    the fully supervised loss; 0-dim, >= 0."""
    return 0.5 * partial_ce(logits, target, ignore_index) + 0.5 * dice_loss(
        logits.float().softmax(1), target, ignore_index)


def masked_mse(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the pixels where ``mask`` (B, H, W) is set (bool, or 0/1) and over the C channels
    of (p - q)^2, with p, q (B, C, H, W); 0 (keeping the graph) when the mask is empty. USTM's
    consistency on confident pixels, MaskMixAdv's reconstruction of the hidden pixels."""
    dist = ((p.float() - q.float()) ** 2).sum(1)
    w = mask.float()
    return (dist * w).sum() / (p.shape[1] * w.sum()).clamp_min(1.0)
