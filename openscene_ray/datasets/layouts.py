"""Dataset layouts: readers that turn a dataset root URI into manifest scenes (a registry).

A layout lists the scenes under a root (:meth:`Layout.list_scenes`) and reads one of them
(:meth:`Layout.read_scene`) into a :class:`LayoutScene`: the points (xyz float32, rgb uint8,
labels int16 with 255 = ignore) plus the views as manifest :class:`ViewRecord` s, whose file
URIs point into the dataset and whose intrinsics are already scaled to the fusion image size.
Each candidate view's files and camera are checked (:mod:`.view_files`). Views whose pose is
non-finite (ScanNet's lost tracking) become ``skipped_views``; any other bad view is a per-scene
error, or a skipped view with ``bad_views="skip"``.

Every file access goes through :mod:`openscene_ray.kernel.storage`, so ``s3://`` and ``memory://``
roots work like local folders. Layouts are built by name with :func:`build_layout`; options come
from each layout's typed config (a :class:`LayoutConfig` subclass) with ``key=value`` overrides.
Shared pieces of the layouts: :mod:`.points` (point arrays) and :mod:`.files` (finding files).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

import numpy as np
from pydantic import Field

from openscene_ray.datasets.view_files import (
    ViewProblem,
    check_image,
    parallel_map,
    read_camera_matrix,
    scale_intrinsics,
)
from openscene_ray.kernel.config import StrictModel, load_config
from openscene_ray.kernel.manifest import SceneRecord, ViewRecord
from openscene_ray.kernel.registry import Registry
from openscene_ray.kernel.scene import SceneError, pose_problem

__all__ = [
    "Layout",
    "LayoutConfig",
    "LayoutScene",
    "Points",
    "SceneRef",
    "ViewSpec",
    "build_layout",
    "get_layout",
    "layout_names",
    "register_layout",
]

log = logging.getLogger(__name__)

# A scene's points: xyz float32 [N,3], rgb uint8 [N,3], labels int16 [N] (255 = ignore).
Points = tuple[np.ndarray, np.ndarray, np.ndarray]


class LayoutConfig(StrictModel):
    """Options every layout has; each layout subclasses this with its dataset's defaults."""

    cut_bound: int = Field(10, ge=0, description="pixels ignored at the image border during fusion")
    visibility_threshold: float | None = Field(
        0.25, gt=0, description="relative depth tolerance; None: no depth, visibility is z > 0"
    )
    check_images: Literal["header", "decode"] = Field(
        "header", description="read each view image's header only (fast) or decode it fully"
    )
    bad_views: Literal["error", "skip"] = Field(
        "error", description="a view with a missing/corrupt file or a non-rigid pose fails the scene, or is skipped"
    )


@dataclass(frozen=True)
class SceneRef:
    """One scene found under a root: its id, split and the URI of its main file or folder."""

    scene_id: str
    split: str
    source: str


@dataclass(frozen=True)
class ViewSpec:
    """A candidate view before checking: file URIs and the camera (given, or files to read).

    ``intrinsics`` belong to ``intrinsics_size`` (W, H); None means the stored colour image's
    size, read from its header. They are rescaled to the fusion size with
    :func:`~openscene_ray.datasets.view_files.scale_intrinsics`.
    """

    frame_id: str
    color_uri: str
    depth_uri: str | None = None
    label_uri: str | None = None
    cam_to_world: np.ndarray | None = None
    pose_uri: str | None = None
    intrinsics: np.ndarray | None = None
    intrinsics_uri: str | None = None
    intrinsics_size: tuple[int, int] | None = None


@dataclass
class LayoutScene:
    """What a layout reads for one scene: points, views and the fusion settings."""

    scene_id: str
    split: str
    source: str
    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray
    views: list[ViewRecord]
    skipped_views: list[tuple[str, str]]
    image_width: int
    image_height: int
    cut_bound: int
    depth_scale: float | None
    visibility_threshold: float | None

    def to_record(self, layout: str, points_uri: str) -> SceneRecord:
        """The manifest row for this scene once its points are stored at ``points_uri``."""
        return SceneRecord(
            scene_id=self.scene_id,
            split=self.split,
            layout=layout,
            points_uri=points_uri,
            num_points=int(self.xyz.shape[0]),
            image_width=self.image_width,
            image_height=self.image_height,
            cut_bound=self.cut_bound,
            views=tuple(self.views),
            depth_scale=self.depth_scale,
            visibility_threshold=self.visibility_threshold,
            skipped_views=tuple(self.skipped_views),
        )


class Layout(ABC):
    """A dataset layout. Subclasses set ``name``, ``config_model`` and implement the two readers."""

    name: ClassVar[str]
    config_model: ClassVar[type[LayoutConfig]] = LayoutConfig

    def __init__(self, config: LayoutConfig | None = None):
        self.config = config if config is not None else self.config_model()
        if not isinstance(self.config, self.config_model):
            raise TypeError(f"layout {self.name!r} needs a {self.config_model.__name__}, got {type(self.config).__name__}")

    @abstractmethod
    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        """The scenes under ``root`` (only ``split`` where given), sorted by scene id."""

    @abstractmethod
    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        """Read one scene. Raises :class:`SceneError` naming the scene and the file on bad input."""

    # ---- shared helpers for subclasses -------------------------------------------------------

    def convert_pose(self, pose: np.ndarray) -> np.ndarray:
        """Hook: bring a stored pose into camera-to-world OpenCV convention (identity here)."""
        return pose

    def build_views(
        self,
        scene_id: str,
        specs: Sequence[ViewSpec],
        image_size: tuple[int, int],
    ) -> tuple[list[ViewRecord], list[tuple[str, str]]]:
        """Check candidate views (files, poses, intrinsics) and return ``(views, skipped_views)``.

        Non-finite poses are always skipped. Other problems raise :class:`SceneError` naming the
        view and the file, or skip the view when ``bad_views="skip"``. Zero usable views is an error.
        """
        results = parallel_map(lambda spec: self._check_view(spec, image_size), specs)
        views: list[ViewRecord] = []
        skipped: list[tuple[str, str]] = []
        for spec, (record, problem) in zip(specs, results):
            if record is not None:
                views.append(record)
                continue
            assert problem is not None
            where = f" (file {problem.uri})" if problem.uri else ""
            if problem.lost_tracking or self.config.bad_views == "skip":
                skipped.append((spec.frame_id, f"{problem.field}: {problem.reason}{where}"))
            else:
                raise SceneError(scene_id, f"view {spec.frame_id}.{problem.field}", problem.reason, problem.uri)
        if skipped:
            log.warning("scene %s: skipped %d of %d view(s)", scene_id, len(skipped), len(specs))
        if not views:
            detail = f"; skipped: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
            raise SceneError(scene_id, "views", f"no usable views ({len(specs)} candidates){detail}")
        return views, skipped

    def make_scene(
        self,
        ref: SceneRef,
        points: Points,
        checked_views: tuple[list[ViewRecord], list[tuple[str, str]]],
        image_size: tuple[int, int],
        depth_scale: float | None,
    ) -> LayoutScene:
        """The scene read for ``ref``: its points, its :meth:`build_views` result and the fusion settings."""
        xyz, rgb, labels = points
        views, skipped = checked_views
        return LayoutScene(
            ref.scene_id, ref.split, ref.source, xyz, rgb, labels, views, skipped,
            image_width=image_size[0], image_height=image_size[1], cut_bound=self.config.cut_bound,
            depth_scale=depth_scale, visibility_threshold=self.config.visibility_threshold,
        )  # fmt: skip

    def _check_view(
        self, spec: ViewSpec, image_size: tuple[int, int]
    ) -> tuple[ViewRecord | None, ViewProblem | None]:
        try:
            return self._view_record(spec, image_size), None
        except ViewProblem as problem:
            return None, problem

    def _view_record(self, spec: ViewSpec, image_size: tuple[int, int]) -> ViewRecord:
        """The manifest record of a candidate view whose camera and files pass the checks."""
        pose = spec.cam_to_world
        if pose is None:
            pose = read_camera_matrix(spec.pose_uri, (4, 4), "cam_to_world")
        pose = self.convert_pose(np.asarray(pose, dtype=np.float64))
        problem = pose_problem(pose)
        if problem:
            raise ViewProblem("cam_to_world", problem, spec.pose_uri, lost_tracking=not np.all(np.isfinite(pose)))
        intrinsics = spec.intrinsics
        if intrinsics is None:
            intrinsics = read_camera_matrix(spec.intrinsics_uri, (3, 3), "intrinsics")
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        if not np.all(np.isfinite(intrinsics)) or intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0:
            raise ViewProblem("intrinsics", "focal lengths must be finite and positive", spec.intrinsics_uri)
        decode = self.config.check_images == "decode"
        color_size = check_image(spec.color_uri, "color", image_size, decode)
        for uri, kind in ((spec.depth_uri, "depth"), (spec.label_uri, "label")):
            if uri is not None:
                check_image(uri, kind, image_size, decode)
        source_size = spec.intrinsics_size or color_size
        intrinsics = scale_intrinsics(intrinsics, source_size, image_size)
        return ViewRecord.create(spec.frame_id, spec.color_uri, intrinsics, pose, spec.depth_uri, spec.label_uri)


# ---- registry -------------------------------------------------------------------------------

LAYOUTS: Registry[type[Layout]] = Registry(
    "layout",
    lazy_modules={
        "scannet": "openscene_ray.datasets.scannet",
        "matterport": "openscene_ray.datasets.matterport",
        "replica": "openscene_ray.datasets.replica",
        "nuscenes": "openscene_ray.datasets.nuscenes",
        "nuscenes-calib": "openscene_ray.datasets.nuscenes",
        "posed-rgbd": "openscene_ray.datasets.posed_rgbd",
    },
)
layout_names = LAYOUTS.names
get_layout = LAYOUTS.get

LayoutT = TypeVar("LayoutT", bound=type[Layout])


def register_layout(cls: LayoutT) -> LayoutT:
    """Class decorator: make a :class:`Layout` subclass available by its ``name``."""
    return LAYOUTS.register(cls.name, cls)


def build_layout(
    name: str, overrides: list[str] | None = None, config_paths: str | list[str] | None = None
) -> Layout:
    """Instantiate layout ``name`` with its config from defaults ← YAML ``config_paths`` ← ``overrides``."""
    cls = get_layout(name)
    return cls(load_config(cls.config_model, config_paths, overrides))
