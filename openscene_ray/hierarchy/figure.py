"""A picture of one view's transferred segmentation at a few levels (fine → coarse), with a legend."""

from __future__ import annotations

import io

import numpy as np

from openscene_ray.kernel import images, storage
from openscene_ray.kernel.manifest import SceneRecord, load_view
from openscene_ray.kernel.visual import label_colors

__all__ = ["levels_figure"]


def _level_map(output: str, scene_id: str, frame_id: str, threshold: float) -> np.ndarray:
    uri = storage.join(output, "views", scene_id, frame_id, f"{threshold:.3f}.png")
    return images.decode_label(storage.read_bytes(uri), uri)


def levels_figure(
    output: str, record: SceneRecord, frame_id: str, thresholds: list[float], max_segments: int = 200
) -> bytes:
    """PNG bytes: the view's colour image, then its segmentation at each of ``thresholds`` (their
    view PNGs must exist in ``output``), each titled with the threshold and its segment count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    view_record = next((v for v in record.views if v.frame_id == frame_id), None)
    if view_record is None:
        raise ValueError(f"scene {record.scene_id} has no view {frame_id!r}")
    view = load_view(record, view_record, with_label=False)
    figure, axes = plt.subplots(1, len(thresholds) + 1, figsize=(3.2 * (len(thresholds) + 1), 2.9), dpi=80)
    axes[0].imshow(view.color)
    axes[0].set_title(f"{record.scene_id} / view {frame_id}", fontsize=9)
    for axis, threshold in zip(axes[1:], thresholds):
        labels = _level_map(output, record.scene_id, frame_id, threshold)
        axis.imshow(label_colors(labels, max_segments).reshape(*labels.shape, 3))
        count = len(np.setdiff1d(np.unique(labels), [max_segments]))
        axis.set_title(f"t = {threshold:.2f}: {count} segments", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    legend = [Patch(color="black", label="unassigned / no depth"), Patch(color="#d9534f", label="one colour per segment")]
    figure.legend(handles=legend, loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
