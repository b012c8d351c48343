"""The lift stage's typed config (``openscene-ray lift``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.ray_runtime import DataContextConfig, ResourcesConfig
from openscene_ray.ssov.dictionary import DictionarySpec

__all__ = ["NUSCENES_CAMERA_ORDER", "LiftConfig", "LiftSettings"]

# superpixel2superpoint.py's camera order; later cameras overwrite earlier ones (seed facts §3.2).
NUSCENES_CAMERA_ORDER = ("FRONT", "FRONT_RIGHT", "BACK_RIGHT", "BACK", "BACK_LEFT", "FRONT_LEFT")


class LiftSettings(StrictModel):
    """How points meet pixels. The defaults are the reference's: depth > 1 m and
    ``0 < u < W-1``, ``0 < v < H-1`` on the unrounded projection, then the rounded pixel."""

    min_depth: float = Field(1.0, ge=0, description="metres: keep points with camera depth above this")
    bounds: Literal["reference", "cut"] = Field(
        "reference", description="reference: 0 < u < W-1 and 0 < v < H-1 before rounding; cut: the fusion "
        "stage's test on the rounded pixel, cut <= u < W-cut (fusion.core.project)"
    )
    cut_bound: int | None = Field(None, ge=0, description="pixels (bounds=cut); default: the manifest's")
    camera_order: list[str] | None = Field(
        None, description="views in this order (later ones overwrite); names match frame ids case-insensitively, "
        "with or without a CAM_ prefix; unnamed views follow in manifest order. Default: manifest order"
    )
    depth_test: bool = Field(
        True, description="views with depth maps: a point must agree with the depth at its pixel (the manifest's "
        "relative visibility threshold), as in fusion; LiDAR views have none"
    )


class LiftConfig(StrictModel):
    """Everything ``openscene-ray lift`` reads: scenes, superpixels, the dictionary, Ray."""

    manifest: Uri = Field(..., description="scene manifest URI written by ingest")
    segments: Uri = Field(..., description="the segments store written by openscene-ray segment")
    lifted: Uri = Field(..., description="the lifted output to write (labels/, pairs/, index/, runs/)")
    dictionary: DictionarySpec | None = Field(None, description="default: the dictionary the segments were made with")
    settings: LiftSettings = Field(default_factory=LiftSettings)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    scenes: list[str] | None = Field(None, description="only these scene ids (default: all)")
    overwrite: bool = False
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")
