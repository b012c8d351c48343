"""The per-worker 2D training loop run by Ray Train's ``TorchTrainer``.

Every epoch on every rank: train on this rank's shard of the ``train`` view rows, optionally score
this rank's share of the val views (2D mIoU over every pixel, counts reduced over ranks), then call
``ray.train.report`` exactly once (a barrier; rank 0 attaches the checkpoint). Checkpoints,
resume and failure restarts are the shared Train runtime's
(:mod:`openscene_ray.kernel.train_runtime`).

Optimisation as LSeg: the image encoder (``pretrained``) at the base learning rate, the decoder
(``scratch``) at ``decoder_lr_mult`` times it, poly decay per epoch; SGD (momentum, weight decay)
or AdamW. The text embeddings are fixed inputs (a frozen text encoder).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
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
from openscene_ray.models.lseg import LSegConfig, LSegNet, build_lseg
from openscene_ray.train2d.config import Train2DConfig
from openscene_ray.train2d.data import AugmentSettings, ViewCollate, read_view
from openscene_ray.train2d.objective import segmentation_loss, view_counts

__all__ = ["LoopSettings", "build_optimizer", "train_loop_per_worker"]

VAL_BATCH = 2  # views per validation forward (the flip doubles it)


@dataclass(frozen=True)
class LoopSettings:
    """Everything a worker needs besides its dataset shard (built once on the driver)."""

    config: Train2DConfig
    model: LSegConfig
    text: np.ndarray  # float32 [P, C] prompt embeddings
    prompt_to_class: tuple[int, ...]
    num_classes: int
    val_rows: tuple[dict[str, Any], ...]  # split by rank


def build_optimizer(net: LSegNet, config: Train2DConfig) -> tuple[torch.optim.Optimizer, list[float]]:
    """The optimizer over two groups (backbone, decoder at the multiple) and its base LRs."""
    lrs = [config.backbone_lr(), config.backbone_lr() * config.decoder_lr_mult]
    groups = [{"params": net.backbone_parameters(), "lr": lrs[0]}, {"params": net.decoder_parameters(), "lr": lrs[1]}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay), lrs
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay), lrs


def _validate(settings: LoopSettings, net: LSegNet, rank: int, world: int, text: torch.Tensor) -> dict[str, float]:
    """2D mIoU/mAcc/oAcc over every pixel of the val views: view i on rank i % world.

    Every rank first takes rank 0's BatchNorm statistics, so all ranks score the model that rank
    0 checkpoints and exports."""
    if distributed():
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)
    k = settings.num_classes
    counts = EvalCounts.zeros(k)
    net.eval()
    mine = settings.val_rows[rank::world]
    for start in range(0, len(mine), VAL_BATCH):
        views = [read_view(row, k) for row in mine[start : start + VAL_BATCH]]
        colors, labels = np.stack([c for c, _ in views]), np.stack([lab for _, lab in views])
        counts = counts + view_counts(net, colors, labels, text, settings.prompt_to_class, k, settings.config.flip)
    net.train()
    total = all_reduce(np.concatenate([counts.confusion.reshape(-1), counts.unknown]), text.device)
    metrics = compute_metrics(total[: k * k].reshape(k, k), total[k * k :], openscene_compat=settings.config.openscene_compat)
    return {"val_miou": metrics["miou"], "val_macc": metrics["macc"], "val_oacc": metrics["oacc"]}


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train entry point; ``loop_config = {"settings": LoopSettings}``. Returns the metric history."""
    import ray.train
    import ray.train.torch

    settings: LoopSettings = loop_config["settings"]
    config = settings.config
    rank, world, device = worker_context(config.cpus_per_worker)
    torch.manual_seed(config.seed)
    net = build_lseg(settings.model).to(device)
    optimizer, base_lrs = build_optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(config.epochs, config.poly_power))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    state = restore_state(TrainState(net, optimizer, scheduler, scaler), base_lrs)
    state.model = ray.train.torch.prepare_model(state.model)
    text = torch.from_numpy(settings.text).to(device)
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(state.start_epoch, config.epochs):
        run_hook(config.epoch_hook, epoch, rank)
        metrics = _train_epoch(state, shard, settings, epoch, text)
        state.scheduler.step()
        last = epoch == config.epochs - 1
        if settings.val_rows and config.validate_every > 0 and ((epoch + 1) % config.validate_every == 0 or last):
            metrics.update(_validate(settings, unwrap(state.model), rank, world, text))
        state.history.append(metrics)
        report_epoch(metrics, rank, state, epoch)
    return state.history


def _train_epoch(state: TrainState, shard, settings: LoopSettings, epoch: int, text: torch.Tensor) -> dict[str, Any]:
    """One pass over this rank's view rows; the epoch's metrics, reduced over ranks."""
    config, device = settings.config, text.device
    augment = AugmentSettings(config.crop_size, config.base_size, config.scale_range)
    collate = ViewCollate(augment, settings.num_classes, config.seed, epoch)
    use_amp = state.scaler.is_enabled()
    state.model.train()
    loss_sum, steps, images = 0.0, 0, 0
    started = time.perf_counter()
    for batch in shard.iter_torch_batches(batch_size=config.batch_size, collate_fn=collate):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            features = state.model(batch["images"])
        loss = segmentation_loss(features.float(), text, batch["labels"], settings.prompt_to_class, settings.num_classes)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        loss_sum += float(loss.detach())
        steps += 1
        images += int(batch["images"].shape[0])
    seconds = time.perf_counter() - started
    totals = all_reduce(np.array([loss_sum, steps, images], np.float64), device)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_worker = all_gather([images / max(seconds, 1e-9), peak_mb, seconds], device)
    return {
        "epoch": epoch,
        "train_loss": float(totals[0] / max(totals[1], 1)),
        "steps": int(totals[1]),
        "lr": float(state.scheduler.get_last_lr()[0]),
        "images": int(totals[2]),
        "worker_images_per_s": [w[0] for w in per_worker],
        "worker_peak_rss_mb": [w[1] for w in per_worker],
        "worker_train_seconds": [w[2] for w in per_worker],
        "resumed_from": state.resumed_from,
    }
