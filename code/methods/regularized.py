"""pCE plus one regulariser on the softmax of the unlabeled image: the classic scribble
baselines. Each differs from :class:`~methods.supervised.PCE` only by its regulariser (see
:mod:`losses.regularizers` for the formulas, shapes and papers) and its default weight."""
from __future__ import annotations

import torch

from dataloaders.io import UNLABELED
from losses import regularizers as R
from losses.segmentation import partial_ce
from methods.base import Method


class RegularizedPCE(Method):
    """pCE(scribbles) + ``w_reg`` * regulariser(softmax (B, C, H, W), batch)."""

    reg_weight = 0.1

    @classmethod
    def add_args(cls, p):
        p.add_argument("--w_reg", type=float, default=cls.reg_weight,
                       help=f"weight of the regulariser (default {cls.reg_weight})")

    def regularizer(self, probs: torch.Tensor, batch: dict) -> torch.Tensor:
        """The 0-dim regularisation term of the softmax ``probs`` (B, C, H, W) in [0, 1] of the
        batch ``batch`` (its ``image`` for intensity-aware terms), weighted by ``--w_reg``."""
        raise NotImplementedError

    def loss(self, batch, state):
        logits = self.net(batch["image"])
        ce = partial_ce(logits, batch["target"])
        reg = self.regularizer(logits.float().softmax(1), batch)
        return ce + self.cfg.w_reg * reg, {"pce": ce, "reg": reg}


class PCETV(RegularizedPCE):
    """pCE + total variation of the softmax (Javanmardi et al. 2016)."""

    name = "pce_tv"

    def regularizer(self, probs, batch):
        return R.tv_loss(probs)


class PCEEntMin(RegularizedPCE):
    """pCE + entropy minimisation on the unlabeled pixels (Grandvalet & Bengio 2005)."""

    name = "pce_entmin"

    def regularizer(self, probs, batch):
        return R.entropy_loss(probs, batch["target"] == UNLABELED)


class PCEGatedCRF(RegularizedPCE):
    """pCE + gated CRF loss (Obukhov et al. 2019)."""

    name = "pce_gatedcrf"

    def regularizer(self, probs, batch):
        return R.gated_crf_loss(probs, batch["image"])


class PCEIVM(RegularizedPCE):
    """pCE + intensity variance minimisation: each class region should be homogeneous."""

    name = "pce_ivm"

    def regularizer(self, probs, batch):
        return R.ivm_loss(probs, batch["image"])


class PCEMumfordShah(RegularizedPCE):
    """pCE + Mumford-Shah loss (Kim & Ye 2019), or with ``--ms_form release`` the form the
    MaskMixAdv release computes (:func:`losses.regularizers.mumford_shah_release_loss`, a sum:
    weigh it with ``--w_reg 1e-6`` as the release does)."""

    name = "pce_ms"
    FORMS = {"kim_ye": R.mumford_shah_loss, "release": R.mumford_shah_release_loss}

    @classmethod
    def add_args(cls, p):
        super().add_args(p)
        p.add_argument("--ms_form", choices=sorted(cls.FORMS), default="kim_ye",
                       help="kim_ye: the paper's functional (default); release: the MaskMixAdv release's")

    def regularizer(self, probs, batch):
        return self.FORMS[self.cfg.ms_form](probs, batch["image"])
