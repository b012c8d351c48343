"""The fusion stage's typed config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from openscene_ray.kernel.config import Options, StrictModel, Uri
from openscene_ray.kernel.ray_runtime import DataContextConfig, ResourcesConfig

__all__ = ["ExtractorConfig", "FuseConfig", "FusionSettings"]


class ExtractorConfig(StrictModel):
    """Which 2D model to run: a registered name (``openseg``, ``clip-dense``, ``label-oracle``,
    ``rgb``) or a plugin ``package.module:factory``, with its keyword options."""

    name: str = "label-oracle"
    options: Options = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_extractor(cls, name: str) -> str:
        from openscene_ray.extractors.base import EXTRACTORS

        try:
            EXTRACTORS.get(name)  # unknown names (and plugins that do not import) fail here, on the driver
        except KeyError as exc:
            raise ValueError(str(exc)) from None
        return name


class FusionSettings(StrictModel):
    """Fusion parameters; the thresholds default to the manifest's per-dataset values."""

    views_per_batch: int = Field(8, ge=1, description="views whose feature maps are held at once")
    depth_test: bool = True
    cut_bound: int | None = Field(None, ge=0, description="override the manifest's cut bound")
    visibility_threshold: float | None = Field(None, gt=0, description="override the manifest's threshold")
    encoding: Literal["fp16", "int8"] = Field(
        "fp16", description="shard feature encoding: fp16 (2 B a channel) or int8 with a per-point fp16 scale "
        "(1 B a channel + 2 B a point); readers decode either"
    )


class FuseConfig(StrictModel):
    """Everything ``openscene-ray fuse`` reads: inputs, the 2D model, fusion parameters, Ray."""

    renamed_fields = {"output": "fused"}

    manifest: Uri = Field(..., description="scene manifest URI written by ingest")
    fused: Uri = Field(..., description="the fused output folder (features/, index/ and runs/ go below it)")
    extractor: ExtractorConfig = Field(default_factory=ExtractorConfig)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    scenes: list[str] | None = Field(None, description="only these scene ids (default: all)")
    overwrite: bool = False
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")
