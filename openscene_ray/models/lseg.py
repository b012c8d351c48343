"""LSeg (Li et al., ICLR 2022) as OpenScene uses it: a DPT-style dense ViT whose per-pixel features
live in a CLIP text space (seed-systems facts §1.1–1.2).

Structure, with the reference's module names so that ``state_dict()`` keys equal the released
checkpoint's after stripping ``net.``:

* ``pretrained.model``: a timm ViT (patch 16) run with a flexible-size forward: its positional
  embedding grid is resized bilinearly to ``H/16 x W/16``; the outputs of four blocks (``hooks``)
  are kept.
* ``pretrained.act_postprocess1..4``: reassemble. Index 0 is the "project" readout (each patch
  token concatenated with the class token, ``Linear(2D -> D)`` + GELU); indices 1 and 2 hold no
  parameters (tokens -> ``[B, D, H/16, W/16]`` is done in :meth:`LSegBackbone.forward`); then a
  1x1 conv to ``features[k]`` and a resampling to strides 4, 8, 16 and 32.
* ``scratch.layer1_rn..layer4_rn`` (3x3 convs to ``num_features``, no bias) and
  ``scratch.refinenet4..1`` (fusion blocks with BatchNorm residual units, x2 bilinear upsampling,
  ``align_corners=True``) down to stride 2; ``scratch.head1``: 1x1 conv to ``out_dim``.
* ``clip_pretrained``: the CLIP text tower the features are aligned with (open_clip's model of
  ``clip_arch``, whose keys are OpenAI CLIP's), frozen. Configurations trained with another text
  encoder (the synthetic world's) have none.

:meth:`LSegNet.forward` returns L2-normalised features ``[B, out_dim, H/2, W/2]``; :func:`lseg_logits`
scores them against text embeddings with the fixed scale 1/0.07 and upsamples x2 (training).
Inputs are normalised with mean = std = 0.5 and their sides must be multiples of 32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.model_specs import model_spec
from openscene_ray.kernel.registry import Registry

__all__ = [
    "LOGIT_SCALE",
    "LSEG_CONFIGS",
    "LSegConfig",
    "LSegNet",
    "build_lseg",
    "lseg_config",
    "lseg_logits",
    "normalize_images",
]

LOGIT_SCALE = 1.0 / 0.07  # exp(log(1/0.07)), fixed (not a parameter)
INPUT_MULTIPLE = 32  # tokens at /16, the stride-32 branch upsampled back: sides must divide by 32
REFERENCE = model_spec("lseg-vitl16-384")  # feature width, text tower and normalisation of the release


class LSegConfig(StrictModel):
    """One LSeg configuration: backbone, hooked blocks, decoder widths, output width, text tower."""

    name: str
    backbone: str = Field(..., description="timm ViT name (patch 16), built with pretrained=False")
    backbone_options: dict[str, Any] = Field(default_factory=dict, description="timm kwargs: depth, embed_dim, ...")
    hooks: tuple[int, int, int, int] = Field(..., description="blocks whose outputs feed the four reassemble stages")
    features: tuple[int, int, int, int] = Field(..., description="reassemble widths at strides 4, 8, 16, 32")
    num_features: int = Field(256, ge=1, description="decoder (scratch) width")
    out_dim: int = Field(512, ge=2, description="per-pixel feature width (the text space's)")
    clip_arch: str | None = Field(None, description="open_clip arch of the text tower held as clip_pretrained")

    @model_validator(mode="after")
    def _hooks_increase(self) -> LSegConfig:
        if list(self.hooks) != sorted(set(self.hooks)) or self.hooks[0] < 0:
            raise ValueError(f"hooks must be increasing block indices, got {list(self.hooks)}")
        return self


LSEG_CONFIGS: Registry[LSegConfig] = Registry("LSeg configuration")


def _register(config: LSegConfig) -> None:
    LSEG_CONFIGS.register(config.name, config)


# The released demo_e200 network: ViT-L/16 at 384, hooks 5/11/17/23, CLIP ViT-B/32 text side.
_register(LSegConfig(name=REFERENCE.name, backbone="vit_large_patch16_384", hooks=(5, 11, 17, 23),
                     features=(256, 512, 1024, 1024), num_features=256, out_dim=REFERENCE.feature_dim,
                     clip_arch=REFERENCE.text_arch))
# Small configurations of the same structure (tests, CPU training on the synthetic world).
_register(LSegConfig(name="lseg-tiny", backbone="vit_tiny_patch16_224",
                     backbone_options={"depth": 4, "embed_dim": 96, "num_heads": 3, "img_size": 384},
                     hooks=(0, 1, 2, 3), features=(32, 64, 96, 96), num_features=32, out_dim=32))
_register(LSegConfig(name="lseg-small", backbone="vit_tiny_patch16_224",
                     backbone_options={"depth": 8, "embed_dim": 192, "num_heads": 3, "img_size": 384},
                     hooks=(1, 3, 5, 7), features=(48, 96, 192, 192), num_features=64, out_dim=32))  # fmt: skip


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` pixel values in [0, 1] -> LSeg's input normalisation (mean = std = 0.5: [-1, 1])."""
    mean = torch.tensor(REFERENCE.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(REFERENCE.std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def lseg_config(name: str, **overrides: Any) -> LSegConfig:
    """The registered configuration ``name`` with ``overrides`` applied (validated)."""
    base = LSEG_CONFIGS.get(name)
    return LSegConfig.model_validate(base.model_dump() | overrides)


class ProjectReadout(nn.Module):
    """Each patch token concatenated with the class token, projected back to the token width."""

    def __init__(self, width: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        readout = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat([patches, readout], dim=-1))


def _reassemble(width: int, out: int, stride: int) -> nn.Sequential:
    """act_postprocess: readout, two parameter-free slots, 1x1 conv, resampling to ``stride``."""
    layers: list[nn.Module] = [ProjectReadout(width), nn.Identity(), nn.Identity(), nn.Conv2d(width, out, 1)]
    if stride < 16:
        factor = 16 // stride
        layers.append(nn.ConvTranspose2d(out, out, factor, stride=factor))
    elif stride > 16:
        layers.append(nn.Conv2d(out, out, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class LSegBackbone(nn.Module):
    """``pretrained``: the timm ViT (``model``) and the four reassemble stages."""

    def __init__(self, config: LSegConfig):
        super().__init__()
        import timm

        self.model = timm.create_model(config.backbone, pretrained=False, **config.backbone_options)
        patch = tuple(self.model.patch_embed.patch_size)
        if patch != (16, 16) or self.model.num_prefix_tokens != 1 or len(self.model.blocks) <= config.hooks[-1]:
            raise ValueError(
                f"LSeg {config.name}: {config.backbone} must be a patch-16 ViT with one class token and more "
                f"than {config.hooks[-1]} blocks (patch {patch}, {len(self.model.blocks)} blocks)"
            )
        self.hooks = config.hooks
        width = self.model.embed_dim
        for k, (out, stride) in enumerate(zip(config.features, (4, 8, 16, 32)), start=1):
            setattr(self, f"act_postprocess{k}", _reassemble(width, out, stride))

    def _position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        pos = self.model.pos_embed
        side = math.isqrt(pos.shape[1] - 1)
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)], dim=1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The four reassembled maps at strides 4, 8, 16 and 32."""
        vit = self.model
        x = vit.patch_embed.proj(images)
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = vit.pos_drop(x + self._position_embedding(grid_h, grid_w))
        kept = []
        for index, block in enumerate(vit.blocks[: self.hooks[-1] + 1]):
            x = block(x)
            if index in self.hooks:
                kept.append(x)
        maps = []
        for k, tokens in enumerate(kept, start=1):
            stage = getattr(self, f"act_postprocess{k}")
            patches = stage[0](tokens).transpose(1, 2).reshape(tokens.shape[0], -1, grid_h, grid_w)
            maps.append(stage[3:](patches))
        return maps


class ResidualConvUnit(nn.Module):
    """act -> conv1 -> bn1 -> act -> conv2 -> bn2, plus the identity (ReLU, 3x3 convs, no bias)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(F.relu(x)))
        return self.bn2(self.conv2(F.relu(out))) + x


class FeatureFusionBlock(nn.Module):
    """``resConfUnit1(skip)`` added to the input, ``resConfUnit2``, x2 bilinear up, 1x1 ``out_conv``."""

    def __init__(self, width: int):
        super().__init__()
        self.out_conv = nn.Conv2d(width, width, 1)
        self.resConfUnit1 = ResidualConvUnit(width)
        self.resConfUnit2 = ResidualConvUnit(width)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = F.interpolate(self.resConfUnit2(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class LSegScratch(nn.Module):
    """``scratch``: the per-stage 3x3 convs, the four fusion blocks and ``head1``."""

    def __init__(self, config: LSegConfig):
        super().__init__()
        width = config.num_features
        for k, channels in enumerate(config.features, start=1):
            setattr(self, f"layer{k}_rn", nn.Conv2d(channels, width, 3, padding=1, bias=False))
        for k in range(1, 5):
            setattr(self, f"refinenet{k}", FeatureFusionBlock(width))
        self.head1 = nn.Conv2d(width, config.out_dim, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (getattr(self, f"layer{k}_rn")(m) for k, m in enumerate(maps, start=1))
        path = self.refinenet4(l4)
        path = self.refinenet3(path, l3)
        path = self.refinenet2(path, l2)
        path = self.refinenet1(path, l1)
        return self.head1(path)


class LSegNet(nn.Module):
    """The LSeg network (see the module docstring); ``forward`` gives normalised stride-2 features."""

    def __init__(self, config: LSegConfig):
        super().__init__()
        self.config = config
        self.pretrained = LSegBackbone(config)
        self.scratch = LSegScratch(config)
        self.clip_pretrained = _clip_tower(config.clip_arch) if config.clip_arch else None
        # In the state dict for the layout, never used by the forward: frozen (DDP needs every
        # trained parameter to get a gradient).
        vit = self.pretrained.model
        for module in (vit.norm, vit.head, *vit.blocks[config.hooks[-1] + 1 :], self.scratch.refinenet4.resConfUnit1):
            module.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images (H, W multiples of 32) -> ``[B, out_dim, H/2, W/2]``."""
        height, width = images.shape[-2:]
        if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
            raise ValueError(f"LSeg input sides must be multiples of {INPUT_MULTIPLE}, got {height}x{width}")
        return F.normalize(self.scratch(self.pretrained(images)), dim=1)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The image encoder's trained parameters (the reference's base learning rate)."""
        return [p for p in self.pretrained.parameters() if p.requires_grad]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The decoder's trained parameters (the reference's 10x learning rate)."""
        return [p for p in self.scratch.parameters() if p.requires_grad]

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings ``[K, out_dim]`` from the held CLIP tower (configs with one)."""
        if self.clip_pretrained is None:
            raise ValueError(f"LSeg {self.config.name} holds no CLIP text tower; use its training text encoder")
        import open_clip

        tokens = open_clip.get_tokenizer(self.config.clip_arch)(prompts).to(self.clip_pretrained.token_embedding.weight.device)
        return F.normalize(self.clip_pretrained.encode_text(tokens).float(), dim=-1)


def _clip_tower(arch: str) -> nn.Module:
    """open_clip's ``arch`` with OpenAI's layout and QuickGELU, random weights (loaded later), frozen."""
    import open_clip

    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True, device=torch.get_default_device())
    return model.eval().requires_grad_(False)


def build_lseg(config: LSegConfig | str, device: str | torch.device | None = None) -> LSegNet:
    """An LSeg network with random weights (``device="meta"``: shapes only, nothing allocated)."""
    config = LSEG_CONFIGS.get(config) if isinstance(config, str) else config
    if device is None:
        return LSegNet(config)
    with torch.device(device):
        return LSegNet(config)


def lseg_logits(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Per-pixel logits ``1/0.07 * <f, t>`` of ``[B, C, h, w]`` features against ``[K, C]`` text,
    upsampled x2 (bilinear, align_corners=True): ``[B, K, 2h, 2w]``."""
    logits = LOGIT_SCALE * torch.einsum("bchw,kc->bkhw", features, text.to(features.dtype))
    return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)
