"""Zero-shot prediction from point features and text embeddings (pure torch; paper Sec. 3.3).

Inputs may be numpy arrays or torch tensors (features often fp16); all arithmetic is float32 on
the features' device, in row chunks so fp16 feature tables are never copied whole to float32.
Outputs are torch tensors.

Logits. The reference scores ``feature · text^T`` with the raw (unnormalised) 3D output or fused
2D feature in fusion/distill mode, and normalises both only inside the ensemble rule. Per point
the argmax is invariant to the feature's norm, so predictions are identical either way; the norm
matters only when logits are summed over test-time-augmentation repeats, where raw logits weight
each repeat by its feature norm. Our default is cosine logits (``normalize=True``: every repeat
weighs the same, and the values are the cosine heatmaps of the paper's applications);
``normalize=False`` gives the reference's raw dot products. Text embeddings are used as given
(the text encoders already L2-normalise them).

Test-time augmentation: the caller sums *prompt-level* logits over repeats (``sum`` of
:func:`mode_logits` outputs) and then calls :func:`labels_from_logits`; with detailed prompts
this matches the reference, which sums the per-prompt logits and maps prompts to classes after
the argmax.

Prompt-to-class reduction (nuScenes' detailed prompts): a class's logit is the max over its
prompts, so the argmax class equals the class of the argmax prompt, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from openscene_ray.evaluation.metrics import MODES, UNKNOWN
from openscene_ray.kernel.features import FEATURE_CHUNK_ROWS

__all__ = [
    "MODES",
    "ensemble",
    "labels_from_logits",
    "max_text_cosine",
    "mode_logits",
    "predict",
    "reduce_prompts",
    "text_logits",
]

_EPS = 1e-6


def _tensor(x, device=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t if device is None else t.to(device)


def _features_and_text(features, text) -> tuple[torch.Tensor, torch.Tensor]:
    f = _tensor(features)
    t = _tensor(text, f.device).float()
    if f.ndim != 2 or t.ndim != 2 or f.shape[1] != t.shape[1]:
        raise ValueError(f"expected features [M,C] and text [P,C], got {tuple(f.shape)} and {tuple(t.shape)}")
    return f, t


def _normalized(chunk: torch.Tensor) -> torch.Tensor:
    chunk = chunk.float()
    return chunk / chunk.norm(dim=1, keepdim=True).clamp_min(_EPS)


def text_logits(features, text, normalize: bool = True) -> torch.Tensor:
    """float32 ``[M,P]`` scores of ``M`` features against ``P`` text embeddings.

    ``normalize=True``: cosine (features L2-normalised; a zero feature scores 0 everywhere);
    ``False``: the reference's raw dot product.
    """
    f, t = _features_and_text(features, text)
    out = torch.empty((f.shape[0], t.shape[0]), dtype=torch.float32, device=f.device)
    for start in range(0, f.shape[0], FEATURE_CHUNK_ROWS):
        chunk = f[start : start + FEATURE_CHUNK_ROWS]
        chunk = _normalized(chunk) if normalize else chunk.float()
        out[start : start + FEATURE_CHUNK_ROWS] = chunk @ t.T
    return out


def max_text_cosine(features, text) -> torch.Tensor:
    """float32 ``[M]``: each feature's best cosine over the text embeddings (the ensemble's confidence)."""
    f, t = _features_and_text(features, text)
    out = torch.empty(f.shape[0], dtype=torch.float32, device=f.device)
    for start in range(0, f.shape[0], FEATURE_CHUNK_ROWS):
        out[start : start + FEATURE_CHUNK_ROWS] = (_normalized(f[start : start + FEATURE_CHUNK_ROWS]) @ t.T).amax(dim=1)
    return out


def reduce_prompts(logits, prompt_to_class: Sequence[int] | None, num_classes: int | None = None) -> torch.Tensor:
    """``[M,P]`` prompt logits -> ``[M,K]`` class logits, max over the prompts of each class.

    ``prompt_to_class=None`` (one prompt per class) returns the logits unchanged. Every class
    must have at least one prompt.
    """
    x = _tensor(logits)
    if prompt_to_class is None:
        return x
    mapping = torch.as_tensor(list(prompt_to_class), dtype=torch.int64, device=x.device)
    if x.ndim != 2 or mapping.numel() != x.shape[1]:
        raise ValueError(f"prompt_to_class has {mapping.numel()} entries for logits of shape {tuple(x.shape)}")
    k = int(mapping.max()) + 1 if num_classes is None else num_classes
    if mapping.min() < 0 or mapping.max() >= k:
        raise ValueError(f"prompt_to_class values must lie in [0, {k})")
    missing = sorted(set(range(k)) - set(mapping.tolist()))
    if missing:
        raise ValueError(f"classes without a prompt: {missing}")
    out = torch.full((x.shape[0], k), float("-inf"), dtype=x.dtype, device=x.device)
    return out.scatter_reduce(1, mapping.expand(x.shape[0], -1), x, reduce="amax", include_self=True)


def _ensemble_choice(f2d, has2d, f3d, text) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(f2d, f3d, use_2d)`` as tensors on f3d's device, ``use_2d = has2d & (s2d > s3d)``."""
    f3 = _tensor(f3d)
    f2 = _tensor(f2d, f3.device)
    mask = _tensor(has2d, f3.device).bool()
    if f2.shape != f3.shape or mask.shape != (f3.shape[0],):
        raise ValueError(f"expected f2d, f3d [N,C] and has2d [N], got {tuple(f2.shape)}, {tuple(f3.shape)}, "
                         f"{tuple(mask.shape)}")
    return f2, f3, mask & (max_text_cosine(f2, text) > max_text_cosine(f3, text))


def ensemble(f2d, has2d, f3d, text) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2D-3D ensemble: per point, the fused 2D feature where it is more confident, else 3D.

    Confidence s = max_k cos(f, t_k). Returns ``(features float32 [N,C], use_2d bool [N])`` with
    ``use_2d = has2d & (s2d > s3d)``; ties go to 3D, as in the reference. Rows of ``f2d`` where
    ``has2d`` is false are never used.
    """
    f2, f3, use_2d = _ensemble_choice(f2d, has2d, f3d, text)
    out = f3.to(torch.float32, copy=True)
    out[use_2d] = f2[use_2d].float()
    return out, use_2d


def mode_logits(mode: str, text, *, f2d=None, has2d=None, f3d=None, normalize: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-level logits ``[N,P]`` for one evaluation mode and the ``known`` mask ``[N]``.

    fusion: ``f2d`` + ``has2d`` (points without a fused feature are unknown); distill: ``f3d``
    (all known); ensemble: all three (all known).
    """
    if mode == "fusion":
        if f2d is None or has2d is None:
            raise ValueError("fusion mode needs f2d and has2d")
        logits = text_logits(f2d, text, normalize)
        return logits, _tensor(has2d, logits.device).bool()
    if mode == "distill":
        if f3d is None:
            raise ValueError("distill mode needs f3d")
        logits = text_logits(f3d, text, normalize)
    elif mode == "ensemble":
        if f2d is None or has2d is None or f3d is None:
            raise ValueError("ensemble mode needs f2d, has2d and f3d")
        # row-wise choice between the two logit tables: never materialises a float32 feature copy
        f2, f3, use_2d = _ensemble_choice(f2d, has2d, f3d, text)
        logits = torch.where(use_2d[:, None], text_logits(f2, text, normalize), text_logits(f3, text, normalize))
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return logits, torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)


def labels_from_logits(logits, known=None, prompt_to_class: Sequence[int] | None = None,
                       num_classes: int | None = None) -> torch.Tensor:
    """int64 ``[N]`` class ids (argmax after prompt reduction), ``UNKNOWN`` (-1) where not ``known``."""
    pred = reduce_prompts(logits, prompt_to_class, num_classes).argmax(dim=1)
    if known is not None:
        pred[~_tensor(known, pred.device).bool()] = UNKNOWN
    return pred


def predict(mode: str, text, *, f2d=None, has2d=None, f3d=None, prompt_to_class: Sequence[int] | None = None,
            num_classes: int | None = None) -> torch.Tensor:
    """int64 ``[N]`` predictions of one mode (a single repeat); -1 = unknown (fusion mode only)."""
    logits, known = mode_logits(mode, text, f2d=f2d, has2d=has2d, f3d=f3d)
    return labels_from_logits(logits, known, prompt_to_class, num_classes)
