"""The query stage's typed config: one scene (heatmaps) or a whole fused output (search)."""

from __future__ import annotations

import string

from pydantic import Field, field_validator, model_validator

from openscene_ray.evaluation.metrics import Mode
from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.ray_runtime import DataContextConfig
from openscene_ray.kernel.text import TextSpaceConfig

__all__ = ["MAX_QUERY_CHARS", "QueryConfig", "RegionSettings", "SearchSettings", "check_template"]

MAX_QUERY_CHARS = 1000  # CLIP reads 77 tokens; a longer text is a mistake, not a query


def check_template(template: str) -> None:
    """ValueError unless ``template`` has exactly one empty ``{}`` field, e.g. ``'a {} in a scene'``."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"template {template!r} is not a valid format string: {exc}") from None
    if fields != [""]:
        raise ValueError(f"template {template!r} must contain exactly one '{{}}' (the query text), found {len(fields)} field(s)")


class RegionSettings(StrictModel):
    voxel: float = Field(0.1, gt=0, description="connectivity grid (metres)")
    quantile: float = Field(0.98, ge=0, le=1, description="per-scene score quantile that makes a point 'high'")
    threshold: float | None = Field(None, description="absolute score threshold instead of the quantile")
    min_points: int = Field(5, ge=1)


class SearchSettings(StrictModel):
    top_scenes: int = Field(10, ge=1)
    top_points: int = Field(20, ge=1)
    top_regions: int = Field(10, ge=0)
    scene_points: int = Field(32, ge=1, description="best points averaged into the scene score")
    batch_rows: int = Field(65536, ge=1, description="rows per pyarrow batch while scanning a shard")
    region: RegionSettings = Field(default_factory=RegionSettings)


class QueryConfig(StrictModel):
    """One scene (``scene``: heatmaps) or, without ``scene``, a search of every scene of ``fused``."""

    renamed_fields = {"database": "fused", "fusion_output": "fused"}

    texts: list[str] = Field(default_factory=list)
    images: list[Uri] = Field(default_factory=list, description="image URIs (CLIP image queries)")
    template: str | None = Field(None, description="text template, e.g. 'a {} in a scene'")
    text: TextSpaceConfig = Field(default_factory=TextSpaceConfig)
    output: Uri = Field(..., description="folder for query.json (and heatmaps)")
    device: str = "cpu"
    # one scene
    scene: str | None = None
    manifest: Uri | None = Field(None, description="scene manifest (points; xyz for database results)")
    source: Mode = "fusion"
    fused: Uri | None = Field(None, description="the fused output (or any folder of feature shards): "
                              "the scene's fused features, or the database to search")
    checkpoint: Uri | None = None
    view: str = Field("top", description="rendering view: top, front, side, oblique")
    image_size: int = Field(800, ge=100)
    # database search
    search: SearchSettings = Field(default_factory=SearchSettings)
    ray_min_shards: int = Field(8, ge=1, description="scan with Ray Data from this many shards on")
    scan_cpus: float = Field(1.0, gt=0)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    address: str | None = None

    @field_validator("texts")
    @classmethod
    def _real_texts(cls, texts: list[str]) -> list[str]:
        for text in texts:
            if not text.strip():
                raise ValueError("a text query is empty")
            if len(text) > MAX_QUERY_CHARS:
                raise ValueError(f"a text query has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        return texts

    @field_validator("template")
    @classmethod
    def _one_field(cls, template: str | None) -> str | None:
        if template is not None:
            check_template(template)
        return template

    @model_validator(mode="after")
    def _one_target(self) -> QueryConfig:
        if not self.texts and not self.images:
            raise ValueError("give at least one text or image query")
        if self.scene is None and self.fused is None:
            raise ValueError("give scene (heatmaps of one scene) or fused (search every scene of a fused output)")
        if self.scene is not None and self.manifest is None:
            raise ValueError("a scene query needs the manifest")
        if self.images and self.text.encoder != "open_clip":
            raise ValueError("image queries need the open_clip encoder (its image tower)")
        return self
