"""Distillation loss (paper Sec. 3.2): 1 - cosine similarity to the fused 2D feature."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_distill_loss"]


def cosine_distill_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(1 - cos(pred, target))`` over the voxels where ``mask`` is true (all when ``None``).

    ``target`` may be fp16 (it is compared in ``pred``'s dtype). A mask that selects nothing
    raises: the batch carries no supervision, and a silent 0 would hide that.
    """
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be [M, C]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != pred.shape[:1]:
            raise ValueError(
                f"mask must be a bool tensor of shape [{pred.shape[0]}], got {mask.dtype} {tuple(mask.shape)}"
            )
        pred, target = pred[mask], target[mask]
    if pred.shape[0] == 0:
        raise ValueError("no voxel has a fused feature: the distillation loss is undefined")
    cosine = F.cosine_similarity(pred, target.to(pred.dtype), dim=1, eps=1e-8)
    return (1.0 - cosine).mean()
