"""The per-worker Stage II loop run by Ray Train's ``TorchTrainer``.

Per step and sample (seed-systems facts §2.3): the lifted scene is rendered at the view's camera
under no-grad (the target ``[D, h, w]`` and its mask); image, target and mask are flipped together
with probability ``flip_prob``; the student (the whole backbone, DDP) computes features at token
resolution from the image resized to a patch multiple; target and mask are bilinearly downsampled
to the token grid (``align_corners=False``); the loss is the masked L1 over the batch. AdamW,
gradient clipping, no decay within an epoch.

An epoch is split into ``rounds_per_epoch`` rounds (:mod:`.data`); every round ends with one
``ray.train.report`` (rank 0 attaches the checkpoint), so checkpoints, resume and failure restarts
are the shared Train runtime's at round granularity (the runtime counts rounds as its epochs).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.fit3d.finetune.config import FinetuneConfig
from openscene_ray.fit3d.finetune.data import (
    SceneCache,
    load_sample,
    round_samples,
    sample_rng,
)
from openscene_ray.kernel.train_runtime import (
    TrainState,
    all_gather,
    all_reduce,
    report_epoch,
    restore_state,
    run_hook,
    unwrap,
    worker_context,
)

__all__ = ["LoopSettings", "build_optimizer", "student_loss", "train_loop_per_worker"]


@dataclass(frozen=True)
class LoopSettings:
    """Everything a worker needs (built once on the driver; rows are small dicts)."""

    config: FinetuneConfig
    rows: tuple[dict[str, Any], ...]


def build_optimizer(backbone: torch.nn.Module, config: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over every trainable backbone parameter."""
    return torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=config.lr,
                             weight_decay=config.weight_decay)  # fmt: skip


def student_loss(model, backbone, samples) -> tuple[torch.Tensor, float]:
    """``(masked L1 over the batch, mean mask fraction)``; samples of one image size run batched.

    ``backbone`` (unwrapped) preprocesses; ``model`` (maybe DDP-wrapped) runs the forward."""
    device = backbone.mean.device
    total, weight, covered = None, 0.0, []
    for size in sorted({tuple(s.image.shape) for s in samples}):
        group = [s for s in samples if tuple(s.image.shape) == size]
        output = model(backbone.preprocess(torch.stack([s.image for s in group]).to(device))).float()
        grid = tuple(output.shape[-2:])
        target = F.interpolate(torch.stack([s.target for s in group]).to(device), size=grid, mode="bilinear",
                               align_corners=False)  # fmt: skip
        mask = F.interpolate(torch.stack([s.mask for s in group])[:, None].to(device), size=grid, mode="bilinear",
                             align_corners=False)  # fmt: skip
        part = ((output - target).abs() * mask).sum()
        total = part if total is None else total + part
        weight += float(mask.sum()) * output.shape[1]
        covered += [float(m.mean()) for m in mask]
    return total / max(weight, 1e-12), float(np.mean(covered))


def _round(state: TrainState, settings: LoopSettings, cache: SceneCache, index: int, rank: int, world: int, device):
    """One round on this rank; its metrics, reduced over ranks."""
    config = settings.config
    epoch, round_index = divmod(index, config.rounds_per_epoch)
    mine = round_samples(len(settings.rows), config.seed, epoch, round_index, config.rounds_per_epoch, rank, world)
    backbone = unwrap(state.model)
    state.model.train()
    loss_sum, steps, images, coverage, started = 0.0, 0, 0, 0.0, time.perf_counter()
    for start in range(0, len(mine), config.batch_size):
        rows = [settings.rows[i] for i in mine[start : start + config.batch_size]]
        flips = [sample_rng(config.seed, epoch, r["scene_id"], r["frame_id"]).random() < config.flip_prob for r in rows]
        samples = [load_sample(r, cache, config.render_scale, f) for r, f in zip(rows, flips)]
        loss, covered = student_loss(state.model, backbone, samples)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(backbone.parameters(), config.grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        loss_sum, steps, images, coverage = loss_sum + float(loss.detach()), steps + 1, images + len(rows), coverage + covered
    seconds = time.perf_counter() - started
    totals = all_reduce(np.array([loss_sum, steps, images, coverage], np.float64), device)
    per_worker = all_gather([images / max(seconds, 1e-9), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                             seconds], device)  # fmt: skip
    return {"epoch": epoch, "round": round_index, "train_loss": float(totals[0] / max(totals[1], 1)),
            "mask_fraction": float(totals[3] / max(totals[1], 1)), "steps": int(totals[1]), "images": int(totals[2]),
            "global_step": int(state.scheduler.last_epoch), "lr": float(state.scheduler.get_last_lr()[0]),
            "worker_images_per_s": [w[0] for w in per_worker], "worker_peak_rss_mb": [w[1] for w in per_worker],
            "worker_train_seconds": [w[2] for w in per_worker], "resumed_from": state.resumed_from}  # fmt: skip


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train entry point; ``loop_config = {"settings": LoopSettings}``. Returns the metric history."""
    import ray.train
    import ray.train.torch

    from openscene_ray.models.backbone_io import build_backbone

    settings: LoopSettings = loop_config["settings"]
    config = settings.config
    rank, world, device = worker_context(config.cpus_per_worker)
    torch.manual_seed(config.seed)
    backbone = build_backbone(config.backbone).to(device).train()
    optimizer = build_optimizer(backbone, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # fp32 as FiT3D; the state keeps the runtime's shape
    state = restore_state(TrainState(backbone, optimizer, scheduler, scaler), [config.lr])
    state.model = ray.train.torch.prepare_model(state.model)
    cache = SceneCache(config.scene_cache, device, config.min_alpha, config.render_backend)
    for index in range(state.start_epoch, config.epochs * config.rounds_per_epoch):
        run_hook(config.epoch_hook, index, rank)
        metrics = _round(state, settings, cache, index, rank, world, device)
        state.history.append(metrics)
        report_epoch(metrics, rank, state, index)
    return state.history
