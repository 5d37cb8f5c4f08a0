"""The UNet of the scribble-supervised cardiac segmentation literature (WSL4MIS, MaskMixAdv).

Encoder: five stages of two 3x3 conv + BatchNorm + LeakyReLU (channels 16-32-64-128-256, dropout
0.05/0.1/0.2/0.3/0.5), 2x2 max-pooling between stages. Decoder: x2 upsampling, skip concatenation,
two conv blocks, a ``head_kernel`` x ``head_kernel`` head (1, or 3 as the releases' ``out_conv``).
Input height and width must be multiples of 16. The decoder options (``upsampling``,
``head_kernel``) are passed as keyword arguments through every network of this package.

Upsampling (``upsampling``): ``"transposed"``, a 2x2 stride-2 transposed convolution, or
``"bilinear"``, a 1x1 convolution then bilinear x2 (align_corners): what the WSL4MIS and
MaskMixAdv releases actually run (their ``UpBlock`` defaults to it; the ``bilinear: False`` in
their network parameters never reaches it).
"""
from __future__ import annotations

import torch
from torch import nn

CHANNELS = (16, 32, 64, 128, 256)
DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)
UPSAMPLING = ("transposed", "bilinear")
HEAD_KERNELS = (1, 3)


class ConvBlock(nn.Sequential):
    """(B, in_ch, H, W) -> (B, out_ch, H, W): conv-BN-LeakyReLU, dropout, conv-BN-LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(),
        )


class Encoder(nn.Module):
    """(B, in_ch, H, W) -> list of 5 feature maps, stage s of shape (B, CHANNELS[s], H/2^s, W/2^s)."""

    def __init__(self, in_ch: int = 1, channels=CHANNELS, dropout=DROPOUT):
        super().__init__()
        self.stages = nn.ModuleList()
        prev = in_ch
        for ch, p in zip(channels, dropout):
            self.stages.append(ConvBlock(prev, ch, p))
            prev = ch
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"UNet input H, W must be multiples of 16, got {tuple(x.shape[-2:])}")
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats


class Up(nn.Module):
    """x2 upsampling of the deeper map to ``skip_ch`` channels (``upsampling``: see the module
    docstring), concatenated with the skip, then a conv block: deep (B, deep_ch, h, w) and skip
    (B, skip_ch, 2h, 2w) -> (B, out_ch, 2h, 2w)."""

    def __init__(self, deep_ch: int, skip_ch: int, out_ch: int, upsampling: str = "transposed"):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"--upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
        if upsampling == "bilinear":
            self.up = nn.Sequential(nn.Conv2d(deep_ch, skip_ch, 1),
                                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))
        else:
            self.up = nn.ConvTranspose2d(deep_ch, skip_ch, 2, stride=2)
        self.conv = ConvBlock(2 * skip_ch, out_ch)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(deep)], dim=1))


class Decoder(nn.Module):
    """Encoder features (see :class:`Encoder`) -> (B, out_ch, H, W) raw scores (logits)."""

    def __init__(self, out_ch: int, channels=CHANNELS, upsampling: str = "transposed", head_kernel: int = 1):
        super().__init__()
        if head_kernel not in HEAD_KERNELS:
            raise ValueError(f"--head_kernel must be one of {HEAD_KERNELS}, got {head_kernel!r}")
        self.ups = nn.ModuleList(
            Up(channels[i + 1], channels[i], channels[i], upsampling) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], out_ch, head_kernel, padding=head_kernel // 2)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            x = up(x, skip)
        return self.head(x)


class UNet(nn.Module):
    """(B, in_ch, H, W) in [0, 1] -> (B, num_classes, H, W) logits."""

    def __init__(self, in_ch: int = 1, num_classes: int = 4, **decoder):
        super().__init__()
        self.encoder = Encoder(in_ch)
        self.decoder = Decoder(num_classes, **decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AttentionDropout(nn.Module):
    """Attention-based feature dropout (the perturbation of the auxiliary decoder in the
    MaskMixAdv authors' release of DMPLS): (B, C, H, W) -> (B, C, H, W).

    The attention map is the channel mean; every position whose attention reaches ``t`` times
    the sample's maximum, with t ~ U(``low``, ``high``) per sample, is zeroed in all channels:
    the decoder must segment without the most salient regions. No rescaling. Identity in eval.
    """

    def __init__(self, low: float = 0.7, high: float = 0.9):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        attention = x.mean(1, keepdim=True)
        peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
        t = torch.empty_like(peak).uniform_(self.low, self.high)
        return x * (attention < t * peak).to(x.dtype)


FEATURE_PERTURBATIONS = {
    "dropout": lambda: nn.Dropout2d(0.5),
    "attention_dropout": AttentionDropout,
}


class DualDecoderUNet(nn.Module):
    """One encoder, two segmentation decoders; the second sees perturbed features (DMPLS, Luo et
    al. 2022): ``perturbation`` is ``"dropout"`` (channel dropout p=0.5, WSL4MIS) or
    ``"attention_dropout"`` (:class:`AttentionDropout`, the MaskMixAdv authors' release).
    :meth:`forward_both`: (B, in_ch, H, W) -> the two (B, num_classes, H, W) logits;
    :meth:`forward` (inference): the main decoder's logits only.
    """

    def __init__(self, in_ch: int = 1, num_classes: int = 4, perturbation: str = "dropout", **decoder):
        super().__init__()
        if perturbation not in FEATURE_PERTURBATIONS:
            raise ValueError(f"unknown feature perturbation {perturbation!r}; choose from "
                             f"{sorted(FEATURE_PERTURBATIONS)}")
        self.encoder = Encoder(in_ch)
        self.decoder = Decoder(num_classes, **decoder)
        self.aux_decoder = Decoder(num_classes, **decoder)
        self.feature_dropout = FEATURE_PERTURBATIONS[perturbation]()

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_ch, H, W) -> logits (B, C, H, W) of the main decoder and of the auxiliary decoder,
        which sees the encoder's features through the feature perturbation (training only)."""
        feats = self.encoder(x)
        return self.decoder(feats), self.aux_decoder([self.feature_dropout(f) for f in feats])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
