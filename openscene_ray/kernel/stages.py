"""The registry of stages: what the ``openscene-ray`` command offers and what the demo runs.

A stage is named by modules, never imported here (the kernel imports no stage): its command
module (``add_arguments(parser)`` and ``run(args) -> int``), its typed config class and its entry
function, which takes that config and returns the stage's summary. :func:`run_stage` builds the
config from plain data and runs the entry, so one stage can drive others (the demo) without
importing their jobs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.registry import Registry

__all__ = ["STAGES", "Stage", "register_stage", "run_stage", "stage_config"]


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    command: str  # module with add_arguments(parser) and run(args) -> int
    config: str | None = None  # "module:Class" of the typed config
    entry: str | None = None  # "module:function" taking the config, returning the summary

    def load(self, reference: str):
        module, _, attribute = reference.partition(":")
        return getattr(importlib.import_module(module), attribute)


STAGES: Registry[Stage] = Registry("stage")


def register_stage(stage: Stage) -> Stage:
    """Add ``stage``; the command line lists stages in registration order."""
    return STAGES.register(stage.name, stage)


def stage_config(name: str, data: dict[str, Any]):
    """Stage ``name``'s typed config built from ``data`` (validated; errors name the field)."""
    stage = STAGES.get(name)
    if stage.config is None:
        raise ValueError(f"stage {name!r} has no typed config to build")
    return load_config(stage.load(stage.config), base=data)


def run_stage(name: str, data: dict[str, Any]):
    """Run stage ``name`` on the config built from ``data``; returns its summary."""
    stage = STAGES.get(name)
    if stage.entry is None:
        raise ValueError(f"stage {name!r} runs only from the command line")
    return stage.load(stage.entry)(stage_config(name, data))


for _stage in (
    Stage("synth", "write a synthetic posed RGB-D world with ground truth", "openscene_ray.synth.command"),
    Stage("ingest", "read a dataset layout into a scene manifest + points Parquet", "openscene_ray.datasets.command"),
    Stage("fuse", "multi-view 2D->3D feature fusion as a Ray Data job", "openscene_ray.fusion.command",
          "openscene_ray.fusion.config:FuseConfig", "openscene_ray.fusion.job:run_fuse"),
    Stage("distill", "distill a MinkUNet18A from fused features with Ray Train", "openscene_ray.distill.command",
          "openscene_ray.distill.config:DistillConfig", "openscene_ray.distill.job:run_distill"),
    Stage("train-2d", "train an LSeg on views with label maps with Ray Train", "openscene_ray.train2d.command",
          "openscene_ray.train2d.config:Train2DConfig", "openscene_ray.train2d.job:run_train2d"),
    Stage("evaluate", "zero-shot evaluation: fusion / distill / ensemble", "openscene_ray.evaluation.command",
          "openscene_ray.evaluation.config:EvaluateConfig", "openscene_ray.evaluation.job:run_evaluate"),
    Stage("query", "open-vocabulary queries over scenes and fused outputs", "openscene_ray.query.command",
          "openscene_ray.query.config:QueryConfig", "openscene_ray.query.job:run_query"),
    Stage("hierarchy", "view-consistent hierarchical 3D segmentation (Ultrametric Feature Fields)",
          "openscene_ray.hierarchy.command", "openscene_ray.hierarchy.config:HierarchyConfig",
          "openscene_ray.hierarchy.job:run_hierarchy"),
    Stage("segment", "SSOV: open-vocabulary superpixels per view (a 2D extractor as segmenter, or imported)",
          "openscene_ray.ssov.segment.command", "openscene_ray.ssov.segment.config:SegmentConfig",
          "openscene_ray.ssov.segment.job:run_segment"),
    Stage("lift", "SSOV: superpixels -> superpoints and pseudo-labels per point", "openscene_ray.ssov.lift.command",
          "openscene_ray.ssov.lift.config:LiftConfig", "openscene_ray.ssov.lift.job:run_lift"),
    Stage("pretrain", "SSOV: TMP contrastive pre-training of the 3D network with Ray Train",
          "openscene_ray.ssov.pretrain.command", "openscene_ray.ssov.pretrain.config:PretrainConfig",
          "openscene_ray.ssov.pretrain.job:run_pretrain"),
    Stage("train-free", "SSOV: annotation-free 3D training on the pseudo-labels with Ray Train",
          "openscene_ray.ssov.train.command", "openscene_ray.ssov.train.config:TrainFreeConfig",
          "openscene_ray.ssov.train.job:run_train_free"),
    Stage("fit3d-lift", "FiT3D Stage I: a 2D backbone's features lifted into each scene (Gaussians or points)",
          "openscene_ray.fit3d.lift.command", "openscene_ray.fit3d.lift.config:LiftConfig",
          "openscene_ray.fit3d.lift.job:run_lift"),
    Stage("fit3d-finetune", "FiT3D Stage II: fine-tune the 2D backbone on rendered lifted features (Ray Train)",
          "openscene_ray.fit3d.finetune.command", "openscene_ray.fit3d.finetune.config:FinetuneConfig",
          "openscene_ray.fit3d.finetune.job:run_finetune"),
    Stage("fit3d-probe", "FiT3D evaluation: linear probes and multi-view consistency of 2D features",
          "openscene_ray.fit3d.probe.command", "openscene_ray.fit3d.probe.config:ProbeConfig",
          "openscene_ray.fit3d.probe.job:run_probe"),
    Stage("demo", "run every stage end to end on a small synthetic world", "openscene_ray.demo.command"),
    Stage("view", "browser viewer: any scene, free-text / image / label-set queries, database search",
          "openscene_ray.viewer.command"),
):  # fmt: skip
    register_stage(_stage)
