"""The fine-tuning stage's typed config (``openscene-ray fit3d-finetune``, FiT3D's Stage II).

Defaults are FiT3D's (seed-systems facts §2.3): every backbone parameter trained with AdamW at
lr 1e-5, weight decay 1e-4, gradient norm clipped at 0.1, one epoch, batch 2, seed 42, and no
learning-rate decay within the epoch (MultiStepLR at milestone 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openscene_ray.kernel.config import Uri
from openscene_ray.kernel.train_runtime import TrainRunConfig
from openscene_ray.models.backbones import BackboneConfig

__all__ = ["FinetuneConfig"]


class FinetuneConfig(TrainRunConfig):
    """Everything ``openscene-ray fit3d-finetune`` reads: views, lifted scenes, backbone, optimisation,
    and the Ray Train run (:class:`~openscene_ray.kernel.train_runtime.TrainRunConfig`)."""

    manifest: Uri = Field(..., description="scene manifest URI; the views of the training splits are the samples")
    lifted: Uri = Field(..., description="the fit3d-lift output (scenes/<id>.safetensors) of those scenes")
    name: str = Field("fit3d", description="run name; rerunning the same name resumes it")
    backbone: BackboneConfig = Field(..., description="the original backbone (the student starts from it)")
    splits: list[str] = Field(default_factory=lambda: ["train"], description="scenes whose views are trained on")
    view_stride: int = Field(1, ge=1, description="every k-th view of each scene")
    render_scale: float = Field(1.0, gt=0, le=4, description="targets rendered at this times the view's size")
    min_alpha: float | None = Field(None, ge=0, le=1, description="Gaussians' mask threshold; default: the lifted one")
    render_backend: Literal["auto", "torch", "gsplat"] = Field("auto", description="auto: gsplat on CUDA, torch otherwise")
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(0.1, gt=0, description="max gradient norm; null: no clipping")
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(2, ge=1, description="views per worker per step")
    flip_prob: float = Field(0.5, ge=0, le=1, description="horizontal flip of image, target and mask together")
    rounds_per_epoch: int = Field(1, ge=1, description="checkpoints per epoch: each round is reported and checkpointed")
    seed: int = 42
    scene_cache: int = Field(2, ge=1, description="lifted scenes kept in memory per worker")
    amp: Literal[False] = Field(False, description="FiT3D fine-tunes in fp32: no mixed precision")
