"""The hierarchy stage's typed config (``openscene-ray hierarchy``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.ray_runtime import DataContextConfig, ResourcesConfig

__all__ = [
    "FieldConfig",
    "HierarchyConfig",
    "MetricsConfig",
    "SamConfig",
    "SegmentConfig",
    "TrainConfig",
    "default_thresholds",
]


def default_thresholds() -> list[float]:
    """The 50 feature-distance thresholds of 3dseg.py: 0.01, 0.02, ..., 0.50."""
    return [round(0.01 * i, 2) for i in range(1, 51)]


class FieldConfig(StrictModel):
    """The hash-grid feature field (facts §4.1: 17 levels x 4 features, MLP 2 x 128 -> 128 -> 256)."""

    levels: int = Field(16, ge=1, le=24)
    features_per_level: int = Field(4, ge=1, le=8)
    log2_table_size: int = Field(17, ge=8, le=24)
    base_resolution: int = Field(16, ge=2)
    max_resolution: int = Field(512, ge=2, description="finest grid resolution over the scene's bounding cube")
    hidden: int = Field(128, ge=8)
    hidden_layers: int = Field(2, ge=1)
    feature_dim: int = Field(128, ge=8, description="width before seg_proj")
    output_dim: int = Field(256, ge=8, description="the contrasted (rendered) feature width")
    negative_slope: float = Field(0.0, ge=0, lt=1, description="0: ReLU as the original; > 0: LeakyReLU")
    mlp_lr_scale: float = Field(
        0.1, gt=0, le=1, description="learning rate of the MLP relative to train.lr (1.0: the original; measured: the "
        "ReLU MLP then dies into constant features on some rooms)"
    )
    sparse_table: bool = Field(True, description="sparse hash-table gradients, updated by SparseAdam (lazy Adam: "
                               "only the table rows a step touches); false: dense Adam over the whole table")


class TrainConfig(StrictModel):
    """Per-scene training (facts §4.3-4.4); one view's samples per step."""

    steps: int = Field(3000, ge=1)
    lr: float = Field(1e-2, gt=0)
    lr_final_ratio: float = Field(1 / 30, gt=0, le=1, description="cosine decay to lr * this")
    samples_per_step: int = Field(4096, ge=64, description="visible (point, pixel) samples of one view")
    pairs_per_mask: int = Field(64, ge=1)
    negative_ratio: int = Field(1, ge=1)
    hierarchical_sampling: bool = True
    min_mask_samples: int = Field(5, ge=0, description="a mask needs more than this many samples inside and outside")
    euclidean_weight: float = Field(1.0, ge=0)
    ultrametric_weight: float = Field(1.0, ge=0)
    norm_weight: float = Field(1.0, ge=0, description="(‖f‖ - 1)² regulariser")
    temperature: float = Field(0.1, gt=0)
    graph_neighbours: int = Field(10, ge=1, description="image-space neighbours per sample in the ultrametric graph")
    boundary_penalty: float = Field(10.0, ge=0, description="added to graph edges that cross a mask boundary")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")


class SegmentConfig(StrictModel):
    """3D segmentation (3dseg.py, facts §4.5) and its transfer to the views."""

    neighbours: int = Field(16, ge=1, description="kNN graph over the points, excluding the point itself")
    thresholds: list[float] = Field(default_factory=default_thresholds, min_length=1)
    max_segments: int = Field(200, ge=1, le=255, description="largest segments kept per level; others = this id")
    transfer_neighbours: int = Field(5, ge=1)
    transfer_max_distance: float | None = Field(
        None, gt=0, description="metres; a pixel farther from its neighbours is unassigned (None: 3 x the "
        "median distance of the points to their transfer_neighbours-th neighbour)"
    )
    view_levels: list[int] | None = Field(None, description="level indices written as view PNGs (None: all)")
    preview_level: int = Field(9, ge=0, description="level of the coloured view previews and the PLY")


class MetricsConfig(StrictModel):
    """NC and VC (facts §4.6) against per-view ground-truth id maps, when given."""

    ground_truth: Uri | None = Field(
        None, description="root of <scene_id>/<folder>/<frame_id>.png id maps (0 = none); None: no metrics"
    )
    levels: dict[str, str] = Field(
        default_factory=lambda: {"object": "instance", "part": "part"}, description="GT level name -> folder"
    )
    samples_per_segment: int = Field(100, ge=1)
    min_segment_pixels: int = Field(20, ge=1)
    min_overlap: float = Field(0.1, ge=0, le=1, description="VC pairs each view with its most overlapping view, "
                               "if at least this fraction of its depth pixels is seen by it")
    baseline: bool = Field(True, description="also score the per-view 2D masks as they are")
    seed: int = 0


class SamConfig(StrictModel):
    """SAM automatic masks (segment-anything) computed into ``masks`` before training."""

    model_type: Literal["vit_h", "vit_l", "vit_b", "tiny"] = "vit_h"
    checkpoint: Uri | None = Field(None, description="SAM state dict (.pth, loaded weights-only)")
    random_init: bool = Field(False, description="allow random weights (tests, smoke runs) without a checkpoint")
    points_per_side: int = Field(32, ge=1)
    points_per_batch: int = Field(64, ge=1)
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = Field(0.7, gt=0, le=1)
    min_area: int = Field(20, ge=0, description="masks smaller than this many pixels are dropped")
    overwrite: bool = Field(False, description="recompute views whose masks exist")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    @model_validator(mode="after")
    def _weights(self) -> SamConfig:
        if self.checkpoint is None and not self.random_init:
            raise ValueError("sam.checkpoint is required (or set sam.random_init: true for random weights)")
        return self


class HierarchyConfig(StrictModel):
    """Everything ``openscene-ray hierarchy`` reads."""

    manifest: Uri = Field(..., description="scene manifest URI written by ingest")
    output: Uri = Field(..., description="output folder (segments/, views/, ply/, fields/, metrics/, index/, runs/)")
    masks: Uri | None = Field(None, description="root of <scene_id>/seg/<frame_id>/*.png + seg_hierarchy/ "
                              "(default with sam: <output>/masks)")
    sam: SamConfig | None = None
    field: FieldConfig = Field(default_factory=FieldConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    visibility_threshold: float | None = Field(None, gt=0, description="override the manifest's depth test")
    save_field: bool = Field(True, description="write the trained field (safetensors)")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    scenes: list[str] | None = Field(None, description="only these scene ids (default: all)")
    overwrite: bool = False
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")

    @model_validator(mode="after")
    def _check(self) -> HierarchyConfig:
        if self.masks is None and self.sam is None:
            raise ValueError("masks: give a masks root (the original on-disk format) or a sam section")
        levels = len(self.segment.thresholds)
        bad = [i for i in (self.segment.view_levels or []) + [self.segment.preview_level] if not 0 <= i < levels]
        if bad:
            raise ValueError(f"segment: level indices {bad} outside 0..{levels - 1}")
        return self

    @property
    def masks_root(self) -> str:
        return self.masks if self.masks is not None else storage.join(self.output, "masks")
