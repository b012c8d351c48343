"""Scoring one scene's segmentations against per-view ground truth: NC and VC per GT level, for the
field's transferred segmentation and for the 2D masks taken as they are (the baseline)."""

from __future__ import annotations

import numpy as np

from openscene_ray.hierarchy.config import MetricsConfig
from openscene_ray.hierarchy.masks import MaskError, ViewMasks, level_maps, mask_depths
from openscene_ray.hierarchy.metrics import normal_covering, view_consistency
from openscene_ray.hierarchy.views import correspondence
from openscene_ray.kernel import images, storage
from openscene_ray.kernel.scene import View

__all__ = ["load_ground_truth", "mask_stacks", "score_stacks"]


def load_ground_truth(root: str, scene_id: str, folder: str, view: View) -> np.ndarray | None:
    """The view's GT id map int64 [H, W] (nearest-resized to the view), or None when absent."""
    uri = storage.join(root, scene_id, folder, f"{view.frame_id}.png")
    try:
        data = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        return None
    try:
        raw = images.decode_depth(data, 1.0, uri)  # any single-channel 8/16-bit integer map
    except images.ImageDecodeError as exc:
        raise MaskError(uri, f"not a single-channel id map ({exc})") from None
    return images.resize_nearest(raw.astype(np.int64), view.width, view.height)


def mask_stacks(masks: list[ViewMasks | None], shape: tuple[int, int]) -> list[tuple[np.ndarray, int] | None]:
    """Each view's masks as level maps (the baseline's levels; one count for the whole scene)."""
    depth = max((int(mask_depths(m.inside).max()) + 1 for m in masks if m is not None and len(m.masks)), default=1)
    out: list[tuple[np.ndarray, int] | None] = []
    for m in masks:
        out.append(None if m is None else level_maps(m.masks.reshape(len(m.masks), *shape), m.inside, depth))
    return out


def score_stacks(
    views: list[View],
    ground_truth: list[np.ndarray | None],
    stacks: list[tuple[np.ndarray, int] | None],
    threshold: float,
    config: MetricsConfig,
    partners: list[int | None],
) -> dict[str, float | int]:
    """Mean NC and VC over the views with GT and a stack: ``{"nc", "vc", "views", "vc_views"}``.

    ``partners[i]``: the view VC compares view ``i`` with (:func:`~.views.partner_views`), or None.
    """
    rng = np.random.default_rng(config.seed)
    usable = [i for i, (g, s) in enumerate(zip(ground_truth, stacks)) if g is not None and s is not None]
    nc, vc = [], []
    for i in usable:
        cover = normal_covering(ground_truth[i], stacks[i][0], rng, config.samples_per_segment,
                                config.min_segment_pixels)  # fmt: skip
        if np.isnan(cover.score):
            continue
        nc.append(cover.score)
        j = partners[i]
        if j is None or stacks[j] is None:
            continue
        pix_a, pix_b = correspondence(views[i], views[j], threshold)
        score = view_consistency(ground_truth[i], stacks[i][0], stacks[j][0], pix_a, pix_b, stacks[j][1], cover, rng)
        if not np.isnan(score):
            vc.append(score)
    return {
        "nc": float(np.mean(nc)) if nc else float("nan"),
        "vc": float(np.mean(vc)) if vc else float("nan"),
        "views": len(nc),
        "vc_views": len(vc),
    }
