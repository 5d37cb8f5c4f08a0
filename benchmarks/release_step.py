"""Seconds per training step of the MaskMixAdv authors' released method, timed the way
``bench_train_step.py`` times ours (random images, ``--warmup`` steps, then ``--steps`` timed).

    python benchmarks/release_step.py --release RELEASE --patch 128 --batch 8 --amp off bf16

The step is the loop body of the release's ``train_weakly_supervised_pCE_MaskMixAdv.py`` with its
own pieces: ``UNet_MAE`` (shared encoder, segmentation and reconstruction decoders), the
complementary masks of ``utils.util.BlockMaskingGenerator``, ``pDLoss``, ``bce_loss`` and
``get_fc_discriminator`` on the argmax pseudo label, SGD and Adam as the script sets them, and
the ``.item()`` calls of its per-step log line. Left out: tensorboard, the validation it runs
every 20 steps, two argmaxes whose results it never uses (``outputs1_hard``, ``outputs2_hard``),
data loading (as for ours). Two stand-ins, because the script does not run as
published off CUDA: its masks are resized with nearest neighbour to ``--patch`` (the release
hard-codes 256, which breaks any other patch), and ``bce_loss`` moves its target with
``.to(y_pred.device)`` (the release's ``.to(get_device())`` fails on the CPU). ``--amp bf16``
wraps the step in the autocast and channels-last memory layout our engine gives every method
(the release itself has neither). Prints one line per precision, s/step; run by
``bench_train_step.py --release`` beside ours, in a separate process (the release's packages
are named like ours).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_release import import_release  # noqa: E402
from step_timing import add_step_args, check_step_args  # noqa: E402

REAL, FAKE, LAMBDA = 1, 0, 0.1  # the script's labels and adversarial weight


def release_step(release: str, batch: int, patch: int, amp: str):
    """A closure running one training step of the release's MaskMixAdv on fixed random data."""
    import_release(release)
    from networks.net_factory import get_fc_discriminator
    from networks.unet import UNet_MAE
    from utils import losses, util

    util.resize = lambda t: F.interpolate(t[None] if t.dim() == 3 else t, size=(patch, patch),
                                          mode="nearest").reshape(*t.shape[:-2], patch, patch)
    bce = torch.nn.BCEWithLogitsLoss()

    def bce_loss(pred, label):
        return bce(pred, torch.full_like(pred, float(label)))

    torch.manual_seed(0)
    layout = torch.channels_last if amp == "bf16" else torch.contiguous_format
    model = UNet_MAE(in_chns=1, class_num=4).to(memory_format=layout).train()
    dis = get_fc_discriminator(num_classes=1).to(memory_format=layout).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    optimizer_dis = torch.optim.Adam(dis.parameters(), lr=1e-4)
    ce_loss = torch.nn.CrossEntropyLoss(ignore_index=4)
    dice_loss = losses.pDLoss(4, ignore_index=4)
    mse = torch.nn.MSELoss()
    volume = torch.rand(batch, 1, patch, patch)
    label = torch.randint(0, 5, (batch, patch, patch))
    real_mask = torch.randint(0, 4, (batch, 1, patch, patch)).float()
    precision = (lambda: torch.autocast("cpu", torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext

    def step():
        masked1, masked2, mask1, mask2 = util.BlockMaskingGenerator(volume, 0.5)
        with precision():
            out1, restore = model(masked1.contiguous(memory_format=layout))
            out2, _ = model(masked2.contiguous(memory_format=layout))
            soft1, soft2 = out1.softmax(1), out2.softmax(1)
            loss_ce = 0.5 * (ce_loss(out1, label) + ce_loss(out2, label))
            loss_mae = mse(restore[:, mask1 == 0], volume[:, mask1 == 0])
            pseudo = torch.argmax(mask1 * soft1 + mask2 * soft2, dim=1, keepdim=True).float()
            loss_pse = 0.5 * (dice_loss(soft1, pseudo) + dice_loss(soft2, pseudo))
            loss = loss_ce * 10 + 0.5 * loss_pse + 10 * loss_mae
        optimizer.zero_grad()
        loss.backward()
        with precision():
            loss_adv = LAMBDA * bce_loss(dis(pseudo), REAL)
        loss_adv.backward()
        optimizer.step()
        optimizer_dis.zero_grad()
        with precision():
            loss_real = bce_loss(dis(real_mask.contiguous(memory_format=layout)), REAL)
            loss_fake = bce_loss(dis(pseudo.detach()), FAKE)
            loss_dis = LAMBDA * 0.5 * (loss_real + loss_fake)
        loss_dis.backward()
        optimizer_dis.step()
        for value in (loss, loss_ce, loss_pse, loss_adv, loss_dis):  # its log line
            value.item()

    return step


def main():
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--release", required=True, help="a checkout of github.com/lichen14/MaskMixAdv")
    p.add_argument("--amp", nargs="+", default=["off"], choices=["off", "bf16"])
    add_step_args(p)
    args = p.parse_args()
    check_step_args(p, args)
    if not os.path.isfile(os.path.join(args.release, "code", "train_weakly_supervised_pCE_MaskMixAdv.py")):
        p.error(f"--release {args.release}: not a checkout of the MaskMixAdv release "
                "(no code/train_weakly_supervised_pCE_MaskMixAdv.py)")
    for amp in args.amp:
        step = release_step(args.release, args.batch, args.patch, amp)
        for _ in range(args.warmup):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        print(f"release maskmixadv amp {amp} {(time.perf_counter() - start) / args.steps:.4f} s/step", flush=True)


if __name__ == "__main__":
    main()
