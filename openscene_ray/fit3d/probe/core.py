"""The probe's pure cores (no Ray): the variants' backbones, frozen features of labelled views, a
linear probe trained and scored on them, and their multi-view consistency.

The probe is FiT3D's ``BNHead``: BatchNorm over the frozen features, then a 1x1 conv to the classes;
its logits are upsampled bilinearly to the label maps (``label_scale`` times the view size, labels
resized nearest) for the cross-entropy (255 ignored) and for the predictions. Training: AdamW, a
linear warm-up (from 1e-6 of the rate), then poly decay; the views of the training splits in a fresh
seeded order every pass. Scores: mIoU, mAcc and overall accuracy over every pixel of the
evaluation splits' views (:mod:`openscene_ray.evaluation.metrics`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
from openscene_ray.fit3d.consistency import scene_consistency
from openscene_ray.fit3d.probe.config import ProbeConfig, ProbeSettings
from openscene_ray.fit3d.views import backbone_tokens
from openscene_ray.fusion.core import FusionParams
from openscene_ray.kernel import images
from openscene_ray.kernel.errors import InputError, describe_error
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import SceneRecord, load_scene, read_manifest
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.models.backbones import BACKBONES, BackboneConfig

__all__ = ["LinearHead", "ProbeData", "load_data", "probe_variant", "score_head", "train_head", "variant_configs"]

WARMUP_RATIO = 1e-6


def variant_configs(config: ProbeConfig) -> dict[str, BackboneConfig]:
    """The backbone of each variant: the fine-tuned one, the concatenation, and the original (the
    config's ``backbone.original``, else the one the export records)."""
    backbone = config.backbone
    out = {}
    for variant in config.variants:
        if variant == "fine_tuned":
            out[variant] = backbone
        elif variant == "concat":
            out[variant] = backbone.model_copy(update={"concat_original": True})
        elif not BACKBONES.get(backbone.name).fine_tuned:
            out[variant] = backbone
        else:
            out[variant] = backbone.original or _recorded_original(backbone.checkpoint)
    return out


def _recorded_original(checkpoint: str) -> BackboneConfig:
    from openscene_ray.models.backbone_io import EXPORT

    try:
        return BackboneConfig.model_validate(EXPORT.read_document(checkpoint)["original"])
    except (KeyError, ValueError) as exc:  # BackboneError is a ValueError
        raise InputError(f"{checkpoint}: no original recorded ({describe_error(exc)}); set backbone.original") from None


@dataclass
class ProbeData:
    """The labelled views of the training and evaluation splits, with their scenes' points."""

    train: list[tuple[SceneRecord, Any]]  # (record, Scene)
    eval: list[tuple[SceneRecord, Any]]
    num_classes: int


def load_data(config: ProbeConfig) -> ProbeData:
    records = read_manifest(config.manifest)
    num_classes = get_label_set(config.label_set).num_classes

    def scenes(splits: list[str]):
        chosen = [r for r in records if r.split in set(splits)]
        if not chosen:
            raise InputError(f"{config.manifest}: no scene has split {splits}")
        loaded = []
        for record in chosen:
            scene = load_scene(record, with_labels=True)
            scene.views = scene.views[:: config.view_stride]
            unlabelled = [v.frame_id for v in scene.views if v.label is None]
            if unlabelled:
                raise InputError(f"scene {record.scene_id!r}: views without a label map: {unlabelled[:5]}")
            loaded.append((record, scene))
        return loaded

    return ProbeData(scenes(config.train_splits), scenes(config.eval_splits), num_classes)


def _labels(view, num_classes: int, scale: float) -> torch.Tensor:
    width, height = max(1, round(view.width * scale)), max(1, round(view.height * scale))
    label = images.resize_nearest(view.label, width, height).astype(np.int64)
    label[label >= num_classes] = IGNORE_LABEL
    return torch.from_numpy(label)


class LinearHead(nn.Module):
    """FiT3D's BNHead: ``BatchNorm2d(D)`` then ``Conv2d(D -> K, 1x1)``."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.conv_seg = nn.Conv2d(dim, num_classes, kernel_size=1)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.conv_seg(self.bn(tokens))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _lr_factor(iteration: int, s: ProbeSettings) -> float:
    if iteration < s.warmup_iterations:
        return WARMUP_RATIO + (1 - WARMUP_RATIO) * iteration / s.warmup_iterations
    return max(0.0, 1 - iteration / s.iterations) ** s.poly_power


def train_head(tokens: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, s: ProbeSettings,
               device) -> tuple[LinearHead, list[float]]:  # fmt: skip
    """A probe trained on frozen ``tokens`` ``[D, h, w]`` against ``labels``; returns it and its losses."""
    torch.manual_seed(s.seed)
    head = LinearHead(int(tokens[0].shape[0]), num_classes).to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    rng, order, losses = np.random.default_rng(s.seed), [], []
    for iteration in range(s.iterations):
        for group in optimizer.param_groups:
            group["lr"] = s.lr * _lr_factor(iteration, s)
        if len(order) < s.batch_size:
            order += list(rng.permutation(len(tokens)))
        batch, order = order[: s.batch_size], order[s.batch_size :]
        x = torch.stack([tokens[i] for i in batch]).to(device)
        y = torch.stack([labels[i] for i in batch]).to(device)
        loss = F.cross_entropy(head(x, tuple(y.shape[-2:])), y, ignore_index=IGNORE_LABEL)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return head.eval(), losses


@torch.no_grad()
def score_head(head: LinearHead, tokens: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int) -> EvalCounts:
    """Confusion counts of the probe's predictions over every pixel of the views."""
    counts = EvalCounts.zeros(num_classes)
    device = next(head.parameters()).device
    for token, label in zip(tokens, labels):
        pred = head(token[None].to(device), tuple(label.shape))[0].argmax(0)
        counts = counts + EvalCounts.from_predictions(pred.cpu().numpy(), label.numpy(), num_classes)
    return counts


def _tokens(backbone, scenes) -> list[list[torch.Tensor]]:
    return [[t.cpu() for t in backbone_tokens(backbone, [v.color for v in scene.views])] for _, scene in scenes]


def _consistency(config: ProbeConfig, scenes, tokens) -> tuple[float, float, int]:
    total, shuffled, count = 0.0, 0.0, 0
    for (record, scene), scene_tokens in zip(scenes, tokens):
        params = FusionParams(record.cut_bound, record.visibility_threshold)
        part, part_shuffled, n = scene_consistency(scene.xyz, scene.views, scene_tokens, params,
                                                   config.consistency_pairs)  # fmt: skip
        total, shuffled, count = total + part, shuffled + part_shuffled, count + n
    return total, shuffled, count


def probe_variant(config: ProbeConfig, backbone_config: BackboneConfig, data: ProbeData, device) -> dict[str, Any]:
    """Consistency and linear-probe scores of one variant's frozen features."""
    from openscene_ray.models.backbone_io import build_backbone

    started = time.perf_counter()
    backbone = build_backbone(backbone_config).to(device).eval().requires_grad_(False)
    train_tokens, eval_tokens = _tokens(backbone, data.train), _tokens(backbone, data.eval)
    total, shuffled, count = _consistency(config, data.eval, eval_tokens) if config.consistency_pairs else (0, 0, 0)
    scale, k = config.probe.label_scale, data.num_classes
    train_labels = [_labels(v, k, scale) for _, scene in data.train for v in scene.views]
    eval_labels = [_labels(v, k, scale) for _, scene in data.eval for v in scene.views]
    flat_train = [t for scene in train_tokens for t in scene]
    head, losses = train_head(flat_train, train_labels, k, config.probe, device)
    counts = score_head(head, [t for scene in eval_tokens for t in scene], eval_labels, k)
    metrics = compute_metrics(counts.confusion, counts.unknown, openscene_compat=config.openscene_compat)
    return {"backbone": backbone.name, "feature_dim": backbone.feature_dim, "miou": metrics["miou"],
            "macc": metrics["macc"], "oacc": metrics["oacc"], "consistency": total / count if count else None,
            "consistency_shuffled": shuffled / count if count else None, "consistency_pairs": count,
            "final_loss": float(np.mean(losses[-20:])),
            "train_views": len(flat_train), "eval_views": len(eval_labels),
            "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
