"""Normal Covering (NC) and View Consistency (VC) of a hierarchical segmentation (facts §4.6).

A segmentation of a view is a stack of label maps, one per level (threshold). Ground truth is an
id map per GT level (objects, parts; 0 = none); segments under ``min_pixels`` (20) are skipped.

- **NC**: for each GT segment, ``samples`` (100) random pixels of it; for each, the best IoU with
  the GT segment, over the levels, of the predicted segment containing the pixel. Averaged over
  the samples, then the segments (then the views, by the caller).
- **VC**, adapted to posed RGB-D: the partner view ``B`` of view ``A`` sees the same surface; ``A``'s
  depth and both poses map ``A``'s pixels to ``B``'s (:func:`~.views.correspondence`). For each NC
  sample, at the level that covered it best: a pixel of the GT segment that ``B`` also sees and
  that is not unassigned in ``B`` is drawn; ``B``'s segment containing its image is mapped back to
  ``A`` and compared (IoU over the corresponding pixels) with ``A``'s segment containing it.

As in the original evaluation, "unassigned" is a label like any other in NC and in ``A``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CoverSamples", "normal_covering", "view_consistency"]


@dataclass(frozen=True)
class CoverSamples:
    """NC's per-segment results of one view: segment ids, the best level of each sample [G, samples]."""

    segment_ids: np.ndarray
    levels: np.ndarray
    scores: np.ndarray  # [G] mean best IoU per segment

    @property
    def score(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else float("nan")


def _compact(labels: np.ndarray) -> np.ndarray:
    """Non-negative ids to index a table with: the labels themselves when small, else their ranks."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "ui" and (labels.size == 0 or (labels.min() >= 0 and labels.max() < 1 << 16)):
        return labels.astype(np.int64)
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _iou_table(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IoU [A, B] between the label sets, table ids of ``first``, table ids of ``second``)."""
    a, b = _compact(first), _compact(second)
    width = int(b.max()) + 1 if len(b) else 1
    height = int(a.max()) + 1 if len(a) else 1
    inter = np.bincount(a * width + b, minlength=height * width).reshape(height, width).astype(np.float64)
    union = inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), a, b


def normal_covering(
    gt: np.ndarray, stack: np.ndarray, rng: np.random.Generator, samples: int = 100, min_pixels: int = 20
) -> CoverSamples:
    """NC of one view: ``gt`` int [H, W] (0 = none), ``stack`` int [L, H, W] predicted labels."""
    flat = np.asarray(gt).reshape(-1)
    labels = np.asarray(stack).reshape(len(stack), -1)
    ids, counts = np.unique(flat, return_counts=True)
    segments = ids[(ids != 0) & (counts >= min_pixels)]
    tables = [_iou_table(flat, level) for level in labels]
    gt_ids = tables[0][1] if tables else _compact(flat)
    scores, chosen = [], []
    for segment in segments:
        pixels = np.flatnonzero(flat == segment)
        row = int(gt_ids[pixels[0]])
        sample = pixels[rng.integers(0, len(pixels), samples)]
        iou = np.stack([table[row, pred[sample]] for table, _, pred in tables])  # [L, samples]
        scores.append(iou.max(axis=0).mean())
        chosen.append(iou.argmax(axis=0))
    levels = np.stack(chosen) if chosen else np.zeros((0, samples), np.int64)
    return CoverSamples(segments, levels, np.asarray(scores, dtype=np.float64))


def view_consistency(
    gt: np.ndarray,
    stack_a: np.ndarray,
    stack_b: np.ndarray,
    pix_a: np.ndarray,
    pix_b: np.ndarray,
    unassigned_b: int,
    cover: CoverSamples,
    rng: np.random.Generator,
) -> float:
    """VC of view A against its partner B (nan when no sample can be drawn).

    ``pix_a``/``pix_b``: corresponding flat pixels; ``cover``: A's NC samples (their best levels).
    """
    gt_c = np.asarray(gt).reshape(-1)[pix_a]
    flat_a = np.asarray(stack_a).reshape(len(stack_a), -1)
    flat_b = np.asarray(stack_b).reshape(len(stack_b), -1)
    tables: dict[int, tuple] = {}
    scores = []
    for segment, levels in zip(cover.segment_ids, cover.levels):
        in_segment = gt_c == segment
        values = []
        for level in levels.tolist():
            if level not in tables:
                a, b = flat_a[level][pix_a], flat_b[level][pix_b]
                tables[level] = (*_iou_table(a, b), b != unassigned_b)
            table, a_ids, b_ids, assigned = tables[level]
            candidates = np.flatnonzero(in_segment & assigned)
            if len(candidates):
                pixel = candidates[rng.integers(0, len(candidates))]
                values.append(table[a_ids[pixel], b_ids[pixel]])
        if values:
            scores.append(float(np.mean(values)))
    return float(np.mean(scores)) if scores else float("nan")
