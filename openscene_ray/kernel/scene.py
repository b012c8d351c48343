"""The scene model: a point cloud with labels plus posed RGB-D views (pure numpy).

Conventions: metres; poses are camera-to-world 4x4 in the OpenCV camera frame (x right, y down,
z forward); depth is float32 metres with 0 meaning invalid; label 255 means ignore.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from openscene_ray.kernel.errors import OpenSceneError

__all__ = ["IGNORE_LABEL", "UNKNOWN_LABEL", "SceneError", "Scene", "View", "pose_problem"]

IGNORE_LABEL = 255
UNKNOWN_LABEL = -1  # a prediction of "no class" (fusion mode: no view saw the point)
log = logging.getLogger(__name__)


class SceneError(OpenSceneError, ValueError):
    """Invalid scene input. The message names the scene, the field and, where known, the file."""

    def __init__(self, scene_id: str, field_name: str, reason: str, source: str | None = None):
        where = f" (file {source})" if source else ""
        super().__init__(f"scene {scene_id!r}: {field_name}: {reason}{where}")
        self.scene_id = scene_id
        self.field = field_name
        self.reason = reason
        self.source = source


def _check_array(
    scene_id: str, name: str, value, dtype, shape: tuple, source: str | None = None
) -> None:
    """``shape`` entries: an int (exact) or None (any)."""
    if not isinstance(value, np.ndarray):
        raise SceneError(scene_id, name, f"expected a numpy array, got {type(value).__name__}", source)
    if value.dtype != np.dtype(dtype):
        raise SceneError(scene_id, name, f"expected dtype {np.dtype(dtype)}, got {value.dtype}", source)
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
        raise SceneError(scene_id, name, f"expected shape {want}, got {list(value.shape)}", source)


def pose_problem(pose: np.ndarray, tol: float = 1e-3) -> str | None:
    """Why a 4x4 camera-to-world matrix is unusable, or None if it is a finite rigid transform."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        return f"expected a 4x4 matrix, got shape {list(pose.shape)}"
    if not np.all(np.isfinite(pose)):
        return "non-finite values (lost tracking)"
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        return f"last row must be [0,0,0,1], got {pose[3].round(4).tolist()}"
    rotation = pose[:3, :3]
    if abs(np.linalg.det(rotation)) < 1e-6:
        return "rotation block is singular (non-invertible pose)"
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=tol * 10):
        return "rotation block is not orthonormal (non-rigid pose)"
    if np.linalg.det(rotation) < 0:
        return "rotation block is a reflection (determinant -1)"
    return None


@dataclass(frozen=True)
class View:
    """One posed image: colour, optional metric depth, intrinsics and camera-to-world pose.

    ``label`` is an optional per-pixel ground-truth class map (uint8, 255 = ignore) that only the
    synthetic world and the ``label-oracle`` extractor use.
    """

    frame_id: str
    color: np.ndarray
    depth: np.ndarray | None
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    label: np.ndarray | None = None
    source: str | None = None

    @property
    def height(self) -> int:
        return int(self.color.shape[0])

    @property
    def width(self) -> int:
        return int(self.color.shape[1])

    def validate(self, scene_id: str) -> None:
        """Raise :class:`SceneError` naming the view's field if anything is malformed."""
        prefix = f"view {self.frame_id}"
        _check_array(scene_id, f"{prefix}.color", self.color, np.uint8, (None, None, 3), self.source)
        h, w = self.color.shape[:2]
        if h == 0 or w == 0:
            raise SceneError(scene_id, f"{prefix}.color", "empty image", self.source)
        if self.depth is not None:
            _check_array(scene_id, f"{prefix}.depth", self.depth, np.float32, (None, None), self.source)
            if self.depth.shape != (h, w):
                raise SceneError(
                    scene_id,
                    f"{prefix}.depth",
                    f"size {self.depth.shape[1]}x{self.depth.shape[0]} differs from the colour image "
                    f"{w}x{h}",
                    self.source,
                )
            if not np.all(np.isfinite(self.depth)) or (self.depth < 0).any():
                raise SceneError(scene_id, f"{prefix}.depth", "contains NaN, inf or negative values", self.source)
        if self.label is not None:
            _check_array(scene_id, f"{prefix}.label", self.label, np.uint8, (h, w), self.source)
        _check_array(scene_id, f"{prefix}.intrinsics", self.intrinsics, np.float64, (3, 3), self.source)
        k = self.intrinsics
        if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise SceneError(scene_id, f"{prefix}.intrinsics", "focal lengths must be finite and positive", self.source)
        _check_array(scene_id, f"{prefix}.cam_to_world", self.cam_to_world, np.float64, (4, 4), self.source)
        problem = pose_problem(self.cam_to_world)
        if problem:
            raise SceneError(scene_id, f"{prefix}.cam_to_world", problem, self.source)


@dataclass
class Scene:
    """A point cloud (xyz float32 metres, rgb uint8, optional int16 labels) and its views.

    Build it with :meth:`create`, which validates everything and drops views whose pose is
    non-finite (ScanNet marks lost tracking with -inf); dropped views are listed in
    ``skipped_views`` as ``(frame_id, reason)``. Any other malformed view is an error.
    """

    scene_id: str
    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray | None = None
    views: list[View] = field(default_factory=list)
    skipped_views: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    @classmethod
    def create(
        cls,
        scene_id: str,
        xyz: np.ndarray,
        rgb: np.ndarray,
        labels: np.ndarray | None = None,
        views: list[View] | None = None,
        source: str | None = None,
    ) -> Scene:
        if not scene_id or "/" in scene_id:
            raise SceneError(str(scene_id), "scene_id", "must be a non-empty name without '/'", source)
        _check_array(scene_id, "xyz", xyz, np.float32, (None, 3), source)
        n = xyz.shape[0]
        if n == 0:
            raise SceneError(scene_id, "xyz", "empty point cloud", source)
        if not np.all(np.isfinite(xyz)):
            raise SceneError(scene_id, "xyz", f"{int((~np.isfinite(xyz)).any(1).sum())} points have NaN or inf", source)
        _check_array(scene_id, "rgb", rgb, np.uint8, (n, 3), source)
        if labels is not None:
            _check_array(scene_id, "labels", labels, np.int16, (n,), source)
            bad = (labels < 0) | (labels > IGNORE_LABEL)
            if bad.any():
                raise SceneError(scene_id, "labels", f"{int(bad.sum())} labels outside 0..255", source)
        kept: list[View] = []
        skipped: list[tuple[str, str]] = []
        for view in views or []:
            problem = pose_problem(view.cam_to_world) if isinstance(view.cam_to_world, np.ndarray) else None
            if problem and not np.all(np.isfinite(np.asarray(view.cam_to_world, dtype=np.float64))):
                skipped.append((view.frame_id, problem))
                continue
            view.validate(scene_id)
            kept.append(view)
        if skipped:
            log.warning("scene %s: skipped %d view(s) with invalid poses", scene_id, len(skipped))
        return cls(scene_id, xyz, rgb, labels, kept, skipped)
