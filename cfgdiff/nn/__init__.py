"""The network: ADM's U-Net and its layers. Knows nothing of diffusion."""

from cfgdiff.nn.unet import UNet, build_unet, count_params, forward_flops

__all__ = ["UNet", "build_unet", "count_params", "forward_flops"]
