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

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from openscene_ray.kernel.scene import View

__all__ = ["Extractor", "build_extractor", "extractor_names", "register_extractor"]


class Extractor(Protocol):
    name: str
    feature_dim: int
    text_model: str  # the text encoder spec the features are aligned with, e.g. "open_clip:ViT-L-14-336"
    device: torch.device

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        """Per-pixel features ``[len(views), height, width, feature_dim]`` on ``self.device``."""
        ...


_FACTORIES: dict[str, Callable[..., Extractor]] = {}

# name -> module that registers it; imported on first use so TF/open_clip load only when asked for.
_MODULES = {
    "rgb": "openscene_ray.extractors.simple",
    "label-oracle": "openscene_ray.extractors.simple",
    "openseg": "openscene_ray.extractors.openseg",
    "clip-dense": "openscene_ray.extractors.clip_dense",
}


def register_extractor(name: str, factory: Callable[..., Extractor]) -> None:
    if name in _FACTORIES:
        raise ValueError(f"extractor {name!r} is already registered")
    _FACTORIES[name] = factory


def extractor_names() -> list[str]:
    return sorted(set(_MODULES) | set(_FACTORIES))


def build_extractor(name: str, **options) -> Extractor:
    """Build the extractor ``name`` with its options (see each extractor's factory)."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)(**options)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"cannot load plugin extractor {name!r}: {exc}") from None
    if name not in _FACTORIES and name in _MODULES:
        importlib.import_module(_MODULES[name])
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"unknown extractor {name!r}; known: {', '.join(extractor_names())}") from None
    return factory(**options)
