"""The per-worker distillation loop run by Ray Train's ``TorchTrainer``.

Every epoch on every rank: train on this rank's shard of the ``train`` dataset, optionally
validate on this rank's share of the val scenes, reduce the metrics across ranks, then call
``ray.train.report`` exactly once (a barrier; only rank 0's metrics and checkpoint are kept).
Rank 0 also refreshes ``<run>/best/`` when validation mIoU improves (see :mod:`.trainer`).

Checkpoints, resume and failure restarts are the shared Train runtime's
(:mod:`openscene_ray.kernel.train_runtime`): training continues at the epoch after the latest
checkpoint after a worker failure or a rerun with the same run name and storage path.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from openscene_ray.distill.config import DistillConfig
from openscene_ray.distill.data import SparseCollate
from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
from openscene_ray.evaluation.scoring import scene_counts
from openscene_ray.kernel import storage
from openscene_ray.kernel.manifest import load_points
from openscene_ray.kernel.text import TextSpace
from openscene_ray.kernel.train_runtime import (
    TrainState,
    all_gather,
    all_reduce,
    distributed,
    poly_lambda,
    report_epoch,
    restore_state,
    run_hook,
    unwrap,
    worker_context,
)
from openscene_ray.models import (
    CheckpointMetadata,
    MinkUNet,
    build_model,
    cosine_distill_loss,
    save_checkpoint,
)
from openscene_ray.models.checkpoint import CONFIG_NAME, read_checkpoint_metadata

__all__ = ["LoopSettings", "train_loop_per_worker"]


@dataclass(frozen=True)
class LoopSettings:
    """Everything a worker needs besides its dataset shard (built once on the driver)."""

    config: DistillConfig
    steps_per_epoch: int
    val_scenes: tuple[tuple[str, str], ...]  # (scene_id, points_uri), split by rank
    text: TextSpace | None  # None: no validation
    metadata: CheckpointMetadata  # recorded with the best model


def _distill_loss(pred: torch.Tensor, target: torch.Tensor, has_target: torch.Tensor) -> torch.Tensor:
    """Cosine loss over voxels with a fused feature; a batch without any contributes a zero gradient
    (skipping it on one rank would leave the others waiting in DDP's all-reduce)."""
    if not bool(has_target.any()):
        return pred.sum() * 0.0
    return cosine_distill_loss(pred.float(), target, has_target)


def _validate(settings: LoopSettings, model: MinkUNet, rank: int, world: int, device: torch.device) -> dict[str, float]:
    """mIoU/mAcc over all val scenes: scene i on rank i % world, counts summed over ranks.

    Every rank first takes rank 0's BatchNorm statistics (DDP syncs buffers only at the start of
    a forward, so after the last step each rank holds its own), so all ranks score exactly the
    model that rank 0 checkpoints and exports.
    """
    config, text = settings.config, settings.text
    if distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    counts = EvalCounts.zeros(text.num_classes)
    model.eval()
    for _scene_id, points_uri in settings.val_scenes[rank::world]:
        xyz, rgb, labels = load_points(points_uri)
        counts = counts + scene_counts(
            "distill", labels, text, model=model, xyz=xyz, rgb=rgb, voxel_size=config.voxel_size, augment=config.augment
        )
    k = text.num_classes
    total = all_reduce(np.concatenate([counts.confusion.reshape(-1), counts.unknown]), device)
    metrics = compute_metrics(total[: k * k].reshape(k, k), total[k * k :], openscene_compat=config.openscene_compat)
    return {"val_miou": metrics["miou"], "val_macc": metrics["macc"], "val_oacc": metrics["oacc"]}


def _recorded_best(best_uri: str) -> float:
    """The val mIoU recorded with the model in ``best/`` (-inf when there is none yet)."""
    if not storage.exists(storage.join(best_uri, CONFIG_NAME)):
        return -math.inf
    return float(read_checkpoint_metadata(best_uri).extra.get("val_miou", -math.inf))


def _maybe_save_best(settings: LoopSettings, model: MinkUNet, epoch: int, metrics: dict[str, float]) -> bool:
    """Rank 0: replace ``best/`` when this epoch's val mIoU beats the one recorded there."""
    miou = metrics["val_miou"]
    if math.isnan(miou) or miou <= _recorded_best(settings.config.best_uri):
        return False
    extra = dict(settings.metadata.extra, epoch=epoch, val_miou=miou, val_macc=metrics["val_macc"])
    metadata = settings.metadata.model_copy(update={"extra": extra})
    save_checkpoint(settings.config.best_uri, model, settings.config.model, metadata)
    return True


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train entry point; ``loop_config = {"settings": LoopSettings}``. Returns the metric history."""
    import ray.train
    import ray.train.torch

    settings: LoopSettings = loop_config["settings"]
    config = settings.config
    rank, world, device = worker_context(config.cpus_per_worker)
    model = build_model(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    lr_factor = poly_lambda(max(1, config.epochs * settings.steps_per_epoch), config.poly_power)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    state = restore_state(TrainState(model, optimizer, scheduler, scaler), [config.lr])
    state.model = ray.train.torch.prepare_model(state.model)
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(state.start_epoch, config.epochs):
        run_hook(config.epoch_hook, epoch, rank)
        metrics = _train_epoch(state, shard, config, epoch, device)
        validate = settings.text is not None and config.validate_every > 0
        if validate and ((epoch + 1) % config.validate_every == 0 or epoch == config.epochs - 1):
            metrics.update(_validate(settings, unwrap(state.model), rank, world, device))
            if rank == 0:
                metrics["new_best"] = _maybe_save_best(settings, unwrap(state.model), epoch, metrics)
        state.history.append(metrics)
        report_epoch(metrics, rank, state, epoch)
    return state.history


def _train_epoch(state: TrainState, shard, config: DistillConfig, epoch: int, device: torch.device) -> dict[str, Any]:
    """One pass over this rank's rows; the epoch's metrics, reduced over ranks."""
    use_amp = state.scaler.is_enabled()
    state.model.train()
    collate = SparseCollate(config.voxel_size, config.model.in_channels, config.augment, config.seed, epoch, config.chunks)
    loss_sum, steps, voxels, supervised = 0.0, 0, 0, 0
    started = time.perf_counter()
    for batch in shard.iter_torch_batches(batch_size=config.batch_size, collate_fn=collate):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            pred = state.model(batch["coords"], batch["feats"], int(batch["num_scenes"]))
        loss = _distill_loss(pred, batch["target"], batch["has_target"])
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        loss_sum += float(loss.detach())
        steps += 1
        voxels += int(batch["coords"].shape[0])
        supervised += int(batch["has_target"].sum())
    seconds = time.perf_counter() - started
    totals = all_reduce(np.array([loss_sum, steps, voxels, supervised], np.float64), device)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_worker = all_gather([voxels / max(seconds, 1e-9), peak_mb, seconds], device)
    metrics: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": float(totals[0] / max(totals[1], 1)),
        "steps": int(totals[1]),
        "global_step": int(state.scheduler.last_epoch),
        "lr": float(state.scheduler.get_last_lr()[0]),
        "voxels": int(totals[2]),
        "supervised_voxels": int(totals[3]),
        "worker_voxels_per_s": [w[0] for w in per_worker],
        "worker_peak_rss_mb": [w[1] for w in per_worker],
        "worker_train_seconds": [w[2] for w in per_worker],
        "resumed_from": state.resumed_from,
    }
    if device.type == "cuda":
        metrics["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics
