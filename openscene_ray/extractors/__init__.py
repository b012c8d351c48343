"""2D feature extractors (registry in :mod:`openscene_ray.extractors.base`)."""

from openscene_ray.extractors.base import (
    Extractor,
    build_extractor,
    extractor_names,
    register_extractor,
)

__all__ = ["Extractor", "build_extractor", "extractor_names", "register_extractor"]
