"""Scores to colours and legends for the page (pure numpy).

Query mode: a point's score is the cosine of its feature to the query embedding; colours are the
paper's blue-to-yellow palette (:func:`~openscene_ray.kernel.visual.heatmap_colors`) over the
query's own min..max among the drawn points. The threshold (0..1 of that range) keeps points
below it in their own colours, greyed, so matching regions light up on the scene. Points without
a feature are grey.

Label mode: per point, the class whose prompts score highest (max over a class's prompts), in
:func:`~openscene_ray.kernel.visual.label_palette` colours; points without a feature are grey.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from openscene_ray.kernel.visual import (
    UNKNOWN_COLOR,
    heatmap_colors,
    label_colors,
    label_palette,
)
from openscene_ray.query.config import MAX_QUERY_CHARS

__all__ = [
    "HeatView",
    "box",
    "LabelView",
    "class_scores",
    "heat_legend",
    "heat_view",
    "label_legend",
    "label_view",
    "top_classes",
    "validate_query",
]


def box(inner: str, style: str = "") -> str:
    """A block of the panel (its text size and margins); ``inner`` is HTML, already escaped."""
    return f"<div style='font-size:0.85em;padding:0 0.75em{';' + style if style else ''}'>{inner}</div>"


def validate_query(text: str | None) -> str:
    """The query text stripped; ValueError (a message for the page) when empty or too long."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the query is empty: type what to look for, e.g. 'somewhere to sit'")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"the query has {len(text)} characters; the limit is {MAX_QUERY_CHARS} "
                         "(CLIP reads 77 tokens)")
    return text


@dataclass(frozen=True)
class HeatView:
    colors: np.ndarray  # uint8 [M, 3]
    low: float  # cosine at the blue end (nan when no point has a feature)
    high: float  # cosine at the yellow end
    cut: float  # cosine at the threshold
    above: int  # points at or above the threshold


def _greyed(rgb: np.ndarray) -> np.ndarray:
    grey = np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat((0.35 * grey + 90.0)[:, None], 3, axis=1).round().astype(np.uint8)


def heat_view(scores: np.ndarray, rgb: np.ndarray, threshold: float = 0.0) -> HeatView:
    """Colours of one query's scores ``[M]`` (NaN: no feature); ``threshold`` in [0, 1]."""
    scores = np.asarray(scores, np.float32).reshape(-1)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the threshold must lie in [0, 1], got {threshold}")
    finite = np.isfinite(scores)
    low = float(scores[finite].min()) if finite.any() else float("nan")
    high = float(scores[finite].max()) if finite.any() else float("nan")
    colors = heatmap_colors(scores, low if finite.any() else None, high if finite.any() else None)
    cut = low + threshold * (high - low) if finite.any() else float("nan")
    below = finite & (scores < cut) if threshold > 0 else np.zeros_like(finite)
    colors[below] = _greyed(np.asarray(rgb)[below])
    return HeatView(colors, low, high, cut, int((finite & ~below).sum()))


def _swatch(rgb) -> str:
    r, g, b = (int(c) for c in rgb)
    return (f'<span style="display:inline-block;width:0.9em;height:0.9em;margin-right:0.35em;'
            f'vertical-align:middle;background:rgb({r},{g},{b});border-radius:2px"></span>')


def heat_legend(view: HeatView, label: str, threshold: float) -> str:
    """An HTML legend: the palette as a gradient bar from the low to the high cosine."""
    stops = heatmap_colors(np.linspace(0.0, 1.0, 9), 0.0, 1.0)
    gradient = ", ".join(f"rgb({r},{g},{b}) {100 * i / 8:.0f}%" for i, (r, g, b) in enumerate(stops))
    if not np.isfinite(view.low):
        return box(f"<b>{html.escape(label)}</b>: no drawn point has a feature")
    shown = (f"{view.above:,} points at or above {view.cut:.3f}, the rest in scene colours" if threshold > 0
             else f"{view.above:,} points with a feature")
    return (f'<div style="font-size:0.85em;padding:0 0.75em"><b>{html.escape(label)}</b> ({shown})'
            f'<div style="height:0.8em;margin:0.3em 0;border-radius:3px;background:linear-gradient(to right, '
            f'{gradient})"></div><div style="display:flex;justify-content:space-between"><span>{view.low:.3f}</span>'
            f"<span>cosine</span><span>{view.high:.3f}</span></div>"
            f"<div>{_swatch(UNKNOWN_COLOR)}no feature</div></div>")


def class_scores(prompt_scores: np.ndarray, prompt_to_class, num_classes: int) -> np.ndarray:
    """``[P, M]`` prompt cosines (NaN: no feature) -> float32 ``[M, K]`` class scores, the max over
    each class's prompts."""
    prompt_scores = np.asarray(prompt_scores, np.float32)
    mapping = np.asarray(prompt_to_class, np.int64)
    if prompt_scores.ndim != 2 or len(mapping) != prompt_scores.shape[0]:
        raise ValueError(f"{len(mapping)} prompts for prompt scores of shape {prompt_scores.shape}")
    out = np.full((prompt_scores.shape[1], num_classes), -np.inf, np.float32)
    for p, k in enumerate(mapping):
        np.fmax(out[:, k], prompt_scores[p], out=out[:, k])
    out[~np.isfinite(prompt_scores).any(axis=0)] = np.nan
    return out


@dataclass(frozen=True)
class LabelView:
    colors: np.ndarray  # uint8 [M, 3]
    pred: np.ndarray  # int64 [M], -1 where there is no feature
    counts: np.ndarray  # int64 [K] drawn points per predicted class


def label_view(scores: np.ndarray) -> LabelView:
    """Argmax classes of ``[M, K]`` class scores and their colours."""
    scores = np.asarray(scores, np.float32)
    known = np.isfinite(scores).all(axis=1)
    pred = np.full(len(scores), -1, np.int64)
    pred[known] = np.argmax(scores[known], axis=1)
    counts = np.bincount(pred[known], minlength=scores.shape[1])
    return LabelView(label_colors(pred, scores.shape[1]), pred, counts)


def label_legend(view: LabelView, class_names, title: str, limit: int = 40) -> str:
    """An HTML legend of the predicted classes, most points first (at most ``limit``)."""
    palette = label_palette(len(class_names))
    present = [k for k in np.argsort(-view.counts, kind="stable") if view.counts[k] > 0]
    rows = [f"<div>{_swatch(palette[k])}{html.escape(class_names[k])} <span style='opacity:0.6'>"
            f"{int(view.counts[k])}</span></div>" for k in present[:limit]]
    if len(present) > limit:
        rows.append(f"<div>… and {len(present) - limit} more classes</div>")
    if (view.pred < 0).any():
        rows.append(f"<div>{_swatch(UNKNOWN_COLOR)}no feature <span style='opacity:0.6'>{int((view.pred < 0).sum())}"
                    "</span></div>")
    return box(f"<b>{html.escape(title)}</b>{''.join(rows)}", "max-height:16em;overflow-y:auto")


def top_classes(row: np.ndarray, class_names, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` best classes of one point's class scores ``[K]`` with their cosines (empty when
    the point has no feature)."""
    row = np.asarray(row, np.float32)
    if not np.isfinite(row).all():
        return []
    order = np.argsort(-row, kind="stable")[:k]
    return [(class_names[i], float(row[i])) for i in order]
