"""Superpixel → superpoint lifting (pure numpy/torch; seed facts §3.2).

For each view in camera order, the points are projected into its superpixel map: kept when their
camera depth is above ``min_depth`` (1 m) and they land inside the image, with the reference's
bounds ``0 < u < W-1``, ``0 < v < H-1`` tested before rounding (or the fusion stage's cut bound
on the rounded pixel), then the map is read at the rounded pixel (half to even, as numpy's
round). Every superpixel id ≠ 0 that a view hits becomes a superpoint, numbered by a running
counter over all views of the scene; its points take that superpoint and its phrase, and later
views overwrite earlier ones. The phrase maps through the dictionary to the label set's class.

Every (view, point, superpixel) projection is also kept, whatever view wins the point: TMP pairs
each superpixel with all the points it saw. Views with a depth map (RGB-D) can additionally
require the point to agree with the depth at its pixel, as fusion does (LiDAR views have none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openscene_ray.fusion.core import project
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.ssov.lift.config import LiftSettings

__all__ = ["LiftFrame", "LiftResult", "agreement", "lift_frames", "order_frames", "project_frame", "scale_intrinsics"]


@dataclass
class LiftFrame:
    """One view's superpixels with its camera at the superpixel map's size."""

    frame_id: str
    ids: np.ndarray  # int32 [H, W], 0 = void
    categories: np.ndarray  # int32 [K]: phrase of superpixel k at k - 1
    intrinsics: np.ndarray  # float64 [3, 3] at the map's size
    cam_to_world: np.ndarray  # float64 [4, 4]
    depth: np.ndarray | None = None  # float32 [H, W] metres (0 = invalid) at the map's size


@dataclass
class LiftResult:
    """One scene's lift: per-point superpoint, phrase and class, and the point-superpixel pairs."""

    superpoint: np.ndarray  # int32 [N], -1 = no superpixel
    vocab: np.ndarray  # int16 [N], -1 = none
    label: np.ndarray  # int16 [N], 255 = none or ignored
    pair_view: np.ndarray  # int16 [P]: index into the ordered frames
    pair_point: np.ndarray  # int32 [P]
    pair_superpixel: np.ndarray  # int16 [P]
    frame_ids: list[str]  # the frames in the order they were applied


def _camera_key(name: str) -> str:
    name = name.strip().upper()
    return name.removeprefix("CAM_")


def order_frames(frame_ids: Sequence[str], order: Sequence[str] | None) -> list[int]:
    """Indices of ``frame_ids`` in camera order: the named ones first, in ``order``; then the rest
    in their own order. Names match case-insensitively, with or without a ``CAM_`` prefix."""
    if not order:
        return list(range(len(frame_ids)))
    keys = [_camera_key(f) for f in frame_ids]
    first = [keys.index(_camera_key(name)) for name in order if _camera_key(name) in keys]
    return first + [i for i in range(len(frame_ids)) if i not in first]


def scale_intrinsics(intrinsics: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """``intrinsics`` at image size ``(W, H)`` rescaled to ``(W', H')`` (pixel centres preserved)."""
    k = np.array(intrinsics, dtype=np.float64)
    if tuple(size) == tuple(new_size):
        return k
    sx, sy = new_size[0] / size[0], new_size[1] / size[1]
    k[0, 0], k[1, 1] = k[0, 0] * sx, k[1, 1] * sy
    k[0, 2], k[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5
    return k


def _reference_projection(xyz: np.ndarray, frame: LiftFrame, min_depth: float):
    """``(index, u, v, z)`` with the reference's bounds on the unrounded pixel."""
    height, width = frame.ids.shape
    world_to_cam = np.linalg.inv(np.asarray(frame.cam_to_world, np.float64))
    cam = xyz @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    index = np.flatnonzero(cam[:, 2] > max(min_depth, 0.0))
    z = cam[index, 2]
    k = frame.intrinsics
    u = cam[index, 0] * k[0, 0] / z + k[0, 2]
    v = cam[index, 1] * k[1, 1] / z + k[1, 2]
    keep = (u > 0) & (u < width - 1) & (v > 0) & (v < height - 1)
    return index[keep], np.rint(u[keep]).astype(np.int64), np.rint(v[keep]).astype(np.int64), z[keep]


def project_frame(
    xyz: np.ndarray, frame: LiftFrame, settings: LiftSettings, cut_bound: int, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(point index, flat pixel v*W+u)`` of the points that ``frame`` sees (int64 each)."""
    height, width = frame.ids.shape
    if settings.bounds == "reference":
        index, u, v, z = _reference_projection(xyz, frame, settings.min_depth)
    else:
        proj = project(torch.from_numpy(xyz), frame.cam_to_world, frame.intrinsics, height, width, cut_bound)
        index, u, v, z = (t.numpy() for t in (proj.index, proj.u, proj.v, proj.z))
        keep = z > settings.min_depth
        index, u, v, z = index[keep], u[keep], v[keep], z[keep]
    pix = v * width + u
    if frame.depth is not None and threshold is not None and settings.depth_test:
        d = frame.depth.reshape(-1)[pix].astype(np.float64)
        keep = (d > 0) & (np.abs(d - z) <= threshold * d)
        index, pix = index[keep], pix[keep]
    return index, pix


def lift_frames(
    xyz: np.ndarray,
    frames: Sequence[LiftFrame],
    phrase_class: np.ndarray,
    settings: LiftSettings,
    cut_bound: int = 0,
    threshold: float | None = None,
) -> LiftResult:
    """Lift the frames' superpixels onto the points (frames already in camera order)."""
    xyz = np.asarray(xyz, np.float64)
    n = xyz.shape[0]
    superpoint = np.full(n, -1, np.int32)
    vocab = np.full(n, -1, np.int16)
    views, points, sps = [], [], []
    counter = 0
    for i, frame in enumerate(frames):
        index, pix = project_frame(xyz, frame, settings, cut_bound, threshold)
        sp = frame.ids.reshape(-1)[pix].astype(np.int64)
        hit = sp > 0
        index, sp = index[hit], sp[hit]
        views.append(np.full(index.size, i, np.int16))
        points.append(index.astype(np.int32))
        sps.append(sp.astype(np.int16))
        present = np.unique(sp)  # each id hit becomes the next superpoint, in ascending id order
        superpoint[index] = counter + np.searchsorted(present, sp)
        vocab[index] = frame.categories[sp - 1]
        counter += present.size
    label = np.where(vocab >= 0, np.asarray(phrase_class, np.int16)[np.maximum(vocab, 0)], IGNORE_LABEL)
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    return LiftResult(superpoint, vocab, label.astype(np.int16), cat(views, np.int16), cat(points, np.int32),
                      cat(sps, np.int16), [f.frame_id for f in frames])  # fmt: skip


def agreement(superpoint: np.ndarray, label: np.ndarray, gt: np.ndarray | None) -> dict[str, float | int | None]:
    """How the pseudo-labels compare with the ground truth.

    ``p_labeled``: points with a superpoint; ``p_sameseg``: among them, pseudo-label == ground
    truth (the reference's diagnostics, here in the label set's classes, where an ignored pseudo
    class equals an ignored ground-truth point); ``coverage``: points with a usable pseudo-label;
    ``accuracy``: among those with a ground-truth class, the fraction right. Without ground truth
    (every label 255) only the first and third are given."""
    n = int(superpoint.shape[0])
    labelled = superpoint >= 0
    usable = label != IGNORE_LABEL
    stats: dict[str, float | int | None] = {
        "n_points": n, "n_labelled": int(labelled.sum()), "n_pseudo": int(usable.sum()),
        "p_labeled": float(labelled.mean()) if n else 0.0, "coverage": float(usable.mean()) if n else 0.0,
        "p_sameseg": None, "accuracy": None, "n_scored": 0, "n_correct": 0, "n_same": 0,
    }  # fmt: skip
    if gt is None or not (np.asarray(gt) != IGNORE_LABEL).any():
        return stats
    gt = np.asarray(gt, np.int16)
    same = labelled & (label == gt)
    scored = usable & (gt != IGNORE_LABEL)
    correct = scored & (label == gt)
    stats.update(n_same=int(same.sum()), n_scored=int(scored.sum()), n_correct=int(correct.sum()))
    stats["p_sameseg"] = float(same.sum() / max(labelled.sum(), 1))
    stats["accuracy"] = float(correct.sum() / max(scored.sum(), 1))
    return stats
