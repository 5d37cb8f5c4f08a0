"""Train our ``pce_ms`` with the Mumford-Shah term as the MaskMixAdv release computes it, to tell
whether its functional or the rest of the pipeline makes the release's pCE + MS stronger at the
same budget (README, "Baselines against the reference code").

    python benchmarks/ms_release_form.py --root_path data/ACDC --fold fold1 --w_reg 1e-6 ...

Any ``train.py`` flags; ``--method pce_ms`` is implied. The release calls its
``MumfordShah_Loss(image, softmax)`` with the two in each other's places, which computes, per
image b and class c, sum_i x_bi (p_bci - c_bc)^2 with c_bc = sum_i p_bci x_bi / sum_i x_bi,
summed over the batch (its other term, the image's total variation, is a constant), at weight
1e-6. This replaces :func:`losses.regularizers.mumford_shah_loss` (Kim & Ye's functional) for
this run only.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "code"))

from losses import regularizers  # noqa: E402


def release_form(probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """probs (B, C, H, W) in [0, 1], images (B, 1, H, W) in [0, 1] -> 0-dim sum (see above)."""
    p, x = probs.float(), images.float()
    centre = (p * x).sum((2, 3), keepdim=True) / x.sum((2, 3), keepdim=True).clamp_min(1e-6)
    return (x * (p - centre) ** 2).sum()


if __name__ == "__main__":
    import train

    regularizers.mumford_shah_loss = release_form
    train.main(method="pce_ms")
