"""UFF's losses (facts §4.4): contrastive cross-entropy over similarities, in Euclidean (cosine)
or ultrametric form, and the feature-norm regulariser.

For each positive pair ``k`` of a group, the logits are ``[s⁺_k, s⁻_{k,1} .. s⁻_{k,ratio}] / τ``
(τ = 0.1) and the target is 0: the positive must be the most similar. ``s`` is ``f_a · f_b`` of
unit features (Euclidean form) or the pair's ultrametric similarity (:mod:`.ultrametric`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss", "cosine_similarity", "norm_loss"]


def cosine_similarity(features: torch.Tensor, pairs: np.ndarray) -> torch.Tensor:
    """``f_a · f_b`` of unit features [S, C] for ``pairs`` int [..., 2] -> [...]."""
    index = torch.as_tensor(np.asarray(pairs, np.int64), device=features.device)
    return (features[index[..., 0]] * features[index[..., 1]]).sum(-1)


def contrastive_loss(positive: torch.Tensor, negative: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Cross-entropy of ``[s⁺, s⁻_1..s⁻_r] / τ`` with target 0; ``positive`` [G, P], ``negative`` [G, P*r]."""
    ratio = negative.shape[-1] // max(positive.shape[-1], 1)
    logits = torch.cat([positive.reshape(-1, 1), negative.reshape(-1, ratio)], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def norm_loss(norms: torch.Tensor) -> torch.Tensor:
    """``mean((‖f‖ - 1)²)`` of the features' pre-normalisation norms."""
    return ((norms - 1.0) ** 2).mean()
