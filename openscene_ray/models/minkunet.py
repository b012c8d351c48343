"""MinkUNet18A (the OpenScene 3D distillation network) on spconv instead of MinkowskiEngine.

Architecture (Choy et al. 2019, as used by OpenScene): a k=5 stem, four stride-2 encoder stages
and four transposed-conv decoder stages that concatenate the encoder output of the same
resolution, two residual BasicBlocks per stage, and a bias-free 1x1 head to the 2D feature
dimension. Module names follow the reference (``conv0p1s1``, ``block1`` ... ``final``) so that a
converted reference checkpoint maps one to one.

MinkowskiEngine → spconv mapping:

* a stride-1 ``MinkowskiConvolution`` keeps the input coordinates: ``SubMConv3d``;
* ``MinkowskiConvolution(k=2, s=2)``: ``SparseConv3d(k=2, s=2)`` (voxel ``i`` goes to ``i // 2``);
* ``MinkowskiConvolutionTranspose(k=2, s=2)``: ``SparseInverseConv3d`` sharing the ``indice_key``
  of the matching down conv, so its output is exactly the skip tensor's coordinates, in order;
* ``MinkowskiBatchNorm``: ``BatchNorm1d`` on the feature matrix.

spconv convolutions are cross-correlations with weights stored ``[out, kx, ky, kz, in]``. On CPU
only ``ConvAlgo.Native`` runs, and it takes no fused bias, so every conv is bias-free.
"""

from __future__ import annotations

import math
from typing import Literal

import spconv.pytorch as spconv
import torch
from pydantic import field_validator
from spconv.pytorch.conv import SparseConvolution
from torch import nn

from openscene_ray.kernel.config import StrictModel

__all__ = ["MinkUNetConfig", "MinkUNet", "build_model", "prepare_indices"]

_ALGOS = {
    "native": spconv.ConvAlgo.Native,
    "mask_implicit_gemm": spconv.ConvAlgo.MaskImplicitGemm,
    "mask_split_implicit_gemm": spconv.ConvAlgo.MaskSplitImplicitGemm,
}
_NATIVE = spconv.ConvAlgo.Native
_IMPLICIT_GEMM_MAX_VOLUME = 32  # spconv's own limit when it picks an algorithm
_DOWNSAMPLINGS = 4
_STRIDE = 2**_DOWNSAMPLINGS


class MinkUNetConfig(StrictModel):
    """Hyper-parameters of the MinkUNet; the defaults are MinkUNet18A with a 768-d (OpenSeg) head.

    ``in_channels`` is 1 for the geometry-only input (a constant 1 per voxel; the reference feeds
    three constant channels, which is the same function with 8,000 more weights) and 3 or 4 for
    colour input. ``algo``: ``auto`` runs ``native`` on CPU and spconv's default
    (``mask_implicit_gemm``) on CUDA; an explicit implicit-GEMM choice fails on CPU.
    """

    in_channels: int = 1
    out_channels: int = 768
    init_dim: int = 32
    planes: tuple[int, int, int, int, int, int, int, int] = (32, 64, 128, 256, 128, 128, 96, 96)
    layers: tuple[int, int, int, int, int, int, int, int] = (2, 2, 2, 2, 2, 2, 2, 2)
    stem_kernel: int = 5
    bn_momentum: float = 0.1
    algo: Literal["auto", "native", "mask_implicit_gemm", "mask_split_implicit_gemm"] = "auto"

    @field_validator("in_channels", "out_channels", "init_dim")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("planes", "layers")
    @classmethod
    def _all_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 1:
            raise ValueError("every entry must be >= 1")
        return value

    @field_validator("stem_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value < 1 or value % 2 == 0:
            raise ValueError("must be a positive odd number (a centred submanifold kernel)")
        return value


class BasicBlock(nn.Module):
    """Residual block: subm3 → BN → ReLU → subm3 → BN, plus identity (or 1x1 conv+BN), → ReLU."""

    def __init__(self, inplanes: int, planes: int, indice_key: str, bn_momentum: float):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(inplanes, planes, 3, bias=False, indice_key=indice_key, algo=_NATIVE)
        self.norm1 = nn.BatchNorm1d(planes, momentum=bn_momentum)
        self.conv2 = spconv.SubMConv3d(planes, planes, 3, bias=False, indice_key=indice_key, algo=_NATIVE)
        self.norm2 = nn.BatchNorm1d(planes, momentum=bn_momentum)
        self.downsample = None
        if inplanes != planes:
            self.downsample = nn.Sequential(
                spconv.SubMConv3d(inplanes, planes, 1, bias=False, algo=_NATIVE),
                nn.BatchNorm1d(planes, momentum=bn_momentum),
            )

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.norm1(out.features)))
        out = self.conv2(out)
        features = self.norm2(out.features)
        if self.downsample is None:
            residual = x.features
        else:
            conv, norm = self.downsample  # indexed like the reference's downsample.0 / downsample.1
            residual = norm(conv(x).features)
        return out.replace_feature(torch.relu(features + residual))


class MinkUNet(nn.Module):
    """MinkUNet on spconv: ``forward(coords [M,4] (b,x,y,z), feats [M,Cin], batch_size) -> [M,C]``."""

    def __init__(self, config: MinkUNetConfig):
        super().__init__()
        self.config = config
        planes, layers, momentum = config.planes, config.layers, config.bn_momentum
        inplanes = config.init_dim
        self.conv0p1s1 = spconv.SubMConv3d(
            config.in_channels, inplanes, config.stem_kernel, bias=False, indice_key="stem", algo=_NATIVE
        )
        self.bn0 = nn.BatchNorm1d(inplanes, momentum=momentum)
        # Encoder: level l (tensor stride 2**l) is entered through down conv "conv{l}p{2**(l-1)}s2".
        for level in range(1, _DOWNSAMPLINGS + 1):
            name = f"conv{level}p{2 ** (level - 1)}s2"
            down = spconv.SparseConv3d(
                inplanes, inplanes, 2, stride=2, bias=False, indice_key=f"down{level}", algo=_NATIVE
            )
            self.add_module(name, down)
            self.add_module(f"bn{level}", nn.BatchNorm1d(inplanes, momentum=momentum))
            self.add_module(f"block{level}", self._make_layer(inplanes, planes[level - 1], layers[level - 1], level))
            inplanes = planes[level - 1]
        # Decoder: transposed conv back to level l-1, concat that level's encoder output, blocks.
        skip_channels = [config.init_dim, planes[0], planes[1], planes[2]]
        for step in range(_DOWNSAMPLINGS):
            level = _DOWNSAMPLINGS - step  # the level the transposed conv starts from
            stage = _DOWNSAMPLINGS + step  # index into planes / layers
            name = f"convtr{stage}p{2 ** level}s2"
            up = spconv.SparseInverseConv3d(
                inplanes, planes[stage], 2, indice_key=f"down{level}", bias=False, algo=_NATIVE
            )
            self.add_module(name, up)
            self.add_module(f"bntr{stage}", nn.BatchNorm1d(planes[stage], momentum=momentum))
            concat = planes[stage] + skip_channels[level - 1]
            self.add_module(f"block{stage + 1}", self._make_layer(concat, planes[stage], layers[stage], level - 1))
            inplanes = planes[stage]
        self.final = spconv.SubMConv3d(inplanes, config.out_channels, 1, bias=False, algo=_NATIVE)
        self._algo = _NATIVE
        self._init_weights()

    def _make_layer(self, inplanes: int, planes: int, blocks: int, level: int) -> nn.Sequential:
        key = f"subm{level}"
        momentum = self.config.bn_momentum
        layers = [BasicBlock(inplanes, planes, key, momentum)]
        layers += [BasicBlock(planes, planes, key, momentum) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """The reference's initialisation, reproduced for MinkowskiEngine's kernel shapes.

        Convolutions: Kaiming normal, fan_out, ReLU gain. ME computes fan_out as
        ``out * kernel_volume`` for a ``[K, in, out]`` kernel, but stores 1x1 kernels as an
        ``[in, out]`` matrix whose "fan_out" is ``in``. Transposed convolutions are not touched by
        the reference's init loop and keep ME's default U(±1/sqrt(out * kernel_volume)).
        BatchNorm: weight 1, bias 0.
        """
        for module in self.modules():
            if isinstance(module, SparseConvolution):
                volume = math.prod(module.kernel_size)
                with torch.no_grad():
                    if module.inverse:
                        bound = 1.0 / math.sqrt(module.out_channels * volume)
                        module.weight.uniform_(-bound, bound)
                    else:
                        fan = module.in_channels if volume == 1 else module.out_channels * volume
                        module.weight.normal_(0.0, math.sqrt(2.0 / fan))
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _select_algo(self, device: torch.device) -> None:
        """Point every conv at the algorithm for ``device`` (weights have one layout for all of them).

        Kernels larger than spconv's implicit-GEMM limit (the k=5 stem) stay on Native, which is
        what spconv itself picks for them on CUDA.
        """
        wanted = self.config.algo
        if wanted == "auto":
            algo = _NATIVE if device.type != "cuda" else _ALGOS["mask_implicit_gemm"]
        else:
            algo = _ALGOS[wanted]
            if device.type != "cuda" and algo != _NATIVE:
                raise ValueError(f"spconv algo {wanted!r} needs CUDA; on {device.type} use algo 'native' or 'auto'")
        if algo != self._algo:
            for module in self.modules():
                if isinstance(module, SparseConvolution):
                    module.algo = algo if math.prod(module.kernel_size) <= _IMPLICIT_GEMM_MAX_VOLUME else _NATIVE
            self._algo = algo

    def _conv_bn_relu(self, name: str, bn: str, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        x = getattr(self, name)(x)
        return x.replace_feature(torch.relu(getattr(self, bn)(x.features)))

    def forward(self, coords: torch.Tensor, feats: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Per-voxel features ``[M, out_channels]`` in the order of ``coords``.

        ``coords`` are integer voxel coordinates ``(batch, x, y, z)`` without duplicates; each batch
        item is shifted to start at 0 (the network is evaluated on that translated grid).
        """
        self._select_algo(feats.device)
        indices, spatial_shape = prepare_indices(coords.to(feats.device), batch_size)
        if feats.ndim != 2 or feats.shape != (indices.shape[0], self.config.in_channels):
            raise ValueError(
                f"feats must have shape [{indices.shape[0]}, {self.config.in_channels}], got {tuple(feats.shape)}"
            )
        x = spconv.SparseConvTensor(feats.contiguous(), indices, spatial_shape, batch_size)
        x = self._conv_bn_relu("conv0p1s1", "bn0", x)
        skips = [x]
        for level in range(1, _DOWNSAMPLINGS + 1):
            x = self._conv_bn_relu(f"conv{level}p{2 ** (level - 1)}s2", f"bn{level}", x)
            x = getattr(self, f"block{level}")(x)
            skips.append(x)
        for step in range(_DOWNSAMPLINGS):
            level = _DOWNSAMPLINGS - step
            stage = _DOWNSAMPLINGS + step
            x = self._conv_bn_relu(f"convtr{stage}p{2 ** level}s2", f"bntr{stage}", x)
            x = x.replace_feature(torch.cat([x.features, skips[level - 1].features], dim=1))
            x = getattr(self, f"block{stage + 1}")(x)
        return self.final(x).features


def prepare_indices(coords: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, list[int]]:
    """Validate ``(b, x, y, z)`` coords and shift each batch item to 0: ``(int32 [M,4], spatial_shape)``.

    The spatial shape is the extent rounded up to a multiple of 16 so that every one of the four
    stride-2 levels halves it exactly. The result is contiguous (spconv misreads strided indices).
    """
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must have shape [M, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    if coords.shape[0] == 0:
        raise ValueError("coords is empty: a batch needs at least one voxel")
    if coords.dtype.is_floating_point:
        raise ValueError(f"coords must be integer voxel indices, got {coords.dtype}")
    coords = coords.to(torch.int64)
    batch = coords[:, 0]
    if int(batch.min()) < 0 or int(batch.max()) >= batch_size:
        raise ValueError(f"batch indices must lie in [0, {batch_size}), got [{int(batch.min())}, {int(batch.max())}]")
    xyz = coords[:, 1:]
    start = torch.full((batch_size, 3), torch.iinfo(torch.int64).max, dtype=torch.int64, device=coords.device)
    start.scatter_reduce_(0, batch[:, None].expand(-1, 3), xyz, reduce="amin")
    xyz = xyz - start[batch]
    extent = xyz.max(dim=0).values + 1
    spatial_shape = [int(-(-int(e) // _STRIDE) * _STRIDE) for e in extent]
    keys = ((batch * spatial_shape[0] + xyz[:, 0]) * spatial_shape[1] + xyz[:, 1]) * spatial_shape[2] + xyz[:, 2]
    if torch.unique(keys).numel() != keys.numel():
        raise ValueError("coords contain duplicate voxels; voxelise the points first (one row per voxel)")
    indices = torch.cat([batch[:, None], xyz], dim=1).to(torch.int32).contiguous()
    return indices, spatial_shape


def build_model(config: MinkUNetConfig | None = None) -> MinkUNet:
    """A freshly initialised MinkUNet (MinkUNet18A with a 768-d head by default)."""
    return MinkUNet(config or MinkUNetConfig())
