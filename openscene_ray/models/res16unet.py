"""Res16UNet34C (MinkowskiEngine's, as SLidR and SSOV use it) on spconv.

SSOV's 3D network (seed facts §3.4-3.5) is the Res16UNet34C of Choy et al.: the same U-Net as
MinkUNet18A (stem, four stride-2 encoder stages, four transposed-conv decoder stages that
concatenate the encoder output of the same resolution, residual BasicBlocks), with

* more blocks per stage: ``LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)``;
* wider first decoder stage: ``PLANES = (32, 64, 128, 256, 256, 128, 96, 96)``;
* a k=3 stem (SSOV's ``kernel_size: 3``) and BatchNorm momentum 0.05 (``bn_momentum``);
* a 1x1 head **with** a bias (``final``), and optionally L2-normalised outputs
  (``normalize_features: True`` in TMP pre-training, False for annotation-free training).

Module names follow the reference (``conv0p1s1``, ``block1`` ... ``final``), so its ``final.``
parameters are the head (the annotation-free stage gives them their own learning rate). spconv's
CPU convolutions take no fused bias, so the head is a bias-free 1x1 convolution followed by an
explicit bias add (``final.conv.weight`` + ``final.bias``): the same function and parameter count.
"""

from __future__ import annotations

import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from torch import nn

from openscene_ray.models.minkunet import _NATIVE, MinkUNet, MinkUNetConfig

__all__ = ["Res16UNet", "Res16UNetConfig"]


class Res16UNetConfig(MinkUNetConfig):
    """Hyper-parameters of the Res16UNet; the defaults are Res16UNet34C with a 768-d head.

    ``in_channels`` is 1 (SSOV feeds the LiDAR intensity; a constant 1 where the points have
    none). ``normalize``: L2-normalise every output row (TMP). ``final_bias``: the head's bias.
    """

    planes: tuple[int, int, int, int, int, int, int, int] = (32, 64, 128, 256, 256, 128, 96, 96)
    layers: tuple[int, int, int, int, int, int, int, int] = (2, 3, 4, 6, 2, 2, 2, 2)
    stem_kernel: int = 3
    bn_momentum: float = 0.05
    final_bias: bool = True
    normalize: bool = False


class _BiasedHead(nn.Module):
    """A bias-free 1x1 submanifold convolution plus a separate bias (no fused bias on CPU)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool):
        super().__init__()
        self.conv = spconv.SubMConv3d(in_channels, out_channels, 1, bias=False, algo=_NATIVE)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv(x)
        return out if self.bias is None else out.replace_feature(out.features + self.bias)


class Res16UNet(MinkUNet):
    """Res16UNet on spconv: ``forward(coords [M,4] (b,x,y,z), feats [M,Cin], batch_size) -> [M,C]``."""

    def __init__(self, config: Res16UNetConfig):
        super().__init__(config)
        final = self.final
        self.final = _BiasedHead(final.in_channels, config.out_channels, config.final_bias)
        with torch.no_grad():  # the base class initialised the 1x1 kernel; keep that initialisation
            self.final.conv.weight.copy_(final.weight)

    def forward(self, coords: torch.Tensor, feats: torch.Tensor, batch_size: int) -> torch.Tensor:
        out = super().forward(coords, feats, batch_size)
        return F.normalize(out, dim=1) if self.config.normalize else out

