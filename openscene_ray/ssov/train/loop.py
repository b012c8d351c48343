"""The annotation-free training worker: Res16UNet34C on pseudo-labels (cross-entropy + Lovász-softmax),
from scratch or from a TMP export (the tensors of the same name and shape: the trunk; the head is new)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import load_points
from openscene_ray.kernel.train_runtime import unwrap
from openscene_ray.models import build_model
from openscene_ray.ssov.losses import IGNORE, ce_lovasz_loss
from openscene_ray.ssov.network import grid_from_metadata, predict_labels
from openscene_ray.ssov.train.config import TrainFreeConfig
from openscene_ray.ssov.train.data import PseudoLabelCollate
from openscene_ray.ssov.training import sgd_optimizer, worker_loop

__all__ = ["LoopSettings", "PseudoLabelObjective", "init_from_checkpoint", "train_loop_per_worker"]


@dataclass(frozen=True)
class LoopSettings:
    """What every worker of annotation-free training needs (config, class count, val scenes)."""

    config: TrainFreeConfig
    num_classes: int
    val_scenes: tuple[tuple[str, str], ...]  # (scene_id, points_uri), scored for monitoring only


class PseudoLabelObjective:
    """The annotation-free step: CE + Lovász of the network's logits against the lifted pseudo-labels."""

    def __init__(self, config: TrainFreeConfig):
        self.config = config

    def collate(self, epoch: int) -> PseudoLabelCollate:
        c = self.config
        return PseudoLabelCollate(c.grid, c.model.in_channels, c.augment, c.seed, epoch)

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["coords"], batch["feats"], int(batch["num_scenes"]))
        return ce_lovasz_loss(logits, batch["target"]), {"labelled_voxels": float((batch["target"] != IGNORE).sum())}


def init_from_checkpoint(model: torch.nn.Module, uri: str, config: TrainFreeConfig) -> tuple[list[str], list[str]]:
    """Copy the tensors of a TMP export whose name and shape match ``model``'s; ``(loaded, skipped)``.

    The export must come from the same voxel grid (the reference asserts voxel size and coordinates)."""
    from openscene_ray.models.checkpoint import load_checkpoint

    source, _, metadata = load_checkpoint(uri)
    grid = grid_from_metadata(metadata.extra, metadata.voxel_size)
    if grid != config.grid:
        raise InputError(f"init_from {uri} was trained on grid {grid.model_dump()} but this run uses "
                         f"{config.grid.model_dump()}")  # fmt: skip
    own = model.state_dict()
    weights = {k: v for k, v in source.state_dict().items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(weights, strict=False)
    return sorted(weights), sorted(set(own) - set(weights))


def validate(settings: LoopSettings, model: torch.nn.Module) -> dict[str, float]:
    """mIoU of the network's predictions on the validation scenes (monitoring only)."""
    bare = unwrap(model)
    bare.eval()
    counts = EvalCounts.zeros(settings.num_classes)
    for _, points_uri in settings.val_scenes:
        xyz, rgb, labels = load_points(points_uri)
        pred = predict_labels(bare, xyz, rgb, settings.config.grid)
        counts = counts + EvalCounts.from_predictions(pred, labels, settings.num_classes)
    metrics = compute_metrics(counts.confusion, counts.unknown)
    return {"val_miou": metrics["miou"], "val_macc": metrics["macc"]}


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train entry point; ``loop_config = {"settings": LoopSettings}``."""
    settings: LoopSettings = loop_config["settings"]
    config = settings.config
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    if config.init_from is not None:
        init_from_checkpoint(model, config.init_from, config)
    optimizer = sgd_optimizer(model, config, config.lr_head)
    check = (lambda m: validate(settings, m)) if settings.val_scenes else None
    return worker_loop(config, model, optimizer, PseudoLabelObjective(config), check)
