"""``posed-rgbd``: a user's own posed RGB-D captures (one capture folder, or a folder of them).

Two capture forms are recognised in a folder:

* Redwood / Open3D::

      color/<name>.jpg|png    depth/<name>.png (uint16)    trajectory.log
      camera_primesense.json  (or another intrinsics file, see below)

  ``trajectory.log`` holds, per frame, a header line ``i i i+1`` and 4 rows of the 4x4
  camera-to-world matrix; entry ``i`` belongs to the ``i``-th colour image in sorted order.

* 7-Scenes style: ``frame-XXXXXX.color.png``, ``frame-XXXXXX.depth.png`` and
  ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world) side by side, plus one intrinsics file.

Intrinsics (at the stored colour image size): the ``intrinsics=[fx,fy,cx,cy]`` option, else the
first of ``INTRINSICS_FILES`` present (or ``intrinsics_file``). JSON files hold either Open3D's
``intrinsic_matrix`` (3x3 stored column-major) with ``width``/``height``, or ``fx, fy, cx, cy``
(+ optional ``width``/``height``); text files hold a 3x3 or 4x4 matrix. Poses are OpenCV
camera-to-world; depth is uint16 divided by ``depth_scale`` (1000).

Points: ``points_file`` (or ``points.ply`` / ``points.pth`` / ``points.parquet`` in the folder)
when present. Otherwise a cloud is built by back-projecting the valid depth (0 < d <=
``max_depth``) of every ``cloud_frame_stride``-th used view at the fusion size and
voxel-downsampling it with ``voxel_size`` (0.02 m, the reference's indoor voxel):
``voxel_mode="first"`` keeps the first point that falls in each voxel (frames in order, pixels in
row-major order; real pixel colours, like the reference's voxelizer), ``"centroid"`` keeps the
mean position and mean colour. Points come out sorted by voxel; labels are 255.

Visibility threshold default 0.1 (the reference uses 0.25 for ScanNet and Replica): the cloud is
built from the same depth maps, so true surface points agree with depth to within sensor noise
and pose drift, while 0.25 would let a surface up to 25% behind an occluder count as visible.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from openscene_ray.datasets.files import (
    list_files,
    list_folder_scenes,
    read_scene_file,
    read_scene_matrix,
)
from openscene_ray.datasets.layouts import (
    Layout,
    LayoutConfig,
    LayoutScene,
    Points,
    SceneRef,
    ViewSpec,
    register_layout,
)
from openscene_ray.datasets.points import load_points_file, validated_points
from openscene_ray.datasets.view_files import pinhole_intrinsics, stored_image_size
from openscene_ray.kernel import images, manifest, storage
from openscene_ray.kernel.scene import IGNORE_LABEL, SceneError

__all__ = ["PosedRGBDConfig", "PosedRGBDLayout", "VoxelCloud", "backproject", "read_trajectory_log"]

INTRINSICS_FILES = (
    "camera_primesense.json",
    "camera_intrinsic.json",
    "intrinsics.json",
    "intrinsic.json",
    "intrinsics.txt",
    "intrinsic.txt",
    "camera-intrinsics.txt",  # tsdf-fusion and 7-Scenes style: a plain 3x3 matrix
)
POINTS_FILES = ("points.ply", "points.pth", "points.parquet")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Voxel indices are packed into one int64 key, 21 bits per axis.
_VOXEL_OFFSET = 1 << 20


class PosedRGBDConfig(LayoutConfig):
    visibility_threshold: float | None = Field(0.1, gt=0)
    depth_scale: float = Field(1000.0, gt=0, description="depth PNG value per metre")
    frame_stride: int = Field(1, ge=1, description="use every k-th frame (sorted order)")
    image_width: int | None = Field(None, gt=0, description="fusion size; None: the stored colour size")
    image_height: int | None = Field(None, gt=0)
    intrinsics: tuple[float, float, float, float] | None = Field(
        None, description="fx, fy, cx, cy at the stored colour size (overrides any intrinsics file)"
    )
    intrinsics_file: str | None = Field(None, description="file name in the capture folder")
    trajectory_file: str = "trajectory.log"
    points_file: str | None = Field(None, description="point cloud file in the capture folder (.ply/.pth/.parquet)")
    cloud_frame_stride: int = Field(1, ge=1, description="back-project every k-th used view when building a cloud")
    voxel_size: float = Field(0.02, gt=0)
    voxel_mode: Literal["first", "centroid"] = "first"
    max_depth: float | None = Field(10.0, gt=0, description="ignore depth beyond this (metres) when building a cloud")

    @model_validator(mode="after")
    def _size_pair(self) -> PosedRGBDConfig:
        if (self.image_width is None) != (self.image_height is None):
            raise ValueError("set both image_width and image_height, or neither")
        return self


def read_trajectory_log(data: bytes, scene_id: str, uri: str) -> dict[int, np.ndarray]:
    """``{frame index: 4x4 camera-to-world}`` from a Redwood/Open3D ``.log`` trajectory."""
    lines = [line.split() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if len(lines) % 5:
        raise SceneError(scene_id, "trajectory", f"{len(lines)} non-empty lines; expected 5 per frame", uri)
    poses: dict[int, np.ndarray] = {}
    for start in range(0, len(lines), 5):
        header, rows = lines[start], lines[start + 1 : start + 5]
        try:
            index = int(header[0])
            matrix = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
        except (ValueError, IndexError):
            raise SceneError(scene_id, "trajectory", f"malformed entry at line {start + 1}", uri) from None
        if matrix.shape != (4, 4) or len(header) != 3:
            raise SceneError(scene_id, "trajectory", f"malformed entry at line {start + 1}", uri)
        if index in poses:
            raise SceneError(scene_id, "trajectory", f"frame {index} appears twice", uri)
        poses[index] = matrix
    return poses


def backproject(
    depth: np.ndarray, color: np.ndarray, intrinsics: np.ndarray, cam_to_world: np.ndarray, max_depth: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """World points (float64 [M,3]) and colours (uint8 [M,3]) of the valid depth pixels, row-major."""
    valid = depth > 0
    if max_depth is not None:
        valid &= depth <= max_depth
    v, u = np.nonzero(valid)
    z = depth[v, u].astype(np.float64)
    k = intrinsics
    cam = np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], axis=1)
    world = cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    return world, color[v, u]


class VoxelCloud:
    """Incremental voxel downsampling: add point batches in order, then read the cloud."""

    def __init__(self, voxel_size: float, mode: Literal["first", "centroid"]):
        self.voxel_size = voxel_size
        self.mode = mode
        self._keys = np.zeros(0, np.int64)
        self._xyz = np.zeros((0, 3), np.float64)  # first point, or the running sum
        self._rgb = np.zeros((0, 3), np.float64)
        self._count = np.zeros(0, np.int64)

    def _key(self, xyz: np.ndarray) -> np.ndarray:
        index = np.floor(xyz / self.voxel_size).astype(np.int64) + _VOXEL_OFFSET
        if index.size and (index.min() < 0 or index.max() >= 2 * _VOXEL_OFFSET):
            raise ValueError(f"points span more than {2 * _VOXEL_OFFSET} voxels of {self.voxel_size} m per axis")
        return (index[:, 0] << 42) | (index[:, 1] << 21) | index[:, 2]

    def add(self, xyz: np.ndarray, rgb: np.ndarray) -> None:
        keys = np.concatenate([self._keys, self._key(xyz)])
        all_xyz = np.concatenate([self._xyz, xyz.astype(np.float64)])
        all_rgb = np.concatenate([self._rgb, rgb.astype(np.float64)])
        count = np.concatenate([self._count, np.ones(len(xyz), np.int64)])
        self._keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        if self.mode == "first":
            self._xyz, self._rgb = all_xyz[first], all_rgb[first]
            self._count = np.ones(len(first), np.int64)
            return
        n = len(self._keys)
        self._xyz = np.stack([np.bincount(inverse, all_xyz[:, i], n) for i in range(3)], axis=1)
        self._rgb = np.stack([np.bincount(inverse, all_rgb[:, i], n) for i in range(3)], axis=1)
        self._count = np.bincount(inverse, count, n).astype(np.int64)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz float32 [N,3], rgb uint8 [N,3])`` sorted by voxel."""
        scale = self._count[:, None] if self.mode == "centroid" else 1
        xyz = (self._xyz / scale).astype(np.float32)
        rgb = np.clip(np.rint(self._rgb / scale), 0, 255).astype(np.uint8)
        return xyz, rgb


@register_layout
class PosedRGBDLayout(Layout):
    name = "posed-rgbd"
    config_model = PosedRGBDConfig
    config: PosedRGBDConfig

    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        return list_folder_scenes(root, split, lambda folder: self._kind(list_files(folder)) is not None)

    def _kind(self, files: dict[str, str]) -> str | None:
        """The capture form of a folder's files: "redwood", "7scenes" or None."""
        if "color" in files and self.config.trajectory_file in files:
            return "redwood"
        if any(name.startswith("frame-") and ".color." in name for name in files):
            return "7scenes"
        return None

    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        cfg = self.config
        folder = ref.source
        files = list_files(folder)
        kind = self._kind(files)
        if kind is None:
            raise SceneError(ref.scene_id, "layout", "neither color/ + trajectory file nor frame-*.color.* files", folder)
        k, k_size = self._intrinsics(ref.scene_id, files)
        if kind == "redwood":
            specs = self._redwood_specs(ref.scene_id, folder, files)
        else:
            specs = self._seven_scenes_specs(folder, files)
        specs = [replace(s, intrinsics=k, intrinsics_size=k_size) for s in specs[:: cfg.frame_stride]]
        if not specs:
            raise SceneError(ref.scene_id, "views", "no frames found", folder)
        if cfg.image_width and cfg.image_height:
            size = (cfg.image_width, cfg.image_height)
        else:
            size = stored_image_size(ref.scene_id, specs[0].frame_id, specs[0].color_uri)
        views, skipped = self.build_views(ref.scene_id, specs, size)
        points = self._points(ref.scene_id, folder, files, views, size)
        return self.make_scene(ref, points, (views, skipped), size, cfg.depth_scale)

    def _intrinsics(self, scene_id: str, files: dict[str, str]) -> tuple[np.ndarray, tuple[int, int] | None]:
        """K and the (W, H) it belongs to (None: the stored colour size)."""
        cfg = self.config
        if cfg.intrinsics is not None:
            return pinhole_intrinsics(*cfg.intrinsics), None
        names = (cfg.intrinsics_file,) if cfg.intrinsics_file else INTRINSICS_FILES
        name = next((n for n in names if n in files), None)
        if name is None:
            raise SceneError(
                scene_id, "intrinsics", f"no intrinsics file (looked for {', '.join(names)}); "
                "name yours with --set intrinsics_file=<file name>, or give --set intrinsics=[fx,fy,cx,cy]",
            )  # fmt: skip
        uri = files[name]
        if not name.endswith(".json"):
            return read_scene_matrix(scene_id, "intrinsics", uri, (3, 3)), None
        data = read_scene_file(scene_id, "intrinsics", uri)
        try:
            spec = json.loads(data.decode("utf-8"))
            if "intrinsic_matrix" in spec:
                k = np.asarray(spec["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # column-major
            else:
                k = pinhole_intrinsics(spec["fx"], spec["fy"], spec["cx"], spec["cy"])
            size = (int(spec["width"]), int(spec["height"])) if "width" in spec and "height" in spec else None
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SceneError(
                scene_id, "intrinsics", f"expected JSON with intrinsic_matrix (9 values) or fx, fy, cx, cy ({exc})", uri
            ) from None
        return k, size

    def _redwood_specs(self, scene_id: str, folder: str, files: dict[str, str]) -> list[ViewSpec]:
        colors = sorted(
            (name, uri) for name, uri in list_files(files["color"]).items() if name.lower().endswith(_IMAGE_SUFFIXES)
        )
        log_uri = files[self.config.trajectory_file]
        poses = read_trajectory_log(read_scene_file(scene_id, "trajectory", log_uri), scene_id, log_uri)
        if sorted(poses) != list(range(len(colors))):
            raise SceneError(
                scene_id, "trajectory", f"{len(poses)} poses for {len(colors)} colour images "
                "(entry i must belong to the i-th colour image)", log_uri,
            )  # fmt: skip
        specs = []
        for i, (name, uri) in enumerate(colors):
            frame = name.rsplit(".", 1)[0]
            depth_uri = storage.join(folder, "depth", f"{frame}.png")
            specs.append(ViewSpec(frame, uri, depth_uri, cam_to_world=poses[i], pose_uri=log_uri))
        return specs

    def _seven_scenes_specs(self, folder: str, files: dict[str, str]) -> list[ViewSpec]:
        specs = []
        for name, uri in sorted(files.items()):
            if not (name.startswith("frame-") and ".color." in name):
                continue
            base = name.split(".color.", 1)[0]
            frame = base.removeprefix("frame-")
            depth = storage.join(folder, f"{base}.depth.png")
            specs.append(ViewSpec(frame, uri, depth, pose_uri=storage.join(folder, f"{base}.pose.txt")))
        return specs

    def _points(
        self, scene_id: str, folder: str, files: dict[str, str], views: list[manifest.ViewRecord], size: tuple[int, int]
    ) -> Points:
        """The capture's point cloud file, or a cloud built from the views' depth."""
        cfg = self.config
        names = (cfg.points_file,) if cfg.points_file else POINTS_FILES
        name = next((n for n in names if n in files), None)
        if cfg.points_file and name is None:
            raise SceneError(scene_id, "points", "points_file not found", storage.join(folder, cfg.points_file))
        if name is not None:
            return load_points_file(files[name], scene_id)
        cloud = VoxelCloud(cfg.voxel_size, cfg.voxel_mode)
        for view in views[:: cfg.cloud_frame_stride]:
            color, depth = self._decode(scene_id, view, size)
            world, rgb = backproject(depth, color, view.intrinsics_matrix, view.pose_matrix, cfg.max_depth)
            try:
                cloud.add(world, rgb)
            except ValueError as exc:
                raise SceneError(scene_id, "points", str(exc), view.depth_uri) from None
        xyz, rgb = cloud.points()
        if len(xyz) == 0:
            raise SceneError(scene_id, "points", "no valid depth to build a point cloud from", folder)
        labels = np.full(len(xyz), IGNORE_LABEL, np.int16)
        return validated_points(scene_id, xyz, rgb, labels, folder)

    def _decode(self, scene_id: str, view: manifest.ViewRecord, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        try:
            color = images.resize_color(images.decode_color(storage.read_bytes(view.color_uri), view.color_uri), *size)
            depth = images.decode_depth(storage.read_bytes(view.depth_uri), self.config.depth_scale, view.depth_uri)
        except storage.StorageError as exc:
            raise SceneError(scene_id, f"view {view.frame_id}", f"cannot read file: {exc.reason}", exc.uri) from None
        except images.ImageDecodeError as exc:
            raise SceneError(scene_id, f"view {view.frame_id}", str(exc)) from None
        return color, images.resize_nearest(depth, *size)
