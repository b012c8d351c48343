"""Segmentation metrics from confusion counts (pure numpy).

The unit of aggregation is :class:`EvalCounts`: a ``[K,K]`` int64 confusion matrix (rows =
ground truth, columns = prediction; the reference stores the transpose) plus a ``[K]`` vector of
points per ground-truth class whose prediction is *unknown* (:data:`UNKNOWN`, fusion mode: no fused
feature). Counts of several scenes or workers add exactly, so a distributed job sums them and
computes the metrics once.

Conventions, following OpenScene's ``util/metric.py`` (``confusion_matrix``, ``get_iou``,
``evaluate``):

* evaluated points: ground truth in ``[0, K)``; 255, -100 (any negative) and ``>= K`` are ignored;
* unknown predictions are excluded from IoU (the reference maps them to an extra class K and
  then crops the matrix to ``[:K,:K]``) but counted in the per-class accuracy denominator (the
  reference divides by ``(gt == k).sum()``);
* IoU_k = TP / (TP + FP + FN); Acc_k = TP / (ground-truth points of k, unknown included);
* a class is *present* when any evaluated point has it as ground truth (unknown ones included).

Default: mIoU and mAcc average over the present classes. ``openscene_compat=True`` reproduces the
reference's quirk: it sums over present classes but divides both mIoU and mAcc by K, so every
absent class counts as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from openscene_ray.kernel.scene import IGNORE_LABEL, UNKNOWN_LABEL

__all__ = [
    "IGNORE_LABEL",
    "MODES",
    "UNKNOWN",
    "Mode",
    "EvalCounts",
    "compute_metrics",
    "confusion_matrix",
    "unknown_counts",
]

UNKNOWN = UNKNOWN_LABEL
# The zero-shot evaluation modes (OpenScene §3.3): 2D fused features, the distilled 3D network,
# and their per-point ensemble.
Mode = Literal["fusion", "distill", "ensemble"]
MODES: tuple[Mode, ...] = get_args(Mode)


def _as_int_labels(values, name: str) -> np.ndarray:
    """Integer view of a label/prediction array; float arrays (reference .pth labels) must be integral."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values).reshape(-1)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: float labels must be finite integers")
        return arr.astype(np.int64)
    raise ValueError(f"{name}: expected an integer or float array, got dtype {arr.dtype}")


def _prepare(pred, gt, num_classes: int, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) restricted to evaluated points; validates predictions."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = _as_int_labels(pred, "pred")
    g = _as_int_labels(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt differ in length: {p.size} vs {g.size}")
    bad = (p != UNKNOWN) & ((p < 0) | (p >= num_classes))
    if bad.any():
        raise ValueError(
            f"pred has {int(bad.sum())} values outside [0, {num_classes}) that are not UNKNOWN ({UNKNOWN}), "
            f"e.g. {int(p[bad][0])}"
        )
    keep = (g != ignore) & (g >= 0) & (g < num_classes)
    return p[keep], g[keep]


def confusion_matrix(pred, gt, num_classes: int, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """int64 ``[K,K]`` counts, rows = ground truth, columns = prediction; unknown predictions left out."""
    p, g = _prepare(pred, gt, num_classes, ignore)
    known = p != UNKNOWN
    flat = g[known] * num_classes + p[known]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def unknown_counts(pred, gt, num_classes: int, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """int64 ``[K]``: evaluated points of each ground-truth class whose prediction is UNKNOWN."""
    p, g = _prepare(pred, gt, num_classes, ignore)
    return np.bincount(g[p == UNKNOWN], minlength=num_classes).astype(np.int64)


@dataclass(frozen=True)
class EvalCounts:
    """Confusion matrix plus per-class unknown counts; ``a + b`` aggregates scenes exactly."""

    confusion: np.ndarray
    unknown: np.ndarray

    def __post_init__(self):
        c = np.asarray(self.confusion, dtype=np.int64)
        u = np.asarray(self.unknown, dtype=np.int64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or u.shape != (c.shape[0],):
            raise ValueError(f"expected confusion [K,K] and unknown [K], got {c.shape} and {u.shape}")
        if (c < 0).any() or (u < 0).any():
            raise ValueError("counts must be non-negative")
        object.__setattr__(self, "confusion", c)
        object.__setattr__(self, "unknown", u)

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[0])

    @classmethod
    def zeros(cls, num_classes: int) -> EvalCounts:
        return cls(np.zeros((num_classes, num_classes), np.int64), np.zeros(num_classes, np.int64))

    @classmethod
    def from_predictions(cls, pred, gt, num_classes: int, ignore: int = IGNORE_LABEL) -> EvalCounts:
        """Counts for one scene (or any set of points)."""
        return cls(confusion_matrix(pred, gt, num_classes, ignore), unknown_counts(pred, gt, num_classes, ignore))

    def __add__(self, other: EvalCounts) -> EvalCounts:
        if not isinstance(other, EvalCounts):
            return NotImplemented
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot add counts over {self.num_classes} and {other.num_classes} classes")
        return EvalCounts(self.confusion + other.confusion, self.unknown + other.unknown)

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists of ints)."""
        return {"confusion": self.confusion.tolist(), "unknown": self.unknown.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> EvalCounts:
        return cls(np.asarray(data["confusion"], np.int64), np.asarray(data["unknown"], np.int64))


def compute_metrics(
    confusion,
    unknown_per_class=None,
    openscene_compat: bool = False,
    unknown_in_iou: bool = False,
) -> dict:
    """Per-class IoU/accuracy and their means from counts (see the module docstring).

    ``unknown_in_iou=True`` counts unknown points as false negatives of their class instead of
    leaving them out of IoU. Absent classes get NaN IoU/accuracy. A present class whose IoU
    denominator is 0 (all its points unknown, never predicted) gets IoU 0 (the reference crashes).
    Returns plain Python types: ``iou``/``acc``/``present`` lists of length K, ``miou``, ``macc``,
    ``oacc`` (overall accuracy, unknown points counted as wrong), ``num_points``, ``num_unknown``,
    ``num_present``, ``num_classes`` and the flags used.
    """
    conf = np.asarray(confusion, dtype=np.int64)
    k = conf.shape[0]
    unknown = np.zeros(k, np.int64) if unknown_per_class is None else np.asarray(unknown_per_class, np.int64)
    EvalCounts(conf, unknown)  # validates shapes and signs

    tp = np.diag(conf).astype(np.float64)
    gt_known = conf.sum(axis=1).astype(np.float64)
    pred_total = conf.sum(axis=0).astype(np.float64)
    gt_total = gt_known + unknown
    present = gt_total > 0

    fn = gt_known - tp + (unknown if unknown_in_iou else 0)
    union = tp + (pred_total - tp) + fn
    iou = np.full(k, np.nan)
    iou[present] = np.divide(tp[present], union[present], out=np.zeros(int(present.sum())), where=union[present] > 0)
    acc = np.full(k, np.nan)
    acc[present] = tp[present] / gt_total[present]

    n_present = int(present.sum())
    if n_present == 0:
        miou = macc = float("nan")
    elif openscene_compat:
        miou, macc = float(iou[present].sum() / k), float(acc[present].sum() / k)
    else:
        miou, macc = float(iou[present].mean()), float(acc[present].mean())
    total = float(gt_total.sum())
    return {
        "iou": iou.tolist(),
        "acc": acc.tolist(),
        "present": present.tolist(),
        "miou": miou,
        "macc": macc,
        "oacc": float(tp.sum() / total) if total > 0 else float("nan"),
        "num_points": int(total),
        "num_unknown": int(unknown.sum()),
        "num_present": n_present,
        "num_classes": k,
        "openscene_compat": openscene_compat,
        "unknown_in_iou": unknown_in_iou,
    }
