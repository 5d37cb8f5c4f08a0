"""The reference points: partial CE on scribbles (or on random-walker labels grown from them)
and full supervision on dense labels."""
from __future__ import annotations

from losses.segmentation import ce_dice_loss, partial_ce
from methods.base import Method


class PCE(Method):
    """Partial cross-entropy on the scribbled pixels only (Tang et al., CVPR 2018)."""

    name = "pce"

    def loss(self, batch, state):
        ce = partial_ce(self.net(batch["image"]), batch["target"])
        return ce, {"pce": ce}


class PCERandomWalker(PCE):
    """pCE on dense random-walker labels grown from the scribbles (Grady 2006), computed once
    and cached on disk (``--sup_type random_walker``)."""

    name = "pce_rw"
    sup_type = "random_walker"


class Fully(Method):
    """The upper bound: 0.5 CE + 0.5 Dice on dense labels (``--sup_type label``)."""

    name = "fully"
    sup_type = "label"

    def loss(self, batch, state):
        loss = ce_dice_loss(self.net(batch["image"]), batch["target"])
        return loss, {}
