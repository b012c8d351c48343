"""One scene end to end, without Ray: its views and masks → the trained field → the 3D hierarchical
segmentation → its transfer to every view → NC/VC against ground truth (when given)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree

from openscene_ray.fusion.core import FusionParams
from openscene_ray.hierarchy.cluster import (
    knn_graph,
    neighbour_spacing,
    segment_levels,
    transfer_labels,
)
from openscene_ray.hierarchy.config import HierarchyConfig, SegmentConfig
from openscene_ray.hierarchy.field import FeatureField, PositionNormaliser, build_field
from openscene_ray.hierarchy.masks import ViewMasks, load_view_masks
from openscene_ray.hierarchy.scoring import load_ground_truth, mask_stacks, score_stacks
from openscene_ray.hierarchy.train import (
    TrainingView,
    TrainStats,
    pick_device,
    train_field,
)
from openscene_ray.hierarchy.views import back_project, partner_views, visibility
from openscene_ray.kernel.errors import OpenSceneError, describe_error
from openscene_ray.kernel.manifest import SceneRecord, load_scene
from openscene_ray.kernel.scene import Scene, SceneError
from openscene_ray.kernel.storage import StorageError

__all__ = ["SceneResult", "depth_threshold", "load_masks", "process_scene", "segment_scene", "training_views"]

log = logging.getLogger(__name__)

DEFAULT_DEPTH_THRESHOLD = 0.05  # relative depth test when neither the manifest nor the config gives one


@dataclass
class SceneResult:
    """Everything one scene produced (arrays in memory; :mod:`.outputs` writes them)."""

    scene: Scene
    seen: np.ndarray  # int64 [Ns]: the points some view sees (the segmented points)
    levels: np.ndarray  # uint8 [L, Ns]
    stacks: list[np.ndarray]  # per view, uint8 [L, H, W] transferred labels
    field: FeatureField
    normaliser: PositionNormaliser
    stats: TrainStats
    max_distance: float
    views_trained: int = 0
    view_errors: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def depth_threshold(record: SceneRecord, config: HierarchyConfig) -> float:
    if config.visibility_threshold is not None:
        return config.visibility_threshold
    return record.visibility_threshold if record.visibility_threshold is not None else DEFAULT_DEPTH_THRESHOLD


def load_masks(root: str, scene: Scene) -> tuple[list[ViewMasks | None], dict[str, str]]:
    """Each view's masks (None: no mask folder, or a bad file, recorded per view as an error)."""
    out: list[ViewMasks | None] = []
    errors: dict[str, str] = {}
    for view in scene.views:
        try:
            out.append(load_view_masks(root, scene.scene_id, view.frame_id, view.width, view.height))
        except (OpenSceneError, StorageError) as exc:
            errors[view.frame_id] = describe_error(exc)
            out.append(None)
    return out, errors


def training_views(
    scene: Scene, visible: list[tuple[np.ndarray, np.ndarray]], masks: list[ViewMasks | None]
) -> list[TrainingView]:
    """The views with masks, as visible samples plus flattened masks."""
    out = []
    for view, (points, pixels), m in zip(scene.views, visible, masks):
        if m is not None and len(m.masks) and len(points):
            flat = m.masks.reshape(len(m.masks), -1)
            out.append(TrainingView(view.frame_id, points, pixels, flat, m.inside, view.width))
    return out


def segment_scene(
    xyz: np.ndarray, features: np.ndarray, config: SegmentConfig
) -> tuple[np.ndarray, cKDTree, float]:
    """(levels uint8 [L, N], a kNN tree of ``xyz``, the transfer distance cut in metres)."""
    src, dst = knn_graph(xyz, config.neighbours)
    levels = segment_levels(features, src, dst, config.thresholds, config.max_segments)
    cut = config.transfer_max_distance
    if cut is None:
        cut = 3.0 * neighbour_spacing(xyz, config.transfer_neighbours)
    return levels, cKDTree(xyz), float(cut)


def _transfer(scene: Scene, tree: cKDTree, levels: np.ndarray, config: SegmentConfig, cut: float) -> list[np.ndarray]:
    stacks = []
    for view in scene.views:
        stack = np.full((len(levels), view.height * view.width), config.max_segments, dtype=np.uint8)
        if view.depth is not None:
            pixels, surface = back_project(view)
            stack[:, pixels] = transfer_labels(tree, levels, surface, config.transfer_neighbours, cut,
                                               config.max_segments)  # fmt: skip
        stacks.append(stack.reshape(len(levels), view.height, view.width))
    return stacks


def _score(scene: Scene, result: SceneResult, masks: list[ViewMasks | None], config: HierarchyConfig,
           threshold: float) -> dict[str, dict]:  # fmt: skip
    """NC/VC per GT level for the field (and the 2D masks baseline) on the views with GT."""
    metrics_config = config.metrics
    if metrics_config.ground_truth is None or not scene.views:
        return {}
    shape = (scene.views[0].height, scene.views[0].width)
    baseline = mask_stacks(masks, shape) if metrics_config.baseline else None
    field_stacks = [(s, config.segment.max_segments) for s in result.stacks]
    partners = partner_views(scene.views, threshold, metrics_config.min_overlap)
    out: dict[str, dict] = {}
    for name, folder in metrics_config.levels.items():
        gt = [load_ground_truth(metrics_config.ground_truth, scene.scene_id, folder, v) for v in scene.views]
        if baseline is not None:  # score both on the same views: those with masks
            gt = [g if b is not None else None for g, b in zip(gt, baseline)]
            out.setdefault("masks_2d", {})[name] = score_stacks(scene.views, gt, baseline, threshold,
                                                                metrics_config, partners)  # fmt: skip
        out.setdefault("field", {})[name] = score_stacks(scene.views, gt, field_stacks, threshold,
                                                         metrics_config, partners)  # fmt: skip
    return out


def process_scene(record: SceneRecord, config: HierarchyConfig) -> SceneResult:
    """Train, segment, transfer and score one scene (raises on a scene-level failure)."""
    clock = {"start": time.perf_counter()}
    scene = load_scene(record, with_labels=False)
    threshold = depth_threshold(record, config)
    params = FusionParams(cut_bound=record.cut_bound, visibility_threshold=threshold)
    visible = visibility(scene.xyz, scene.views, params)
    masks, errors = load_masks(config.masks_root, scene)
    views = training_views(scene, visible, masks)
    if not views:
        raise SceneError(scene.scene_id, "masks", f"no view has usable masks under {config.masks_root}; "
                         f"view errors: {dict(list(errors.items())[:3])}")  # fmt: skip
    clock["load"] = time.perf_counter()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = pick_device(config.train.device)
    normaliser = PositionNormaliser(scene.xyz)
    unit = normaliser(scene.xyz)
    field_ = build_field(config.field, config.train.seed)
    stats = train_field(field_, unit, views, config.train, device, mlp_lr_scale=config.field.mlp_lr_scale)
    clock["train"] = time.perf_counter()
    seen = np.unique(np.concatenate([points for points, _ in visible]))
    features = field_.features(unit[seen], device)
    levels, tree, cut = segment_scene(scene.xyz[seen].astype(np.float64), features, config.segment)
    stacks = _transfer(scene, tree, levels, config.segment, cut)
    clock["segment"] = time.perf_counter()
    result = SceneResult(scene, seen, levels, stacks, field_, normaliser, stats, cut, len(views), errors)
    result.metrics = _score(scene, result, masks, config, threshold)
    clock["score"] = time.perf_counter()
    names = list(clock)
    result.seconds = {name: round(clock[name] - clock[prev], 2) for prev, name in zip(names, names[1:])}
    return result
