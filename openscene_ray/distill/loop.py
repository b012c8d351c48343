"""The per-worker distillation loop run by Ray Train's ``TorchTrainer``.

Every epoch on every rank: train on this rank's shard of the ``train`` dataset, optionally
validate on this rank's share of the val scenes, reduce the metrics across ranks, then call
``ray.train.report`` exactly once (a barrier; only rank 0's metrics and checkpoint are kept).
Rank 0 also refreshes ``<run>/best/`` when validation mIoU improves (see :mod:`.trainer`).

A checkpoint is one ``state.pt`` with the model, optimizer, LR scheduler, AMP scaler, the epoch
and the metric history; ``ray.train.get_checkpoint()`` restores it after a worker failure or a
rerun with the same run name and storage path, and training continues at the next epoch.
"""

from __future__ import annotations

import importlib
import math
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from openscene_ray.distill.data import SparseCollate
from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
from openscene_ray.evaluation.scene_eval import TextSpace, scene_counts
from openscene_ray.kernel import storage
from openscene_ray.kernel.manifest import load_points
from openscene_ray.models import (
    CheckpointMetadata,
    MinkUNet,
    build_model,
    cosine_distill_loss,
    save_checkpoint,
)
from openscene_ray.models.checkpoint import CONFIG_NAME, read_checkpoint_metadata

if TYPE_CHECKING:
    from openscene_ray.distill.job import DistillConfig

__all__ = ["STATE_FILE", "LoopSettings", "load_train_state", "poly_lambda", "save_train_state", "train_loop_per_worker"]

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class LoopSettings:
    """Everything a worker needs besides its dataset shard (built once on the driver)."""

    config: DistillConfig
    steps_per_epoch: int
    val_scenes: tuple[tuple[str, str], ...]  # (scene_id, points_uri), split by rank
    text: TextSpace | None  # None: no validation
    metadata: CheckpointMetadata  # recorded with the best model
    best_uri: str


def poly_lambda(total_steps: int, power: float):
    """LR factor at step ``t``: ``(1 - t / total_steps) ** power`` (the reference's poly decay)."""

    def factor(step: int) -> float:
        return max(0.0, 1.0 - step / total_steps) ** power

    return factor


def load_train_state(checkpoint_dir: str) -> dict[str, Any]:
    """The training state saved in a (local) Ray checkpoint folder.

    Loaded weights-only: a checkpoint folder in shared storage is untrusted, and a full unpickle
    of a replaced ``state.pt`` would run its payload inside the Train worker."""
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


def _unwrap(model: torch.nn.Module) -> MinkUNet:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(values: np.ndarray, device: torch.device) -> np.ndarray:
    """Element-wise sum over ranks (identity without a process group); dtype preserved."""
    tensor = torch.from_numpy(np.ascontiguousarray(values)).to(device)
    if _distributed():
        dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def _all_gather(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's ``values``, in rank order."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if not _distributed():
        return [tensor.tolist()]
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return [p.tolist() for p in parts]


def _run_hook(config: DistillConfig, epoch: int, rank: int) -> None:
    if config.epoch_hook is None:
        return
    module_name, _, attr = config.epoch_hook.name.partition(":")
    getattr(importlib.import_module(module_name), attr)(epoch=epoch, rank=rank, **config.epoch_hook.options)


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
    if _distributed():
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
    total = _all_reduce(np.concatenate([counts.confusion.reshape(-1), counts.unknown]), device)
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
    if math.isnan(miou) or miou <= _recorded_best(settings.best_uri):
        return False
    extra = dict(settings.metadata.extra, epoch=epoch, val_miou=miou, val_macc=metrics["val_macc"])
    metadata = settings.metadata.model_copy(update={"extra": extra})
    save_checkpoint(settings.best_uri, model, settings.config.model, metadata)
    return True


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train entry point; ``loop_config = {"settings": LoopSettings}``. Returns the metric history."""
    import ray.train
    import ray.train.torch

    settings: LoopSettings = loop_config["settings"]
    config = settings.config
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()
    use_amp = config.amp and device.type == "cuda"

    model = build_model(config.model)
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_train_state(folder)
        model.load_state_dict(state["model"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    lr_factor = poly_lambda(max(1, config.epochs * settings.steps_per_epoch), config.poly_power)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    start_epoch, resumed_from = 0, -1
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        # A rerun may change lr or epochs: continue the schedule from this config at the saved step.
        scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(scheduler.last_epoch)
        history, resumed_from = state["history"], state["epoch"]
        start_epoch = resumed_from + 1
    model = ray.train.torch.prepare_model(model)
    shard = ray.train.get_dataset_shard("train")

    for epoch in range(start_epoch, config.epochs):
        _run_hook(config, epoch, rank)
        model.train()
        collate = SparseCollate(
            config.voxel_size, config.model.in_channels, config.augment, config.seed, epoch, config.chunks
        )
        loss_sum, steps, voxels, supervised = 0.0, 0, 0, 0
        started = time.perf_counter()
        for batch in shard.iter_torch_batches(batch_size=config.batch_size, collate_fn=collate):
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                pred = model(batch["coords"], batch["feats"], int(batch["num_scenes"]))
            loss = _distill_loss(pred, batch["target"], batch["has_target"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(loss.detach())
            steps += 1
            voxels += int(batch["coords"].shape[0])
            supervised += int(batch["has_target"].sum())
        seconds = time.perf_counter() - started
        totals = _all_reduce(np.array([loss_sum, steps, voxels, supervised], np.float64), device)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        per_worker = _all_gather([voxels / max(seconds, 1e-9), peak_mb, seconds], device)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(totals[0] / max(totals[1], 1)),
            "steps": int(totals[1]),
            "global_step": int(scheduler.last_epoch),
            "lr": float(scheduler.get_last_lr()[0]),
            "voxels": int(totals[2]),
            "supervised_voxels": int(totals[3]),
            "worker_voxels_per_s": [w[0] for w in per_worker],
            "worker_peak_rss_mb": [w[1] for w in per_worker],
            "worker_train_seconds": [w[2] for w in per_worker],
            "resumed_from": resumed_from,
        }
        if device.type == "cuda":
            metrics["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        validate = settings.text is not None and config.validate_every > 0
        if validate and ((epoch + 1) % config.validate_every == 0 or epoch == config.epochs - 1):
            metrics.update(_validate(settings, _unwrap(model), rank, world, device))
            if rank == 0:
                metrics["new_best"] = _maybe_save_best(settings, _unwrap(model), epoch, metrics)
        history.append(metrics)
        _report(metrics, rank, model, optimizer, scheduler, scaler, epoch, history)
    return history


def _report(metrics, rank, model, optimizer, scheduler, scaler, epoch, history) -> None:
    """All ranks report (a barrier); rank 0 attaches the checkpoint."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="distill-ckpt-", ignore_cleanup_errors=True) as folder:
        save_train_state(folder, _unwrap(model), optimizer, scheduler, scaler, epoch, history)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def save_train_state(folder, model, optimizer, scheduler, scaler, epoch: int, history: list) -> None:
    """Write the resumable training state (tensors and plain containers only: it must load
    weights-only) into a local checkpoint folder."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "history": history,
    }
    torch.save(state, os.path.join(folder, STATE_FILE))

