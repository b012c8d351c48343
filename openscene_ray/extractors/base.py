"""The 2D feature extractor interface and its registry.

An extractor has a name, a feature dimension and the text model its features are aligned with.
It maps a batch of views to per-pixel features at a requested size: ``extract(views, height,
width)`` returns a float tensor ``[B, height, width, C]`` on the extractor's device. Views carry the
colour image (and, for the synthetic ``label-oracle``, the ground-truth label map).

Extractors are built from a name plus keyword options with :func:`build_extractor`; each module
registers its factory with :func:`register_extractor`. A name of the form
``package.module:factory`` loads a user's own extractor without registering it (the module must
be importable on the workers). Heavy frameworks (TensorFlow, open_clip) are imported inside the
factories, never at import time of this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from openscene_ray.kernel.registry import Registry
from openscene_ray.kernel.scene import View

__all__ = ["EXTRACTORS", "Extractor", "build_extractor", "extractor_names", "register_extractor"]


class Extractor(Protocol):
    name: str
    feature_dim: int
    text_model: str  # the text encoder spec the features are aligned with, e.g. "open_clip:ViT-L-14-336"
    device: torch.device

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        """Per-pixel features ``[len(views), height, width, feature_dim]`` on ``self.device``."""
        ...


_FIT3D_BACKBONES = ("dinov2_small", "dinov2_base", "dinov2_reg_small", "clip_base", "mae_base", "deit3_base")
_FIT3D_BACKBONE_EXTRACTORS = (*_FIT3D_BACKBONES, *(f"{name}-fit3d" for name in _FIT3D_BACKBONES))

# Built-ins are imported on first use so that TensorFlow and open_clip load only when asked for;
# ``package.module:factory`` names load a user's own extractor (importable on the workers).
EXTRACTORS: Registry[Callable[..., Extractor]] = Registry(
    "extractor",
    lazy_modules={
        "rgb": "openscene_ray.extractors.simple",
        "label-oracle": "openscene_ray.extractors.simple",
        "openseg": "openscene_ray.extractors.openseg",
        "clip-dense": "openscene_ray.extractors.clip_dense",
        "lseg": "openscene_ray.extractors.lseg",
        # FiT3D's 2D backbones, original and fine-tuned (openscene_ray.models.backbones)
        **{name: "openscene_ray.extractors.backbone" for name in _FIT3D_BACKBONE_EXTRACTORS},
    },
    plugins=True,
)
register_extractor = EXTRACTORS.register
extractor_names = EXTRACTORS.names


def build_extractor(name: str, **options) -> Extractor:
    """Build the extractor ``name`` with its options (see each extractor's factory)."""
    return EXTRACTORS.get(name)(**options)
