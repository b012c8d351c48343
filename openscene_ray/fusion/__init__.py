"""Multi-view 2D->3D feature fusion (paper Sec. 3.1)."""

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
    "fuse_views",
    "project",
    "visible_points",
]
