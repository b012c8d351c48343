"""The segment stage's typed config (``openscene-ray segment``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from openscene_ray.fusion.config import ExtractorConfig
from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.ray_runtime import DataContextConfig, ResourcesConfig
from openscene_ray.kernel.text import TextEncoderConfig
from openscene_ray.ssov.dictionary import DictionarySpec

__all__ = ["ImportConfig", "SegmentConfig", "VocabularyTextConfig"]


class VocabularyTextConfig(TextEncoderConfig):
    """The text encoder that embeds the dictionary's phrases (the segmenter's text space)."""

    on_mismatch: Literal["warn", "error"] = Field(
        "error", description="when the extractor's text model differs from this encoder's"
    )


class ImportConfig(StrictModel):
    """The on-disk outputs of the original CAT-Seg / FC-CLIP / SAN superpixel scripts.

    Per image ``<stem>.png`` (uint8 ids, 0 = void), ``<stem>.json`` (the superpixel list) and
    ``<stem>.pt`` (``[K+1, D]`` mask embeddings; for FC-CLIP a pair whose element 1 is that
    tensor), plus ``text_embedding.pt`` once. ``names`` builds an image's stem from
    ``{scene_id}`` and ``{frame_id}``; ``token_map`` (JSON or YAML ``{scene_id: {frame_id:
    stem}}``, e.g. nuScenes camera sample-data tokens) overrides it per image."""

    root: Uri = Field(..., description="folder of the original outputs (the scripts' sp_folder)")
    kind: Literal["san", "catseg", "fcclip"] = "san"
    names: str = Field("{frame_id}", description="file stem under root, from {scene_id} and {frame_id}")
    token_map: Uri | None = None
    text_embedding: str = Field("text_embedding.pt", description="the vocabulary's text embeddings under root")


class SegmentConfig(StrictModel):
    """Everything ``openscene-ray segment`` reads: the scenes, the vocabulary, the segmenter, Ray."""

    manifest: Uri = Field(..., description="scene manifest URI written by ingest")
    segments: Uri = Field(..., description="the segments store to write (scenes/, vocabulary.json, ...)")
    dictionary: DictionarySpec = Field("nuscenes16", description="built-in dictionary name or a dictionary YAML (URI)")
    source: Literal["extractor", "import"] = Field(
        "extractor", description="extractor: run a 2D extractor as the segmenter; import: read the original "
        "scripts' outputs (import:)"
    )
    extractor: ExtractorConfig = Field(default_factory=ExtractorConfig)
    text: VocabularyTextConfig = Field(default_factory=VocabularyTextConfig)
    imported: ImportConfig | None = Field(None, description="the original outputs to import (source: import)")
    views_per_batch: int = Field(1, ge=1, description="views whose feature maps are held at once")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    scenes: list[str] | None = Field(None, description="only these scene ids (default: all)")
    overwrite: bool = False
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")

    @model_validator(mode="after")
    def _import_needs_its_folder(self) -> SegmentConfig:
        if self.source == "import" and self.imported is None:
            raise ValueError("source 'import' needs imported.root (the original scripts' output folder)")
        return self

    def fingerprint(self) -> dict:
        """What makes a scene's superpixels: a scene segmented with another fingerprint is redone."""
        if self.source == "import":
            return {"source": "import", "imported": self.imported.model_dump(mode="json"), "dictionary": self.dictionary}
        return {"source": "extractor", "extractor": self.extractor.model_dump(mode="json"),
                "text": self.text.spec(), "dictionary": self.dictionary}  # fmt: skip
