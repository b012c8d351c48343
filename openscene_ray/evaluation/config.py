"""The evaluation stage's typed config and scene selection."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from openscene_ray.evaluation.metrics import MODES
from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import SceneRecord
from openscene_ray.kernel.ray_runtime import DataContextConfig, ResourcesConfig
from openscene_ray.kernel.text import TextSpaceConfig
from openscene_ray.ssov.afi import AFIConfig

__all__ = ["COMPAT_TTA_REPEATS", "EVAL_MODES", "EvalMode", "EvaluateConfig", "select_scenes"]

COMPAT_TTA_REPEATS = 5
# The 2D model's own per-view predictions (evaluation.views2d), the zero-shot feature modes, then
# SSOV's label modes (evaluation.labels): the lifted pseudo-labels and a trained SSOV network's classes.
EvalMode = Literal["2d", "fusion", "distill", "ensemble", "pseudo", "classify"]
EVAL_MODES: tuple[str, ...] = ("2d", *MODES, "pseudo", "classify")


class EvaluateConfig(StrictModel):
    """Everything ``openscene-ray evaluate`` reads: inputs, modes, protocol, outputs, Ray."""

    renamed_fields = {"fusion_output": "fused"}

    manifest: Uri = Field(..., description="scene manifest URI")
    output: Uri = Field(..., description="run folder for metrics, figures and optional outputs")
    fused: Uri | None = Field(None, description="the fused output (the fusion job's folder: features/<scene>.parquet)")
    checkpoint: Uri | None = Field(None, description="3D checkpoint folder (distill/ensemble; classify: an SSOV net)")
    lifted: Uri | None = Field(None, description="SSOV's lifted output (openscene-ray lift): pseudo mode")
    afi: AFIConfig | None = Field(None, description="also score pseudo/classify after SSOV's AFI post-process "
                                  "(as '<mode>+afi'); {} for the defaults")
    modes: list[EvalMode] | None = Field(None, description="default: every mode the given inputs allow (2d and "
                                         "classify: only when asked for; 2d reruns the fusion's 2D model per view)")
    split: str | None = Field("val", description="manifest split to evaluate; null: every scene")
    scenes: list[str] | None = Field(None, description="these scene ids instead of a split")
    text: TextSpaceConfig = Field(default_factory=TextSpaceConfig)
    openscene_compat: bool = Field(False, description="reproduce the reference's protocol and quirks")
    tta_repeats: int | None = Field(None, ge=1, description=f"3D test repeats; default 1 ({COMPAT_TTA_REPEATS} in compat)")
    tta_seed: int = 0
    save_ply: bool = Field(False, description="per-scene PLYs coloured by ground truth and by each mode")
    save_point_features: bool = Field(False, description="per-scene Parquet of 3D features + predictions")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")

    @model_validator(mode="after")
    def _inputs_cover_modes(self) -> EvaluateConfig:
        if self.modes is not None:
            if not self.modes:
                raise ValueError("modes is empty")
            if len(set(self.modes)) != len(self.modes):
                raise ValueError(f"modes has duplicates: {self.modes}")
            needs = {m for m in self.modes if m in ("distill", "ensemble", "classify")}
            if needs and self.checkpoint is None:
                raise ValueError(f"mode(s) {sorted(needs)} need a 3D checkpoint (set checkpoint)")
            needs = {m for m in self.modes if m in ("2d", "fusion", "ensemble")}
            if needs and self.fused is None:
                raise ValueError(f"mode(s) {sorted(needs)} need the fused features (set fused)")
            if "pseudo" in self.modes and self.lifted is None:
                raise ValueError("mode 'pseudo' needs the lifted pseudo-labels (set lifted)")
        elif self.checkpoint is None and self.fused is None and self.lifted is None:
            raise ValueError("nothing to evaluate: set fused, checkpoint and/or lifted")
        if self.save_point_features and self.checkpoint is None:
            raise ValueError("save_point_features writes the 3D features: it needs a checkpoint")
        return self

    def resolved_modes(self) -> list[str]:
        if self.modes is not None:
            return [m for m in EVAL_MODES if m in self.modes]
        return [
            m for m in MODES
            if (m == "distill" or self.fused is not None) and (m == "fusion" or self.checkpoint is not None)
        ] + (["pseudo"] if self.lifted is not None else [])  # fmt: skip

    def reported_modes(self) -> list[str]:
        """The resolved modes, then ``<mode>+afi`` for the label modes when ``afi`` is set."""
        modes = self.resolved_modes()
        return modes + ([f"{m}+afi" for m in modes if m in ("pseudo", "classify")] if self.afi is not None else [])

    def resolved_tta_repeats(self) -> int:
        if self.tta_repeats is not None:
            return self.tta_repeats
        return COMPAT_TTA_REPEATS if self.openscene_compat else 1


def select_scenes(config: EvaluateConfig, records: list[SceneRecord]) -> list[SceneRecord]:
    """The scenes to evaluate: ``config.scenes`` (all must exist), else the split, else all."""
    if config.scenes is not None:
        by_id = {r.scene_id: r for r in records}
        unknown = sorted(set(config.scenes) - set(by_id))
        if unknown:
            raise InputError(f"scenes not in the manifest {config.manifest}: {unknown}")
        return [by_id[s] for s in sorted(set(config.scenes))]
    chosen = [r for r in records if config.split is None or r.split == config.split]
    if not chosen:
        splits = sorted({r.split for r in records})
        raise InputError(f"no scene of split {config.split!r} in {config.manifest} (splits: {splits})")
    return chosen
