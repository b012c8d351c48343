"""What SSOV's two Ray Train stages share (TMP pre-training and annotation-free training).

The settings (:class:`SsovTrainConfig`), the training rows (one per scene: where its points,
lifted labels and pairs live; workers read the data themselves), SGD with an optional head
learning rate and the cosine schedule over epochs (seed facts §3.4-3.5), the per-worker loop
around a stage's objective, and the export of the last checkpoint as a plain checkpoint folder.

The exported model is the last epoch's: annotation-free training must not pick a model by its
ground-truth score; validation metrics, where configured, are recorded for monitoring only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import Field

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import Uri
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import SceneRecord
from openscene_ray.kernel.train_runtime import (
    TrainRunConfig,
    TrainState,
    all_reduce,
    report_epoch,
    restore_state,
    run_hook,
)
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.res16unet import Res16UNetConfig
from openscene_ray.ssov.lifted import labels_uri, pairs_uri
from openscene_ray.ssov.network import GridConfig

__all__ = [
    "SSOV_AUGMENT",
    "Objective",
    "SsovTrainConfig",
    "TrainSummary",
    "cosine_factor",
    "export_last",
    "sgd_optimizer",
    "training_rows",
    "worker_loop",
]

# SLidR/SSOV cloud transforms: a random rotation about the up axis and random flips of x and y.
SSOV_AUGMENT = AugmentConfig(
    rotation_bounds=((0.0, 0.0), (0.0, 0.0), (-math.pi, math.pi)), scale_bounds=(1.0, 1.0), flip_probability=1.0,
    flip_axis_probability=0.5, elastic_distortion=False,
)  # fmt: skip


class SsovTrainConfig(TrainRunConfig):
    """The settings both SSOV training stages share (the Ray Train run, data, network, SGD)."""

    manifest: Uri = Field(..., description="scene manifest URI")
    lifted: Uri = Field(..., description="the lifted output (openscene-ray lift)")
    split: str = Field("train", description="the manifest split to train on")
    model: Res16UNetConfig = Field(default_factory=Res16UNetConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    augment: AugmentConfig = Field(default_factory=lambda: SSOV_AUGMENT.model_copy())
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(4, ge=1, description="scenes per worker per step")
    lr: float = Field(0.02, gt=0, description="SGD learning rate (the trunk's)")
    momentum: float = Field(0.9, ge=0)
    dampening: float = Field(0.1, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = Field(0, description="augmentation seed (per epoch and scene)")


@dataclass
class TrainSummary:
    """What a training stage did: its run folder, exported model and metric history."""

    name: str
    run_dir: str
    model_uri: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.model_uri)

    def as_dict(self) -> dict[str, Any]:
        keys = ("epoch", "train_loss", "val_miou", "lr", "seconds", "resumed_from")
        return {"name": self.name, "run_dir": self.run_dir, "model": self.model_uri, "epochs": len(self.history),
                "history": [{k: h[k] for k in keys if k in h} for h in self.history],
                "seconds": round(self.seconds, 2)}  # fmt: skip


def training_rows(records: list[SceneRecord], lifted: str) -> list[dict[str, Any]]:
    """One small row per scene: its id, point count and where its inputs live."""
    return [
        {"scene_id": r.scene_id, "points_uri": r.points_uri, "labels_uri": labels_uri(lifted, r.scene_id),
         "pairs_uri": pairs_uri(lifted, r.scene_id), "num_points": int(r.num_points)}
        for r in records
    ]  # fmt: skip


def split_records(config: SsovTrainConfig, records: list[SceneRecord]) -> list[SceneRecord]:
    """The manifest's scenes of ``config.split``; an error when they are too few for the workers or
    when any has no lifted labels (naming them)."""
    chosen = [r for r in records if r.split == config.split]
    if len(chosen) < config.workers:
        raise InputError(f"{config.manifest}: {len(chosen)} scene(s) of split {config.split!r} cannot feed "
                         f"{config.workers} worker(s)")  # fmt: skip
    missing = [r.scene_id for r in chosen if not storage.exists(labels_uri(config.lifted, r.scene_id))]
    if missing:
        raise InputError(f"{len(missing)} scene(s) have no lifted labels in {config.lifted} (run openscene-ray "
                         f"lift first): {missing[:10]}")  # fmt: skip
    return chosen


def sgd_optimizer(model: torch.nn.Module, config: SsovTrainConfig, lr_head: float | None = None) -> torch.optim.SGD:
    """SGD (momentum, dampening, weight decay); with ``lr_head``, the ``final.`` parameters (the
    head) form their own group at that rate, first, as in the reference."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if lr_head is None:
        groups = [{"params": [p for _, p in named], "lr": config.lr}]
    else:
        groups = [{"params": [p for n, p in named if "final." in n], "lr": lr_head},
                  {"params": [p for n, p in named if "final." not in n], "lr": config.lr}]  # fmt: skip
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, dampening=config.dampening,
                           weight_decay=config.weight_decay)  # fmt: skip


def cosine_factor(epochs: int):
    """LR factor at epoch ``e``: ``(1 + cos(π e / epochs)) / 2`` (CosineAnnealingLR, η_min = 0)."""
    return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))


class Objective(Protocol):
    """A stage's training step: the collate of an epoch and the loss of a batch."""

    def collate(self, epoch: int): ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class EpochTotals:
    """One epoch's running sums on a worker: loss, steps, voxels and the named loss parts."""

    loss: float = 0.0
    steps: int = 0
    voxels: int = 0
    parts: dict[str, float] | None = None


def _train_epoch(state: TrainState, shard, config: SsovTrainConfig, objective: Objective, epoch: int, device):
    state.model.train()
    totals, parts, started = EpochTotals(), {}, time.perf_counter()
    for batch in shard.iter_torch_batches(batch_size=config.batch_size, collate_fn=objective.collate(epoch)):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss, extra = objective.loss(state.model, batch)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        totals.loss += float(loss.detach())
        totals.steps += 1
        totals.voxels += int(batch["coords"].shape[0])
        for key, value in extra.items():
            parts[key] = parts.get(key, 0.0) + float(value)
    state.scheduler.step()
    keys = sorted(parts)
    sums = all_reduce(np.array([totals.loss, totals.steps, totals.voxels, *[parts[k] for k in keys]], np.float64), device)
    steps = max(sums[1], 1)
    metrics = {"epoch": epoch, "train_loss": float(sums[0] / steps), "steps": int(sums[1]), "voxels": int(sums[2]),
               "lr": float(state.scheduler.get_last_lr()[-1]), "seconds": time.perf_counter() - started,
               "resumed_from": state.resumed_from}  # fmt: skip
    metrics.update({key: float(sums[3 + i] / steps) for i, key in enumerate(keys)})
    return metrics


def worker_loop(config: SsovTrainConfig, model: torch.nn.Module, optimizer, objective: Objective, validate=None):
    """The Ray Train worker loop: restore, then per epoch train, optionally validate (rank 0, for
    monitoring), report with a checkpoint. Returns the metric history."""
    import ray.train
    import ray.train.torch

    rank = ray.train.get_context().get_world_rank()
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [cosine_factor(config.epochs)] * len(base_lrs))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = restore_state(TrainState(model, optimizer, scheduler, scaler), base_lrs)
    state.model = ray.train.torch.prepare_model(state.model)
    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(state.start_epoch, config.epochs):
        run_hook(config.epoch_hook, epoch, rank)
        metrics = _train_epoch(state, shard, config, objective, epoch, device)
        if validate is not None and rank == 0:
            metrics.update(validate(state.model))
        state.history.append(metrics)
        report_epoch(metrics, rank, state, epoch)
    return state.history


def export_last(config: SsovTrainConfig, checkpoint, metadata) -> str:
    """Write ``<run>/model`` from the run's last Ray checkpoint; returns its URI."""
    from openscene_ray.kernel.train_runtime import load_train_state
    from openscene_ray.models import build_model, save_checkpoint

    if checkpoint is None:
        raise RuntimeError(f"{config.run_dir}: training reported no checkpoint; nothing to export")
    with checkpoint.as_directory() as folder:
        state = load_train_state(folder)
    model = build_model(config.model)
    model.load_state_dict(state["model"])
    last = state["history"][-1] if state["history"] else {}
    extra = dict(metadata.extra, epoch=state["epoch"], train_loss=last.get("train_loss"))
    uri = storage.join(config.run_dir, "model")
    save_checkpoint(uri, model, config.model, metadata.model_copy(update={"extra": extra}))
    return uri
