"""The probe stage's typed config (``openscene-ray fit3d-probe``, FiT3D's evaluation).

FiT3D probes a frozen backbone with a BN + 1x1 conv head (mmseg's ``BNHead``) trained with AdamW
(lr 1e-3, wd 1e-4) and a poly schedule after a linear warm-up, and reports mIoU (seed-systems facts
§2.4: 40k iterations on 8 GPUs at crop 512). Small CPU runs set far fewer iterations in their
configs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.models.backbones import BACKBONES, BackboneConfig

__all__ = ["ProbeConfig", "ProbeSettings", "Variant"]

Variant = Literal["original", "fine_tuned", "concat"]


class ProbeSettings(StrictModel):
    """The linear probe's training."""

    iterations: int = Field(40_000, ge=1)
    warmup_iterations: int = Field(1500, ge=0)
    batch_size: int = Field(8, ge=1, description="views per step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    poly_power: float = Field(1.0, ge=0)
    label_scale: float = Field(1.0, gt=0, le=1, description="labels (nearest) and logits at this times the view size")
    seed: int = 0


class ProbeConfig(StrictModel):
    """Everything ``openscene-ray fit3d-probe`` reads: views with label maps, the backbones, the probe."""

    manifest: Uri = Field(..., description="scene manifest URI; views need label maps")
    output: Uri = Field(..., description="folder for metrics.json and metrics.md")
    backbone: BackboneConfig = Field(..., description="a <name>-fit3d backbone (or any backbone: variant original)")
    variants: list[Variant] = Field(default_factory=lambda: ["original", "fine_tuned", "concat"], min_length=1)
    label_set: str = Field("scannet20", description="label maps hold this label set's class ids")
    train_splits: list[str] = Field(default_factory=lambda: ["train"])
    eval_splits: list[str] = Field(default_factory=lambda: ["val"])
    view_stride: int = Field(1, ge=1, description="every k-th view of each scene")
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    consistency_pairs: int = Field(2000, ge=0, description="pixel pairs per view pair (0: skip the consistency)")
    openscene_compat: bool = Field(False, description="mIoU divides by every class (the reference's quirk)")
    runner: Literal["local", "ray"] = Field("local", description="local: in this process; ray: in one Ray task")
    num_cpus: float = Field(1.0, gt=0, description="runner ray: the task's CPUs (also its torch threads)")
    num_gpus: float = Field(0.0, ge=0, description="runner ray: the task's GPUs")
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")

    @model_validator(mode="after")
    def _variants_fit_the_backbone(self) -> ProbeConfig:
        fine_tuned = BACKBONES.get(self.backbone.name).fine_tuned
        if not fine_tuned and set(self.variants) != {"original"}:
            raise ValueError(f"backbone {self.backbone.name} is not fine-tuned: variants can only be [original]")
        if self.backbone.concat_original:
            raise ValueError("backbone.concat_original: name the variants instead (variants: [concat])")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants repeat: {self.variants}")
        return self
