"""The annotation-free training stage's typed config (``openscene-ray train-free``)."""

from __future__ import annotations

from pydantic import Field

from openscene_ray.kernel.config import Uri
from openscene_ray.models.res16unet import Res16UNetConfig
from openscene_ray.ssov.training import SsovTrainConfig

__all__ = ["TrainFreeConfig"]


class TrainFreeConfig(SsovTrainConfig):
    """Res16UNet34C trained on the lifted pseudo-labels with cross-entropy + Lovász-softmax (seed facts
    §3.5): SGD lr 0.02 for the trunk and 2.0 for the head (``final.``), momentum 0.9, dampening 0.1,
    weight decay 1e-4, cosine over 5 epochs, batch 16; from scratch or from a TMP export."""

    name: str = Field("train-free", description="run name; rerunning the same name resumes it")
    model: Res16UNetConfig = Field(default_factory=lambda: Res16UNetConfig(out_channels=16),
                                   description="out_channels = the label set's class count")
    batch_size: int = Field(16, ge=1, description="scenes per worker per step")
    lr_head: float | None = Field(2.0, gt=0, description="learning rate of the head (final.); null: lr")
    init_from: Uri | None = Field(None, description="a TMP export (openscene-ray pretrain <run>/model) to start from")
    validate_split: str | None = Field("val", description="split scored against its ground truth after each "
                                       "epoch, for monitoring only (the export is the last epoch); null: none")
