"""The TMP pre-training stage's typed config (``openscene-ray pretrain``)."""

from __future__ import annotations

from pydantic import Field

from openscene_ray.kernel.config import Uri
from openscene_ray.models.res16unet import Res16UNetConfig
from openscene_ray.ssov.training import SsovTrainConfig

__all__ = ["PretrainConfig"]


class PretrainConfig(SsovTrainConfig):
    """TMP (seed facts §3.4): Res16UNet34C with an L2-normalised D-dim output trained with
    0.5 · superpixel–superpoint InfoNCE + 0.5 · text–superpoint soft cross-entropy (τ 0.07);
    SGD lr 0.5, momentum 0.9, dampening 0.1, weight decay 1e-4, cosine over 40 epochs, batch 4."""

    name: str = Field("pretrain", description="run name; rerunning the same name resumes it")
    segments: Uri = Field(..., description="the segments store (mask and text embeddings)")
    model: Res16UNetConfig = Field(default_factory=lambda: Res16UNetConfig(out_channels=768, normalize=True),
                                   description="out_channels = the segmenter's embedding width; normalize: true")
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(4, ge=1, description="scenes per worker per step")
    lr: float = Field(0.5, gt=0)
    temperature: float = Field(0.07, gt=0, description="InfoNCE temperature of both losses")
    alpha_image: float = Field(0.5, ge=0, description="weight of the superpixel-superpoint loss")
    alpha_text: float = Field(0.5, ge=0, description="weight of the text-superpoint loss")
    onehot_weight: float = Field(0.2, ge=0, le=1, description="the soft text target's one-hot share")
