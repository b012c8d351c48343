"""Matterport3D in OpenScene's preprocessed layout (one scene per region).

On disk (names as written by the reference's ``preprocess_2d_matterport.py`` /
``preprocess_3d_matterport.py``)::

    <root>/matterport_3d/<split>/<building>_<region>.pth          e.g. 17DRP5sb8fy_region0.pth
    <root>/matterport_2d/<building>/color/<pano>_i<k>_<yaw>.jpg     640x512
    <root>/matterport_2d/<building>/depth/<pano>_d<k>_<yaw>.png     uint16, depth / 4000 = metres
    <root>/matterport_2d/<building>/pose/<pano>_i<k>_<yaw>.txt      4x4 camera-to-world
    <root>/matterport_2d/<building>/intrinsic/<pano>_i<k>_<yaw>.txt 3x3 (or 4x4) K at 640x512

View selection (reference ``get_matterport_camera_data``): the images of the region's building
whose camera centre lies strictly inside the region's point bbox; on the test split, when there
are none, the 100 cameras nearest to the bbox centre.

Pose convention: Matterport's raw camera poses are OpenGL (y up, z backwards). The reference's
preprocessing already negates rotation columns 1 and 2 when it writes ``pose/*.txt``, so the
default ``pose_convention="opencv"`` reads them as they are; ``"opengl"`` applies the flip on
read, for pose files taken directly from Matterport's camera parameters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from openscene_ray.datasets.files import (
    list_files,
    list_split_scenes,
    read_scene_matrix,
)
from openscene_ray.datasets.layouts import (
    Layout,
    LayoutConfig,
    LayoutScene,
    SceneRef,
    ViewSpec,
    register_layout,
)
from openscene_ray.datasets.points import load_pth_points
from openscene_ray.datasets.view_files import parallel_map
from openscene_ray.kernel import storage
from openscene_ray.kernel.scene import SceneError

__all__ = ["MatterportConfig", "MatterportLayout", "opengl_to_opencv", "select_views"]


class MatterportConfig(LayoutConfig):
    visibility_threshold: float | None = Field(0.02, gt=0)
    depth_scale: float = Field(4000.0, gt=0)
    image_width: int = Field(640, gt=0)
    image_height: int = Field(512, gt=0)
    pose_convention: Literal["opencv", "opengl"] = Field(
        "opencv", description="opencv: pose files already flipped (reference preprocessing); opengl: flip on read"
    )
    nearest_fallback: int = Field(100, ge=0, description="views to take when no camera is inside the bbox")
    fallback_splits: tuple[str, ...] = Field(("test",), description="splits where the nearest-camera fallback applies")
    points_dir: str = Field("matterport_3d", description="e.g. matterport_3d_40 for the 40-class labels")
    images_dir: str = "matterport_2d"


def opengl_to_opencv(pose: np.ndarray) -> np.ndarray:
    """Negate rotation columns 1 and 2 (camera y and z axes) of a camera-to-world matrix."""
    out = np.array(pose, dtype=np.float64)
    out[:3, 1] *= -1.0
    out[:3, 2] *= -1.0
    return out


def select_views(
    centres: np.ndarray, bbox_min: np.ndarray, bbox_max: np.ndarray, fallback: int
) -> np.ndarray:
    """Indices of the cameras inside the bbox (strict), else the ``fallback`` nearest to its centre.

    ``fallback=0`` disables the fallback. Ties in distance keep the cameras' order.
    """
    inside = np.all((centres > bbox_min) & (centres < bbox_max), axis=1)
    chosen = np.flatnonzero(inside)
    if chosen.size or fallback == 0:
        return chosen
    distance = np.linalg.norm(centres - (bbox_min + bbox_max) / 2.0, axis=1)
    distance = np.where(np.isfinite(distance), distance, np.inf)
    return np.argsort(distance, kind="stable")[:fallback]


@dataclass(frozen=True)
class _Building:
    names: tuple[str, ...]  # image stems, sorted
    poses: np.ndarray  # [N,4,4] camera-to-world (after the pose convention)
    intrinsics: np.ndarray  # [N,3,3] at the stored image size


@register_layout
class MatterportLayout(Layout):
    name = "matterport"
    config_model = MatterportConfig
    config: MatterportConfig

    def __init__(self, config: MatterportConfig | None = None):
        super().__init__(config)
        self._buildings: dict[str, _Building] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def convert_pose(self, pose: np.ndarray) -> np.ndarray:
        return opengl_to_opencv(pose) if self.config.pose_convention == "opengl" else pose

    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        return list_split_scenes(storage.join(root, self.config.points_dir), split)

    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        cfg = self.config
        xyz, rgb, labels = load_pth_points(ref.source, ref.scene_id)
        building_id = ref.scene_id.split("_", 1)[0]
        building_uri = storage.join(root, cfg.images_dir, building_id)
        building = self._building(ref.scene_id, building_uri)
        fallback = cfg.nearest_fallback if ref.split in cfg.fallback_splits else 0
        chosen = select_views(building.poses[:, :3, 3], xyz.min(axis=0), xyz.max(axis=0), fallback)
        if chosen.size == 0:
            raise SceneError(
                ref.scene_id, "views", f"no camera of building {building_id} lies inside the region's bbox "
                f"(split {ref.split!r}; the nearest-camera fallback applies to {list(cfg.fallback_splits)})",
                building_uri,
            )  # fmt: skip
        specs = [
            ViewSpec(
                frame_id=building.names[i],
                color_uri=storage.join(building_uri, "color", f"{building.names[i]}.jpg"),
                depth_uri=storage.join(building_uri, "depth", _depth_name(building.names[i])),
                cam_to_world=building.poses[i],
                pose_uri=storage.join(building_uri, "pose", f"{building.names[i]}.txt"),
                intrinsics=building.intrinsics[i],
                intrinsics_uri=storage.join(building_uri, "intrinsic", f"{building.names[i]}.txt"),
            )
            for i in sorted(chosen.tolist(), key=lambda i: building.names[i])
        ]
        size = (cfg.image_width, cfg.image_height)
        views = self.build_views(ref.scene_id, specs, size)
        return self.make_scene(ref, (xyz, rgb, labels), views, size, cfg.depth_scale)

    def _building(self, scene_id: str, building_uri: str) -> _Building:
        """Every camera of a building, read once and shared by its regions (thread-safe)."""
        with self._guard:
            lock = self._locks.setdefault(building_uri, threading.Lock())
        with lock:
            if building_uri not in self._buildings:
                self._buildings[building_uri] = self._read_building(scene_id, building_uri)
            return self._buildings[building_uri]

    def _read_building(self, scene_id: str, building_uri: str) -> _Building:
        names = tuple(sorted(name[: -len(".jpg")] for name in list_files(storage.join(building_uri, "color"), ".jpg")))
        if not names:
            raise SceneError(scene_id, "views", "no colour images for the building", storage.join(building_uri, "color"))

        def camera(name: str) -> tuple[np.ndarray, np.ndarray]:
            pose_uri = storage.join(building_uri, "pose", f"{name}.txt")
            intr_uri = storage.join(building_uri, "intrinsic", f"{name}.txt")
            pose = read_scene_matrix(scene_id, "cam_to_world", pose_uri, (4, 4))
            return pose, read_scene_matrix(scene_id, "intrinsics", intr_uri, (3, 3))

        cameras = parallel_map(camera, names)
        return _Building(
            names,
            np.stack([p for p, _ in cameras]).astype(np.float64),
            np.stack([k for _, k in cameras]).astype(np.float64),
        )


def _depth_name(image_name: str) -> str:
    """``<pano>_i<k>_<yaw>`` -> ``<pano>_d<k>_<yaw>.png`` (Matterport's naming); else ``<name>.png``."""
    parts = image_name.split("_")
    if len(parts) != 3 or not parts[1].startswith("i"):
        return f"{image_name}.png"
    return f"{parts[0]}_d{parts[1][1:]}_{parts[2]}.png"
