"""Evaluation figures (confusion heatmap, per-class IoU bars) and a Markdown metrics table.

Figures are drawn with matplotlib's object API on the Agg backend (no pyplot state, safe in
worker threads), have a fixed pixel size and fixed axes margins, and are written as PNG through
:func:`openscene_ray.kernel.storage.write_bytes`. Each call returns a :class:`PlotInfo` with the image
size and the pixel box of the data area, so the figure can be read back programmatically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from openscene_ray.kernel import storage

__all__ = [
    "BAR_COLOR",
    "HEATMAP_CMAP",
    "MIOU_COLOR",
    "PlotInfo",
    "confusion_heatmap_png",
    "iou_bar_chart_png",
    "markdown_table",
    "normalize_confusion",
]

BAR_COLOR = "#1f77b4"
MIOU_COLOR = "#d62728"
HEATMAP_CMAP = "viridis"
_DPI = 100
_ANNOTATE_MAX_CLASSES = 25


@dataclass(frozen=True)
class PlotInfo:
    """PNG size in pixels and the data area ``(left, top, right, bottom)`` in image pixels (y down)."""

    width: int
    height: int
    axes_box: tuple[float, float, float, float]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _new_figure(size: tuple[int, int]) -> Figure:
    width, height = size
    if width < 100 or height < 100:
        raise ValueError(f"figure size must be at least 100x100 pixels, got {width}x{height}")
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, ax, uri: str) -> PlotInfo:
    fig.canvas.draw()
    width, height = (int(round(v)) for v in fig.canvas.get_width_height())
    box = ax.get_window_extent()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    storage.write_bytes(uri, buffer.getvalue())
    return PlotInfo(width, height, (float(box.x0), float(height - box.y1), float(box.x1), float(height - box.y0)))


def _check_names(num_classes: int, class_names: Sequence[str]) -> list[str]:
    names = list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return names


def _font_size(num_classes: int) -> float:
    return float(min(10.0, max(4.0, 300.0 / max(num_classes, 1))))


def normalize_confusion(confusion, normalize: str | None = "true") -> np.ndarray:
    """float64 confusion normalised over ``"true"`` (rows: ground truth), ``"pred"`` (columns),
    ``"all"``, or ``None`` (raw counts). Empty rows/columns stay 0."""
    c = np.asarray(confusion, dtype=np.float64)
    if normalize is None:
        return c
    if normalize == "true":
        denom = c.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        denom = c.sum(axis=0, keepdims=True)
    elif normalize == "all":
        denom = np.array([[c.sum()]])
    else:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    return np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)


def confusion_heatmap_png(confusion, class_names: Sequence[str], path_or_uri: str, normalize: str | None = "true",
                          size: tuple[int, int] = (1000, 900)) -> PlotInfo:
    """Confusion matrix as a viridis heatmap (rows = ground truth, columns = prediction).

    Normalised values use a fixed colour scale 0..1, raw counts 0..max. Cells carry their values
    when there are at most 25 classes.
    """
    values = normalize_confusion(confusion, normalize)
    k = values.shape[0]
    names = _check_names(k, class_names)
    vmax = 1.0 if normalize is not None else max(float(values.max()), 1.0)
    fig = _new_figure(size)
    ax = fig.add_axes((0.2, 0.2, 0.62, 0.72))
    cax = fig.add_axes((0.85, 0.2, 0.03, 0.72))
    image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="auto")
    fig.colorbar(image, cax=cax)
    fs = _font_size(k)
    ax.set_xticks(range(k), names, rotation=90, fontsize=fs)
    ax.set_yticks(range(k), names, fontsize=fs)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    title = {"true": "recall (rows sum to 1)", "pred": "precision (columns sum to 1)", "all": "fraction of points"}
    ax.set_title(f"Confusion matrix: {title.get(normalize, 'point counts')}")
    if k <= _ANNOTATE_MAX_CLASSES:
        for (i, j), v in np.ndenumerate(values):
            text = f"{v:.2f}" if normalize is not None else f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fs * 0.8,
                    color="black" if v > 0.6 * vmax else "white")
    return _save(fig, ax, path_or_uri)


def iou_bar_chart_png(per_class_iou: Sequence[float], class_names: Sequence[str], path_or_uri: str,
                      miou: float | None = None, size: tuple[int, int] = (1200, 600)) -> PlotInfo:
    """Per-class IoU bars (colour :data:`BAR_COLOR`) on a fixed 0..1 axis, mIoU as a dashed line.

    Classes with NaN IoU (absent from the ground truth) get no bar and an "n/a" mark.
    """
    iou = np.asarray(per_class_iou, dtype=np.float64)
    k = iou.size
    names = _check_names(k, class_names)
    fig = _new_figure(size)
    ax = fig.add_axes((0.07, 0.3, 0.9, 0.62))
    absent = ~np.isfinite(iou)
    ax.bar(np.arange(k), np.where(absent, 0.0, iou), width=0.7, color=BAR_COLOR, zorder=2)
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(0.0, 1.0)
    ax.yaxis.grid(True, color="#dddddd", zorder=0)
    fs = _font_size(k)
    ax.set_xticks(range(k), names, rotation=90, fontsize=fs)
    ax.set_ylabel("IoU")
    for x in np.flatnonzero(absent):
        ax.text(x, 0.02, "n/a", ha="center", va="bottom", rotation=90, fontsize=fs, color="#888888")
    title = "Per-class IoU"
    if miou is not None and math.isfinite(miou):
        ax.axhline(miou, color=MIOU_COLOR, linestyle="--", linewidth=1.5, zorder=3)
        title += f" (mIoU {100 * miou:.1f}%, dashed)"
    ax.set_title(title)
    return _save(fig, ax, path_or_uri)


def _pct(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def markdown_table(metrics: dict, class_names: Sequence[str]) -> str:
    """A Markdown table of per-class IoU and accuracy (percent) from :func:`compute_metrics` output,
    with the means in the last row; absent classes show "–"."""
    names = _check_names(len(metrics["iou"]), class_names)
    lines = ["| class | IoU (%) | Acc (%) |", "|---|---:|---:|"]
    for name, iou, acc in zip(names, metrics["iou"], metrics["acc"]):
        lines.append(f"| {name} | {_pct(iou)} | {_pct(acc)} |")
    if metrics.get("openscene_compat"):
        label = f"mean (sum over present / {metrics['num_classes']}, openscene-compatible)"
    else:
        label = f"mean ({metrics['num_present']} of {metrics['num_classes']} classes present)"
    lines.append(f"| **{label}** | **{_pct(metrics['miou'])}** | **{_pct(metrics['macc'])}** |")
    return "\n".join(lines) + "\n"
