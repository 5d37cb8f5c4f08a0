"""MaskMixAdv: complementary block masking (MaskMix), a siamese UNet with a reconstruction
decoder, mixed pseudo labels and a shape-aware adversarial prior (PatchGAN on probabilities).

Per iteration, with x the images and M a per-sample block mask:

- views x*M and x*(1-M) (or the encoder features, ``--mask_level feature``) are segmented into
  p1, p2 and reconstructed into r1, r2;
- pCE of both views on the scribbles (weight ``--w_ce``);
- pseudo label y = argmax(M*p1 + (1-M)*p2): each view labels the pixels it saw; Dice of p1 and
  p2 against y (weight ``--w_pseudo``);
- MSE of r1 on the pixels view 1 hid (1-M) and of r2 on those view 2 hid (M) (``--w_rec``);
- any term can be switched off with a zero weight (the ablation: ``--w_pseudo 0 --w_rec 0
  --w_adv 0`` is two complementary views with pCE only);
- adversarial: the discriminator D scores p1, p2 (softmax probabilities, so its gradient reaches
  the segmenter) against one-hot dense masks from an unpaired source; the segmenter minimises
  BCE(D(p), real) with weight ``--w_adv`` ramped up over ``--adv_rampup`` of the run, D minimises
  BCE(D(real), real) + BCE(D(p), fake) with Adam.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dataloaders import io
from dataloaders.shape_prior import ShapePrior, check_not_training_labels
from dataloaders.spacing import IN_PLANE_TEXT, in_plane
from losses.segmentation import dice_loss, masked_mse, partial_ce
from methods.base import Method, branch_mean, mixed_pseudo_label, sigmoid_rampup
from networks import PatchDiscriminator


def block_masks(batch: int, size, grid: int = 32, ratio: float = 0.5, device=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Random block masks M, one per sample.

    A ``grid`` x ``grid`` board of cells, exactly ``round(ratio * grid**2)`` of them on, upsampled
    (nearest neighbour) to ``size`` = (H, W). Returns (batch, 1, H, W) float in {0, 1}; the
    complementary view is ``1 - M``.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"--mask_ratio must lie in (0, 1), got {ratio}")
    n_on = round(ratio * grid * grid)
    scores = torch.rand(batch, grid * grid, device=device, generator=generator)
    cells = (scores.argsort(1) < n_on).float().view(batch, 1, grid, grid)
    return F.interpolate(cells, size=tuple(size), mode="nearest")


PRIOR_PATIENT_OFFSET = 100_000


def phantom_prior_masks(seed: int, target_spacing=None, size=None, n_patients: int = 10) -> list:
    """(H, W) dense masks of freshly generated phantom patients; with ``target_spacing`` (y, x) mm
    resampled from their spacing to it and fitted to ``size``. Their indices start at
    ``PRIOR_PATIENT_OFFSET``, far beyond any generated data set, so they are never the
    training patients whatever seed made the data."""
    from dataloaders.phantoms import render_labels
    from dataloaders.spacing import mask_to_target

    frames = [frame for p in range(n_patients) for frame in render_labels(PRIOR_PATIENT_OFFSET + p, seed)]
    if target_spacing:
        return [mask_to_target(s, spacing[1:], target_spacing, size) for labels, spacing in frames for s in labels]
    return [s for labels, _ in frames for s in labels]


class MaskMixAdv(Method):
    """MaskMixAdv (see the module docstring). Network ``maskmixadv`` (or ``maskmixadv_shared``
    with ``--shared_decoder``) plus a :class:`~networks.PatchDiscriminator`."""

    name = "maskmixadv"
    network = "maskmixadv"

    @classmethod
    def add_args(cls, p):
        p.add_argument("--w_ce", type=float, default=10.0, help="weight of the scribble pCE")
        p.add_argument("--w_pseudo", type=float, default=0.5, help="weight of the pseudo-label Dice")
        p.add_argument("--w_rec", type=float, default=10.0, help="weight of the reconstruction MSE")
        p.add_argument("--w_adv", type=float, default=0.1, help="final weight of the adversarial loss")
        p.add_argument("--adv_rampup", type=float, default=0.25,
                       help="fraction of the run over which the adversarial weight ramps up")
        p.add_argument("--mask_grid", type=int, default=32, help="cells per side of the block mask")
        p.add_argument("--mask_ratio", type=float, default=0.5, help="fraction of cells on")
        p.add_argument("--mask_level", default="image", choices=["image", "feature", "both"])
        p.add_argument("--shared_decoder", action="store_true",
                       help="one segmentation decoder for both views (the authors' release)")
        p.add_argument("--shape_prior", default=None,
                       help="unpaired dense masks (h5 with 'label', or NIfTI) for the discriminator; "
                            "default: freshly generated phantom masks")
        p.add_argument("--prior_spacing", type=float, default=None,
                       help="in-plane voxel size (mm) of --shape_prior masks stored without one, needed with "
                            "--target_spacing to bring their hearts to the training scale")
        p.add_argument("--disc_lr", type=float, default=1e-4, help="Adam learning rate of D")
        p.add_argument("--disc_ndf", type=int, default=64, help="base width of D")

    @classmethod
    def check_args(cls, cfg):
        if cfg.adv_rampup < 0:
            raise ValueError(f"--adv_rampup must be >= 0, got {cfg.adv_rampup}")
        for flag in ("mask_grid", "disc_ndf"):
            if getattr(cfg, flag) < 1:
                raise ValueError(f"--{flag} must be >= 1, got {getattr(cfg, flag)}")
        if not 0 < cfg.mask_ratio < 1:
            raise ValueError(f"--mask_ratio must lie in (0, 1), got {cfg.mask_ratio}")
        if cfg.disc_lr <= 0:
            raise ValueError(f"--disc_lr must be > 0, got {cfg.disc_lr}")
        if cfg.prior_spacing is not None and not (cfg.shape_prior and cfg.target_spacing
                                                  and in_plane([cfg.prior_spacing])):
            raise ValueError(f"--prior_spacing {cfg.prior_spacing}: a voxel size {IN_PLANE_TEXT}, for --shape_prior "
                             "masks without one, with --target_spacing (it is used nowhere else)")

    def __init__(self, cfg):
        if cfg.shared_decoder:
            self.network = "maskmixadv_shared"
        super().__init__(cfg)
        self.disc = PatchDiscriminator(cfg.num_classes, cfg.disc_ndf)
        self.prior = None

    def prepare(self, train_set):
        """Load the shape prior (``--shape_prior``, else phantom masks) and record its digest."""
        names = io.class_names(self.cfg.root_path)
        if self.cfg.shape_prior:
            check_not_training_labels(self.cfg.shape_prior, self.cfg.root_path)
            prior_spacing = None if self.cfg.prior_spacing is None else (self.cfg.prior_spacing,) * 2
            self.prior = ShapePrior.from_source(self.cfg.shape_prior, self.cfg.patch_size, self.cfg.num_classes,
                                                self.cfg.input_size, self.cfg.fg_prob, names,
                                                self.cfg.target_spacing, prior_spacing, self.cfg.aug_scale)
            note = f"shape prior: {len(self.prior)} slices from {self.cfg.shape_prior}"
        else:
            self.prior = ShapePrior(phantom_prior_masks(self.cfg.seed, self.cfg.target_spacing, self.cfg.input_size),
                                    self.cfg.patch_size,
                                    self.cfg.num_classes, self.cfg.input_size, self.cfg.fg_prob, names,
                                    self.cfg.aug_scale)
            note = (f"shape prior: no --shape_prior given, using {len(self.prior)} slices of freshly generated "
                    "phantom masks")
        self.cfg.shape_prior_data_sha256 = self.prior.digest()  # a resume checks it (resume.check_same_data)
        return [note]

    def configure_optimizers(self):
        """SGD for the segmenter (``seg``) and, with an adversarial term, Adam for D (``disc``)."""
        params = [p for n, p in self.named_parameters() if not n.startswith("disc.") and p.requires_grad]
        optimizers = {"seg": self.sgd(params)}
        if self.cfg.w_adv > 0:  # without the adversarial term D never steps
            optimizers["disc"] = torch.optim.Adam(self.disc.parameters(), lr=self.cfg.disc_lr, betas=(0.9, 0.99))
        return optimizers

    def losses(self, batch):
        """The segmenter's loss terms (0-dim) and the discriminator's logits of both views'
        probabilities, D(cat([p1, p2])) of shape (2B, 1, H/32, W/32), whose graph reaches the
        segmenter. A term whose weight is 0 is neither computed nor returned (the ablation's
        variants cost only what they use)."""
        c = self.cfg
        image, target = batch["image"], batch["target"]
        mask = block_masks(image.shape[0], image.shape[-2:], c.mask_grid, c.mask_ratio, image.device)
        seg1, seg2, rec1, rec2 = self.net.forward_views(image, mask, c.mask_level, reconstruct=c.w_rec > 0)
        p1, p2 = seg1.float().softmax(1), seg2.float().softmax(1)
        terms = {"pce": branch_mean(partial_ce, seg1, seg2, target)}
        if c.w_pseudo > 0:
            pseudo = mixed_pseudo_label(p1, p2, mask)
            terms["pseudo"] = branch_mean(dice_loss, p1, p2, pseudo, None)
        if c.w_rec > 0:
            terms["rec"] = 0.5 * (masked_mse(rec1, image, 1 - mask[:, 0]) + masked_mse(rec2, image, mask[:, 0]))
        d_fake = None
        if c.w_adv > 0:
            d_fake = self.disc(torch.cat([p1, p2])).float()
            terms["adv"] = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        return terms, d_fake

    def training_step(self, batch, state):
        """The segmenter's step on its weighted terms, then D's on real prior masks against both
        views' probabilities; returns the terms, the ramped adversarial weight and D's loss."""
        c = self.cfg
        weights = {"pce": c.w_ce, "pseudo": c.w_pseudo, "rec": c.w_rec,
                   "adv": c.w_adv * sigmoid_rampup(state.progress, c.adv_rampup)}
        with state.autocast():
            terms, d_fake = self.losses(batch)
            total = sum(weights[k] * v for k, v in terms.items())
        logs = {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}
        if d_fake is None:
            state.optimize(total, "seg")
            return logs
        # One forward of D on the fakes serves both players: the segmenter's step sends the
        # adversarial gradient through D into the segmenter only, then D's step reuses the same
        # scores (D's weights are unchanged in between, so they equal D(p.detach())).
        state.optimize(total, "seg", retain_graph=True)
        real = self.prior.sample(d_fake.shape[0], batch["image"].device, [c.seed, state.iteration])
        with state.autocast():
            d_real = self.disc(real).float()
            d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        state.optimize(d_loss, "disc")
        return {**logs, "w_adv": torch.tensor(weights["adv"]), "disc": d_loss.detach()}
