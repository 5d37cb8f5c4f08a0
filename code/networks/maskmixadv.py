"""The MaskMixAdv siamese network and the PatchGAN shape discriminator."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from networks.unet import Decoder, Encoder


class MaskMixAdvNet(nn.Module):
    """Siamese UNet: one shared encoder, segmentation decoder(s) and a reconstruction decoder.

    The paper gives each complementary view its own segmentation decoder (``shared_decoder=False``,
    the default); the authors' release shares one (``shared_decoder=True``).

    - :meth:`forward`: (B, in_ch, H, W) in [0, 1] -> (B, num_classes, H, W) logits of the whole
      image; with two decoders, the log of their mean softmax (so softmax gives the mean).
    - :meth:`forward_views`: the two masked views -> segmentation logits and reconstructions.
    """

    def __init__(self, in_ch: int = 1, num_classes: int = 4, shared_decoder: bool = False, **decoder):
        super().__init__()
        self.encoder = Encoder(in_ch)
        n_seg = 1 if shared_decoder else 2
        self.seg_decoders = nn.ModuleList(Decoder(num_classes, **decoder) for _ in range(n_seg))
        self.rec_decoder = Decoder(in_ch, **decoder)

    def _seg(self, view: int, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.seg_decoders[view % len(self.seg_decoders)](feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        if len(self.seg_decoders) == 1:
            return self._seg(0, feats)
        probs = torch.stack([d(feats).float().softmax(1) for d in self.seg_decoders]).mean(0)
        return probs.clamp_min(1e-8).log()

    def forward_views(self, x: torch.Tensor, mask: torch.Tensor, level: str = "image",
                      reconstruct: bool = True):
        """Predict the two complementary views of ``x``.

        Args:
            x: (B, in_ch, H, W) images in [0, 1].
            mask: (B, 1, H, W) binary block mask M in {0, 1}; view 1 is ``M``, view 2 is ``1 - M``.
            level: ``"image"`` masks the input pixels; ``"feature"`` masks every encoder feature
                map of the whole image (M subsampled to each scale); ``"both"`` does both.
            reconstruct: run the reconstruction decoder (False: rec1, rec2 are None).
        Returns:
            (seg1, seg2, rec1, rec2): (B, num_classes, H, W) logits of each view and
            (B, in_ch, H, W) reconstructions of the image from each view.
        """
        if level not in ("image", "feature", "both"):
            raise ValueError(f"mask level must be image, feature or both, got {level!r}")
        masks = (mask, 1 - mask)
        b = x.shape[0]
        if level == "feature":
            feats = self.encoder(x)
            views = [[f * _resize_mask(m, f) for f in feats] for m in masks]
            pair = [torch.cat(fs) for fs in zip(*views)]
        else:
            pair = self.encoder(torch.cat([x * m for m in masks]))
            if level == "both":
                pair = [f * _resize_mask(torch.cat(masks), f) for f in pair]
            views = list(zip(*(f.split(b) for f in pair)))
        # Decoders that see both views run once on the pair (one batch of 2B). Feature-level views
        # reach their segmentation decoders as they are, not as slices of the pair, whose backward
        # would copy every gradient into a zero-filled tensor of the pair's size.
        rec1, rec2 = self.rec_decoder(pair).split(b) if reconstruct else (None, None)
        if len(self.seg_decoders) == 1:
            seg1, seg2 = self._seg(0, pair).split(b)
        else:
            seg1, seg2 = self._seg(0, views[0]), self._seg(1, views[1])
        return seg1, seg2, rec1, rec2


def _resize_mask(mask: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """Binary mask (N, 1, H, W) -> (N, 1, h, w) at the feature's scale by nearest-neighbour
    subsampling, which keeps the pair M, 1 - M exactly complementary at every scale; in the
    feature's dtype (0 and 1 are exact in bf16), so that masking does not promote bf16 features
    to float32 and every decoder convolution cast them back."""
    return F.interpolate(mask, size=feat.shape[-2:], mode="nearest").to(feat.dtype)


class PatchDiscriminator(nn.Module):
    """PatchGAN shape critic: (B, num_classes, H, W) probability maps in [0, 1] (or one-hot real
    masks) -> (B, 1, H/32, W/32) logits, one real/fake score per receptive-field patch.

    Five 4x4 stride-2 convolutions (ndf, 2ndf, 4ndf, 8ndf, 1) with LeakyReLU(0.2), no
    normalisation, as in the adversarial segmentation literature.
    """

    def __init__(self, num_classes: int = 4, ndf: int = 64):
        super().__init__()
        layers, prev = [], num_classes
        for ch in (ndf, 2 * ndf, 4 * ndf, 8 * ndf):
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            prev = ch
        layers.append(nn.Conv2d(prev, 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.net(probs)
