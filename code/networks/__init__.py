"""Networks by name, so that scripts and checkpoints can name the network they use."""
from __future__ import annotations

from functools import partial

from torch import nn

from networks.maskmixadv import MaskMixAdvNet, PatchDiscriminator
from networks.unet import DualDecoderUNet, UNet

NETWORKS = {
    "unet": UNet,
    "unet_dual": DualDecoderUNet,
    "unet_dual_attention": partial(DualDecoderUNet, perturbation="attention_dropout"),
    "maskmixadv": MaskMixAdvNet,
    "maskmixadv_shared": partial(MaskMixAdvNet, shared_decoder=True),
}


def build_network(name: str, in_ch: int = 1, num_classes: int = 4, **decoder) -> nn.Module:
    """A segmentation network by registry name; ``decoder``: its decoders' options
    (``upsampling``, ``head_kernel``: see :mod:`networks.unet`). Raises ValueError listing the
    known names."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {sorted(NETWORKS)}")
    return NETWORKS[name](in_ch=in_ch, num_classes=num_classes, **decoder)


__all__ = ["NETWORKS", "build_network", "UNet", "DualDecoderUNet", "MaskMixAdvNet",
           "PatchDiscriminator"]
