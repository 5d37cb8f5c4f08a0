"""DMPLS: dual-branch network with dynamically mixed pseudo-label supervision (Luo et al.,
"Scribble-supervised medical image segmentation via dual-branch network and dynamically mixed
pseudo labels supervision", MICCAI 2022; the WSL4MIS baseline).

One encoder, a main decoder and an auxiliary decoder that sees perturbed features: channel
dropout as WSL4MIS (network ``unet_dual``) or, with ``--aux_perturbation attention_dropout``, the
attention-based feature dropout of the MaskMixAdv authors' release (``unet_dual_attention``). Per iteration, with p1, p2 the two branches' softmax (B, C, H, W):

- pCE of each branch on the scribbles: ``w_ce`` * 0.5 (pCE(p1) + pCE(p2)) (WSL4MIS: ``w_ce`` = 1);
- pseudo label y = argmax(beta p1 + (1 - beta) p2), detached, beta ~ U(0, 1) drawn once per
  iteration, so that the mixture moves between the two branches;
- loss = pCE + ``w_pseudo`` * 0.5 (Dice(p1, y) + Dice(p2, y)).

The DMPLS script of the MaskMixAdv authors' release (``train_weakly_supervised_pCE_WSL4MIS.py``)
trains with pCE(p1) + pCE(p2) and its pseudo-label term commented out: ``--w_ce 2 --w_pseudo 0``.

Inference uses the main decoder only (``DualDecoderUNet.forward``).
"""
from __future__ import annotations

import torch

from losses.segmentation import dice_loss, partial_ce
from methods.base import Method, branch_mean, mixed_pseudo_label


class DMPLS(Method):
    """DMPLS (see the module docstring)."""

    name = "dmpls"
    network = "unet_dual"

    @classmethod
    def add_args(cls, p):
        p.add_argument("--w_ce", type=float, default=1.0,
                       help="weight of the branches' mean pCE (1 as WSL4MIS; 2 = their sum, the authors' release)")
        p.add_argument("--w_pseudo", type=float, default=0.5,
                       help="weight of the mixed pseudo-label Dice (default 0.5, as the paper)")
        p.add_argument("--aux_perturbation", default="dropout", choices=["dropout", "attention_dropout"],
                       help="features seen by the auxiliary decoder: channel dropout (WSL4MIS) or "
                            "attention-based feature dropout (the MaskMixAdv authors' release)")

    def __init__(self, cfg):
        if cfg.aux_perturbation == "attention_dropout":
            self.network = "unet_dual_attention"
        super().__init__(cfg)

    def loss(self, batch, state):
        target = batch["target"]
        logits1, logits2 = self.net.forward_both(batch["image"])
        p1, p2 = logits1.float().softmax(1), logits2.float().softmax(1)
        # One beta per iteration (the global torch RNG: seeded and restored by the engine).
        beta = float(torch.rand(()))
        pseudo = mixed_pseudo_label(p1, p2, beta)
        ce = self.cfg.w_ce * branch_mean(partial_ce, logits1, logits2, target)
        dice = branch_mean(dice_loss, p1, p2, pseudo, None)
        return ce + self.cfg.w_pseudo * dice, {"pce": ce, "pseudo": dice}
