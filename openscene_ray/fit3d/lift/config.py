"""The lift stage's typed config (``openscene-ray fit3d-lift``, FiT3D's Stage I).

The Gaussian defaults are FiT3D's (seed-systems facts §2.2: 3DGS's optimisation, 30k iterations,
``sem`` and ``feat_cnn`` at 2.5e-3/40); short CPU runs on small scenes raise the feature learning
rates in their configs (``configs/fit3d/``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.ray_runtime import DataContextConfig, ResourcesConfig
from openscene_ray.models.backbones import BackboneConfig

__all__ = ["DensifySettings", "GaussianSettings", "LiftConfig", "PointSettings"]

BASE_LR = 2.5e-3  # 3DGS's feature (SH DC) learning rate; FiT3D derives the others from it


class DensifySettings(StrictModel):
    """3DGS's adaptive density control (clone small, split large Gaussians with large view-space
    gradients; prune transparent and oversized ones; reset opacities)."""

    from_iter: int = Field(500, ge=0)
    until_iter: int = Field(15_000, ge=0)
    interval: int = Field(100, ge=1)
    grad_threshold: float = Field(2e-4, gt=0, description="mean view-space (NDC) gradient norm")
    percent_dense: float = Field(0.01, gt=0, description="clone below, split above this fraction of the scene extent")
    opacity_reset_every: int = Field(3000, ge=1)
    min_opacity: float = Field(0.005, ge=0)
    max_screen_size: int = Field(20, ge=1, description="pixels; pruned above it after the first opacity reset")
    max_gaussians: int | None = Field(None, ge=1, description="stop growing past this many (memory guard)")


class GaussianSettings(StrictModel):
    """Feature Gaussians: representation, optimisation and the render mask."""

    iterations: int = Field(30_000, ge=1)
    sh_degree: int = Field(3, ge=0, le=3)
    sh_increase_every: int = Field(1000, ge=1, description="iterations per SH degree step")
    low_dim: int = Field(64, ge=1, description="the per-Gaussian feature (FiT3D: 64, fixed by its CUDA build)")
    init_opacity: float = Field(0.1, gt=0, lt=1)
    max_points: int | None = Field(None, ge=1, description="initialise from a seeded subsample of this many points")
    position_lr_init: float = Field(1.6e-4, gt=0, description="times the cameras' extent, decayed exponentially")
    position_lr_final: float = Field(1.6e-6, gt=0)
    position_lr_max_steps: int = Field(30_000, ge=1)
    feature_lr: float = Field(BASE_LR, gt=0)
    feature_rest_lr: float = Field(BASE_LR / 20, gt=0)
    sem_lr: float = Field(BASE_LR / 40, gt=0)
    decoder_lr: float = Field(BASE_LR / 40, gt=0)
    opacity_lr: float = Field(0.05, gt=0)
    scaling_lr: float = Field(0.005, gt=0)
    rotation_lr: float = Field(0.001, gt=0)
    adam_eps: float = Field(1e-15, gt=0)
    lambda_dssim: float = Field(0.2, ge=0, le=1)
    feature_weight: float = Field(1.0, ge=0)
    densify: DensifySettings | None = Field(default_factory=DensifySettings, description="null: no density control")
    min_alpha: float = Field(0.5, ge=0, le=1, description="render mask: accumulated opacity at least this")
    backend: Literal["auto", "torch", "gsplat"] = Field("auto", description="auto: gsplat on CUDA, torch otherwise")
    log_every: int = Field(100, ge=1)


class PointSettings(StrictModel):
    """Fused features on the points (fusion's geometry; thresholds default to the manifest's)."""

    radius: int = Field(1, ge=0, description="splat radius in render pixels (a (2r+1)^2 square)")
    cut_bound: int | None = Field(None, ge=0)
    visibility_threshold: float | None = Field(None, gt=0)
    depth_test: bool = True
    views_per_batch: int = Field(4, ge=1)


class LiftConfig(StrictModel):
    """Everything ``openscene-ray fit3d-lift`` reads: scenes, backbone, representation, Ray."""

    manifest: Uri = Field(..., description="scene manifest URI written by ingest")
    lifted: Uri = Field(..., description="output folder: scenes/<id>.safetensors + .json, runs/")
    representation: Literal["gaussians", "points"] = "gaussians"
    backbone: BackboneConfig
    render_scale: float = Field(1.0, gt=0, le=4, description="fit and render at this times the manifest's image size")
    holdout_every: int = Field(8, ge=0, description="every k-th view (0, k, 2k, ...) is held out and scored; 0: none")
    gaussians: GaussianSettings = Field(default_factory=GaussianSettings)
    points: PointSettings = Field(default_factory=PointSettings)
    feature_batch: int = Field(4, ge=1, description="views per backbone forward")
    seed: int = 0
    splits: list[str] | None = Field(None, description="only scenes of these splits (default: all)")
    scenes: list[str] | None = Field(None, description="only these scene ids (default: all)")
    overwrite: bool = False
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")

    @model_validator(mode="after")
    def _backbone_is_original_or_fine_tuned(self) -> LiftConfig:
        if self.backbone.concat_original:
            raise ValueError("backbone.concat_original: lift one backbone's features, not a concatenation")
        return self
