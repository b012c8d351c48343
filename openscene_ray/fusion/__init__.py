"""Multi-view 2D->3D feature fusion (paper Sec. 3.1)."""

from openscene_ray.fusion.chunks import chunk_masks, random_chunks
from openscene_ray.fusion.core import (
    FusionParams,
    FusionResult,
    Projection,
    fuse_views,
    project,
    visible_points,
)

__all__ = [
    "FusionParams",
    "FusionResult",
    "Projection",
    "chunk_masks",
    "fuse_views",
    "project",
    "random_chunks",
    "visible_points",
]
