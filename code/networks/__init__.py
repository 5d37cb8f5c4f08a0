"""Networks by name, so that scripts and checkpoints can name the network they use."""
from __future__ import annotations

from torch import nn

from networks.maskmixadv import MaskMixAdvNet, PatchDiscriminator
from networks.unet import DualDecoderUNet, UNet

NETWORKS = {
    "unet": UNet,
    "unet_dual": DualDecoderUNet,
    "unet_dual_attention": lambda in_ch=1, num_classes=4, upsampling="transposed": DualDecoderUNet(
        in_ch, num_classes, "attention_dropout", upsampling),
    "maskmixadv": MaskMixAdvNet,
    "maskmixadv_shared": lambda in_ch=1, num_classes=4, upsampling="transposed": MaskMixAdvNet(
        in_ch, num_classes, True, upsampling),
}


def build_network(name: str, in_ch: int = 1, num_classes: int = 4, upsampling: str = "transposed") -> nn.Module:
    """A segmentation network by registry name, its decoders upsampling by ``upsampling``
    (see :mod:`networks.unet`); raises ValueError listing the known names."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {sorted(NETWORKS)}")
    return NETWORKS[name](in_ch=in_ch, num_classes=num_classes, upsampling=upsampling)


__all__ = ["NETWORKS", "build_network", "UNet", "DualDecoderUNet", "MaskMixAdvNet",
           "PatchDiscriminator"]
