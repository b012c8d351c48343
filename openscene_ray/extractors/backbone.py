"""FiT3D's 2D backbones as extractors: their dense features, upsampled to the view, can be fused
like any other extractor's (``dinov2_small``, ..., ``deit3_base`` and every ``<backbone>-fit3d``).

Options: those of :class:`~openscene_ray.models.backbones.BackboneConfig` except ``name`` (the
extractor's name is the backbone's): ``checkpoint``, ``random_init`` + ``seed``, ``options``,
``concat_original``, ``original``, ``model_cache``; plus ``device`` and ``batch_size``.

Each image is resized to a multiple of the backbone's patch and normalised as the backbone wants
(:meth:`~openscene_ray.models.backbones.Backbone.preprocess`); the token-resolution features are
upsampled bilinearly to the requested size. The features are aligned with no text space
(``text_model`` "none"): fuse them for geometry and probing, not for zero-shot labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.extractors.base import register_extractor
from openscene_ray.kernel.scene import View
from openscene_ray.models.backbone_io import build_backbone
from openscene_ray.models.backbones import BACKBONES, BackboneConfig

__all__ = ["BACKBONE_EXTRACTORS", "BackboneExtractor", "backbone_extractor"]


class BackboneExtractor:
    """Dense features ``[B, H, W, D]`` of a 2D backbone (see the module docstring)."""

    def __init__(self, config: BackboneConfig, device: str = "cpu", batch_size: int = 4):
        if batch_size < 1:
            raise ValueError(f"{config.name}: batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.backbone = build_backbone(config).to(self.device).eval()
        self.name = config.name
        self.feature_dim = self.backbone.feature_dim
        self.text_model = self.backbone.text_model
        self.batch_size = batch_size

    @torch.no_grad()
    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        """``[len(views), height, width, D]`` float32 on ``self.device``."""
        out = []
        for start in range(0, len(views), self.batch_size):
            chunk = views[start : start + self.batch_size]
            sizes = {v.color.shape for v in chunk}
            groups = [chunk] if len(sizes) == 1 else [[v] for v in chunk]
            for group in groups:
                images = torch.from_numpy(np.stack([np.ascontiguousarray(v.color) for v in group])).to(self.device)
                feats = self.backbone.features(images).float()
                feats = F.interpolate(feats, size=(height, width), mode="bilinear", align_corners=False)
                out.append(feats.permute(0, 2, 3, 1))
        if not out:
            return torch.zeros((0, height, width, self.feature_dim), device=self.device)
        return torch.cat(out).contiguous()


def backbone_extractor(name: str):
    """The factory of backbone ``name``'s extractor: keyword options as in the module docstring."""

    def build(device: str = "cpu", batch_size: int = 4, **options) -> BackboneExtractor:
        return BackboneExtractor(BackboneConfig.model_validate({"name": name, **options}), device, batch_size)

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


BACKBONE_EXTRACTORS = tuple(BACKBONES.names())
for _name in BACKBONE_EXTRACTORS:
    register_extractor(_name, backbone_extractor(_name))
