"""nuScenes: OpenScene's preprocessed layout (``nuscenes``) and a calib.json sample adapter
(``nuscenes-calib``). No depth: visibility is z > 0 only; 6 cameras; fusion at 800x450, cut 5.

``nuscenes`` on disk (reference ``preprocess_2d_nuscenes.py`` / ``preprocess_3d_nuscenes.py``)::

    <root>/nuscenes_3d/<split>/<scene>.pth                   (coords, 0, labels; 255 = ignore)
    <root>/nuscenes_2d/<split>/<scene>/color/<cam>.jpg       cam in back, back_left, ..., front_right
    <root>/nuscenes_2d/<split>/<scene>/K/<cam>.npy           3x3 K at the stored image's size
    <root>/nuscenes_2d/<split>/<scene>/pose/<cam>.npy        4x4 camera-to-world

``nuscenes-calib`` reads one sample folder (or a folder of them) in mmdetection3d's demo form::

    <sample>/calib.json     images[CAM].{img_path, cam2img (3x3 at the JPEG's size), lidar2cam (4x4)}
    <sample>/<img_path>     the camera JPEGs (1600x900)
    <sample>/*LIDAR_TOP*.pcd.bin   float32 [N,5]: x, y, z, intensity, ring (lidar frame = world)

Camera-to-world is ``inv(lidar2cam)``. Lidar points have no colour: rgb is stored as 0 (the
reference also stores the scalar 0 for nuScenes colours); labels are 255.

In both, K is read at the stored colour image's size (from its header) and rescaled to 800x450
with the resize formula; the reference's preprocessed K files are already at 800x450.
"""

from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from openscene_ray.datasets.files import (
    basename,
    list_folder_scenes,
    list_split_scenes,
    read_scene_file,
)
from openscene_ray.datasets.layouts import (
    Layout,
    LayoutConfig,
    LayoutScene,
    SceneRef,
    ViewSpec,
    register_layout,
)
from openscene_ray.datasets.points import load_pth_points, validated_points
from openscene_ray.kernel import storage
from openscene_ray.kernel.scene import SceneError

__all__ = ["NuScenesCalibConfig", "NuScenesCalibLayout", "NuScenesConfig", "NuScenesLayout", "read_lidar_bin"]

CAMERAS = ("back", "back_left", "back_right", "front", "front_left", "front_right")


class _NoDepthConfig(LayoutConfig):
    """What both nuScenes layouts share: no depth, fusion at 800x450 with a 5-pixel cut."""

    cut_bound: int = Field(5, ge=0)
    visibility_threshold: None = Field(None, description="no depth: visibility is z > 0 only")
    image_width: int = Field(800, gt=0)
    image_height: int = Field(450, gt=0)


class NuScenesConfig(_NoDepthConfig):
    cameras: tuple[str, ...] = Field(CAMERAS, min_length=1)
    points_dir: str = "nuscenes_3d"
    images_dir: str = "nuscenes_2d"


@register_layout
class NuScenesLayout(Layout):
    name = "nuscenes"
    config_model = NuScenesConfig
    config: NuScenesConfig

    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        return list_split_scenes(storage.join(root, self.config.points_dir), split)

    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        cfg = self.config
        points = load_pth_points(ref.source, ref.scene_id)
        scene_2d = storage.join(root, cfg.images_dir, ref.split, ref.scene_id)
        specs = [
            ViewSpec(
                frame_id=cam,
                color_uri=storage.join(scene_2d, "color", f"{cam}.jpg"),
                pose_uri=storage.join(scene_2d, "pose", f"{cam}.npy"),
                intrinsics_uri=storage.join(scene_2d, "K", f"{cam}.npy"),
            )
            for cam in cfg.cameras
        ]
        size = (cfg.image_width, cfg.image_height)
        return self.make_scene(ref, points, self.build_views(ref.scene_id, specs, size), size, depth_scale=None)


class NuScenesCalibConfig(_NoDepthConfig):
    calib_file: str = "calib.json"
    lidar_pattern: str = Field("*LIDAR_TOP*.pcd.bin", description="glob for the lidar file in the sample folder")
    lidar_columns: int = Field(5, ge=3, description="float32 values per lidar point (x, y, z first)")


def read_lidar_bin(data: bytes, columns: int, scene_id: str, uri: str) -> np.ndarray:
    """xyz float32 [N,3] from a ``.pcd.bin`` of float32 rows with ``columns`` values each."""
    if len(data) % (4 * columns):
        raise SceneError(scene_id, "points", f"file size {len(data)} is not a multiple of {columns} float32 values", uri)
    return np.frombuffer(data, dtype="<f4").reshape(-1, columns)[:, :3].astype(np.float32)


@register_layout
class NuScenesCalibLayout(Layout):
    name = "nuscenes-calib"
    config_model = NuScenesCalibConfig
    config: NuScenesCalibConfig

    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        calib = self.config.calib_file
        return list_folder_scenes(root, split, lambda folder: storage.exists(storage.join(folder, calib)))

    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        cfg = self.config
        folder = ref.source
        calib_uri = storage.join(folder, cfg.calib_file)
        calib = _read_json(ref.scene_id, calib_uri)
        cameras = calib.get("images")
        if not isinstance(cameras, dict) or not cameras:
            raise SceneError(ref.scene_id, "calib", "no 'images' section with cameras", calib_uri)
        lidar = storage.glob(storage.join(folder, cfg.lidar_pattern))
        if len(lidar) != 1:
            found = f"expected one file matching {cfg.lidar_pattern!r}, found {len(lidar)}"
            raise SceneError(ref.scene_id, "points", found, folder)
        data = read_scene_file(ref.scene_id, "points", lidar[0])
        xyz = read_lidar_bin(data, cfg.lidar_columns, ref.scene_id, lidar[0])
        points = validated_points(ref.scene_id, xyz, None, None, lidar[0])
        specs = []
        for cam in sorted(cameras):
            entry = cameras[cam]
            try:
                k = np.asarray(entry["cam2img"], dtype=np.float64)
                lidar2cam = np.asarray(entry["lidar2cam"], dtype=np.float64)
                image = basename(str(entry["img_path"]))
            except (KeyError, TypeError, ValueError) as exc:
                field_name = f"calib.images.{cam}"
                raise SceneError(ref.scene_id, field_name, f"missing or invalid field ({exc})", calib_uri) from None
            if k.shape != (3, 3) or lidar2cam.shape != (4, 4):
                raise SceneError(ref.scene_id, f"calib.images.{cam}", "cam2img must be 3x3 and lidar2cam 4x4", calib_uri)
            try:
                cam_to_world = np.linalg.inv(lidar2cam)
            except np.linalg.LinAlgError:
                raise SceneError(ref.scene_id, f"calib.images.{cam}", "lidar2cam is singular", calib_uri) from None
            specs.append(
                ViewSpec(frame_id=cam, color_uri=storage.join(folder, image), cam_to_world=cam_to_world, intrinsics=k)
            )
        size = (cfg.image_width, cfg.image_height)
        return self.make_scene(ref, points, self.build_views(ref.scene_id, specs, size), size, depth_scale=None)


def _read_json(scene_id: str, uri: str) -> dict:
    """The calib.json object of a sample; SceneError naming the file if unreadable."""
    data = read_scene_file(scene_id, "calib", uri)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SceneError(scene_id, "calib", f"not valid JSON ({exc})", uri) from None
    if not isinstance(value, dict):
        raise SceneError(scene_id, "calib", "the top level must be an object", uri)
    return value
