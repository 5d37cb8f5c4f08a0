"""The two reference points: partial CE on scribbles and full supervision on dense labels."""
from __future__ import annotations

from losses.segmentation import ce_dice_loss, partial_ce
from methods.base import Method


class PCE(Method):
    """Partial cross-entropy on the scribbled pixels only (Tang et al., CVPR 2018)."""

    name = "pce"

    def loss(self, batch, state):
        ce = partial_ce(self.net(batch["image"]), batch["target"])
        return ce, {"pce": ce}


class Fully(Method):
    """The upper bound: 0.5 CE + 0.5 Dice on dense labels (``--sup_type label``)."""

    name = "fully"
    sup_type = "label"

    def loss(self, batch, state):
        loss = ce_dice_loss(self.net(batch["image"]), batch["target"])
        return loss, {}
