"""SSOV's losses (pure torch; seed facts §3.4-3.5).

TMP (tri-modal contrastive pre-training), per batch of superpixels that received points:

* ``k`` = the mean 3D feature of each superpixel's paired points (not re-normalised);
* L_pi = InfoNCE(k, q) with τ = 0.07, q the L2-normalised mask embedding of the same superpixel,
  positives on the diagonal, the batch's other superpixels as negatives;
* L_pt = cross-entropy of ``k · T̂ᵀ / τ`` over the vocabulary's normalised text embeddings against
  a soft target: row-normalised ``0.2 · onehot(phrase) + 0.8 · cos(T_phrase, T_j) · [j in the
  phrase's dictionary group]``;
* total = 0.5 · L_pi + 0.5 · L_pt.

Annotation-free training: cross-entropy + Lovász-softmax (Berman et al. 2018, classes present in
the batch) over the points with a pseudo-label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE",
    "ce_lovasz_loss",
    "info_nce",
    "lovasz_softmax",
    "soft_text_target",
    "superpixel_means",
    "tmp_loss",
]

IGNORE = 255


def info_nce(k: torch.Tensor, q: torch.Tensor, temperature: float, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``k qᵀ / τ``: against the diagonal, or a soft ``target`` ``[S, Q]``."""
    logits = (k @ q.T) / temperature
    if target is None:
        target = torch.arange(k.shape[0], device=k.device)
    return F.cross_entropy(logits, target)


def soft_text_target(
    phrase: torch.Tensor, text: torch.Tensor, same_group: torch.Tensor, onehot_weight: float = 0.2
) -> torch.Tensor:
    """``[S, V]`` soft targets of superpixels labelled ``phrase`` ``[S]`` (rows sum to 1)."""
    similarity = (text @ text.T) * same_group.to(text.dtype)
    onehot = F.one_hot(phrase, text.shape[0]).to(text.dtype)
    target = onehot_weight * onehot + (1.0 - onehot_weight) * similarity[phrase]
    return target / target.sum(dim=1, keepdim=True)


def superpixel_means(
    point_features: torch.Tensor, pair_point: torch.Tensor, pair_superpixel: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k [S, D], has_points [S])``: the mean feature of each superpixel's paired points."""
    sums = torch.zeros(count, point_features.shape[1], dtype=point_features.dtype, device=point_features.device)
    sums.index_add_(0, pair_superpixel, point_features[pair_point])
    counts = torch.bincount(pair_superpixel, minlength=count).to(point_features.dtype)
    return sums / counts.clamp(min=1)[:, None], counts > 0


def tmp_loss(
    point_features: torch.Tensor,
    pair_point: torch.Tensor,
    pair_superpixel: torch.Tensor,
    mask_embeddings: torch.Tensor,
    phrases: torch.Tensor,
    text: torch.Tensor,
    same_group: torch.Tensor,
    temperature: float = 0.07,
    alpha_image: float = 0.5,
    alpha_text: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """TMP's loss for one batch and its two parts (see the module docstring).

    ``point_features`` ``[M, D]`` (the network's normalised output per voxel), ``pair_point`` /
    ``pair_superpixel`` ``[P]`` index rows of it and of the batch's ``S`` superpixels, whose mask
    embeddings ``[S, D]`` and phrases ``[S]`` are given; ``text`` ``[V, D]``, ``same_group`` ``[V, V]``."""
    k, keep = superpixel_means(point_features.float(), pair_point, pair_superpixel, mask_embeddings.shape[0])
    if not bool(keep.any()):
        zero = point_features.sum() * 0.0
        return zero, {"loss_image": 0.0, "loss_text": 0.0, "superpixels": 0}
    k, phrase = k[keep], phrases[keep]
    q = F.normalize(mask_embeddings[keep].float(), dim=1)
    text = F.normalize(text.float(), dim=1)
    loss_image = info_nce(k, q, temperature)
    loss_text = info_nce(k, text, temperature, soft_text_target(phrase, text, same_group))
    loss = alpha_image * loss_image + alpha_text * loss_text
    return loss, {"loss_image": float(loss_image.detach()), "loss_text": float(loss_text.detach()),
                  "superpixels": int(keep.sum())}  # fmt: skip


def _lovasz_gradient(foreground_sorted: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovász extension of the Jaccard loss at the sorted errors."""
    total = foreground_sorted.sum()
    intersection = total - foreground_sorted.cumsum(0)
    union = total + (1.0 - foreground_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if foreground_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax over ``[P, C]`` class probabilities, averaged over the classes present in ``labels``."""
    if probabilities.numel() == 0:
        return probabilities.sum() * 0.0
    losses = []
    for c in torch.unique(labels).tolist():
        foreground = (labels == c).to(probabilities.dtype)
        errors = (foreground - probabilities[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_gradient(foreground[order])))
    return torch.stack(losses).mean()


def ce_lovasz_loss(logits: torch.Tensor, labels: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """Cross-entropy + Lovász-softmax over the rows whose label is not ``ignore`` (SSOV's "lovasz")."""
    valid = labels != ignore
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logits, labels = logits[valid].float(), labels[valid].long()
    return F.cross_entropy(logits, labels) + lovasz_softmax(logits.softmax(dim=1), labels)
