"""Exact ray casting of synthetic rooms into posed RGB-D views with label maps, and their cameras.

Cameras follow the OpenCV convention (x right, y down, z forward); poses are camera-to-world.
The ray of pixel (u, v) has camera direction ``((u-cx)/fx, (v-cy)/fy, 1)``, the inverse of the
projection ``u = x*fx/z + cx`` rounded, so its ray parameter at a hit is the z-depth along the
optical axis (the convention of RGB-D depth images), not the distance to the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openscene_ray.kernel.scene import IGNORE_LABEL, Scene, View
from openscene_ray.synth.primitives import NEAR_LIMIT, shade, surface_normals
from openscene_ray.synth.world import SynthConfig, SynthScene

__all__ = [
    "FRAME_STEP",
    "HEIGHT",
    "WIDTH",
    "SynthView",
    "camera_poses",
    "look_at",
    "render_view",
    "render_view_parts",
    "render_views",
    "scannet_intrinsics",
    "to_scene",
]

WIDTH, HEIGHT = 320, 240
FX = FY = 288.9353
CX, CY = 159.5, 119.5
FRAME_STEP = 20  # frame names 0, 20, 40, ... like ScanNet's every-20th-frame export

_SHELL_KINDS = ("floor", "wall", "ceiling")
_CAMERA_CLEARANCE = 0.25  # metres between a camera and any object's bounding box
_WALL_MARGIN = 0.35


def scannet_intrinsics() -> np.ndarray:
    """The global ScanNet intrinsics at 320x240 (fx=fy=288.9353, cx=159.5, cy=119.5), 3x3 float64."""
    return np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SynthView:
    """One rendered frame: colour uint8 [H,W,3], depth float32 metres [H,W] (0: no hit), labels uint8,
    and (from :func:`render_views`) the part map: primitive index int32 [H,W], -1 = no hit."""

    frame_id: int
    cam_to_world: np.ndarray
    color: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    part: np.ndarray | None = None


# Pairs of corner indices (``Box.corners`` order) joined by an edge of the box.
_BOX_EDGES = np.array([(i, i ^ bit) for i in range(8) for bit in (1, 2, 4) if not i & bit])


def _pixel_windows(
    corners: np.ndarray, world_to_cam: np.ndarray, intrinsics: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Per primitive, (v0, v1, u0, u1): the pixels whose rays can hit it beyond NEAR_LIMIT.

    ``corners`` [P,8,3] are bounding-box corners. A box straddling the plane z = NEAR_LIMIT is
    clipped by it first (its front part is the hull of the corners in front plus the edge
    crossings); the projection of the convex front part bounds the hits. Empty windows have
    v0 >= v1.
    """
    cam = corners @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    front = cam[..., 2] >= NEAR_LIMIT
    u_range = np.full((len(cam), 2), (np.inf, -np.inf))
    v_range = u_range.copy()
    whole = front.all(axis=1)
    z = cam[whole, :, 2]
    u = cam[whole, :, 0] / z * intrinsics[0, 0] + intrinsics[0, 2]
    v = cam[whole, :, 1] / z * intrinsics[1, 1] + intrinsics[1, 2]
    u_range[whole] = np.stack([u.min(axis=1), u.max(axis=1)], axis=1)
    v_range[whole] = np.stack([v.min(axis=1), v.max(axis=1)], axis=1)
    start, end = _BOX_EDGES[:, 0], _BOX_EDGES[:, 1]
    for index in np.flatnonzero(front.any(axis=1) & ~whole):
        box, inside = cam[index], front[index]
        crossing = inside[start] != inside[end]
        a, b = box[start[crossing]], box[end[crossing]]
        weight = (NEAR_LIMIT - a[:, 2]) / (b[:, 2] - a[:, 2])
        clipped = np.concatenate([box[inside], a + weight[:, None] * (b - a)])
        z_clipped = np.maximum(clipped[:, 2], NEAR_LIMIT)
        u = clipped[:, 0] / z_clipped * intrinsics[0, 0] + intrinsics[0, 2]
        v = clipped[:, 1] / z_clipped * intrinsics[1, 1] + intrinsics[1, 2]
        u_range[index], v_range[index] = (u.min(), u.max()), (v.min(), v.max())
    with np.errstate(invalid="ignore"):
        u0 = np.maximum(np.floor(u_range[:, 0]), 0)
        u1 = np.minimum(np.ceil(u_range[:, 1]), width - 1) + 1
        v0 = np.maximum(np.floor(v_range[:, 0]), 0)
        v1 = np.minimum(np.ceil(v_range[:, 1]), height - 1) + 1
    empty = ~np.isfinite(u_range).all(axis=1) | (u0 >= u1) | (v0 >= v1)
    windows = np.stack([v0, v1, u0, u1], axis=1)
    windows[empty] = 0
    return windows.astype(np.int64)


def _cast_rays(
    scene: SynthScene, intrinsics: np.ndarray, cam_to_world: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Exact ray casting: (origin [3], world ray direction planes 3 x [H,W], ray parameter [H,W]
    (inf: no hit), primitive index [H,W] (-1: no hit), face id [H,W])."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x_cam = (u - intrinsics[0, 2]) / intrinsics[0, 0]
    y_cam = (v - intrinsics[1, 2]) / intrinsics[1, 1]
    r = cam_to_world[:3, :3]
    rays = [r[i, 0] * x_cam + r[i, 1] * y_cam + r[i, 2] for i in range(3)]  # world direction planes
    origin = cam_to_world[:3, 3]
    world_to_cam = np.linalg.inv(cam_to_world)

    depth = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int32)
    face = np.zeros((height, width), dtype=np.int8)
    windows = _pixel_windows(scene.primitive_corners, world_to_cam, intrinsics, width, height)
    for index, (primitive, (v0, v1, u0, u1)) in enumerate(zip(scene.primitives, windows.tolist())):
        if v0 >= v1:
            continue
        rows, cols = slice(v0, v1), slice(u0, u1)
        t, window_face = primitive.intersect(origin, rays[0][rows, cols], rays[1][rows, cols], rays[2][rows, cols])
        closer = t < depth[rows, cols]
        np.copyto(depth[rows, cols], t, where=closer)
        np.copyto(owner[rows, cols], index, where=closer)
        np.copyto(face[rows, cols], window_face, where=closer)
    return origin, rays, depth, owner, face


def render_view_parts(
    scene: SynthScene,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator | None = None,
    image_noise: float = 0.0,
    depth_noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`render_view` plus the part map: the primitive index of each pixel, int32 [H,W]
    (-1: no hit). Objects are groups of parts (``scene.objects[i].primitive_indices``)."""
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    cam_to_world = np.asarray(cam_to_world, dtype=np.float64)
    origin, rays, depth, owner, face = _cast_rays(scene, intrinsics, cam_to_world, width, height)
    hit = owner >= 0
    hit_owner, hit_depth = owner[hit], depth[hit]
    points = origin + hit_depth[:, None] * np.stack([plane[hit] for plane in rays], axis=1)
    colors = np.array([p.color for p in scene.primitives], dtype=np.float64)
    color = np.zeros((height, width, 3), dtype=np.float32)
    color[hit] = shade(colors[hit_owner], surface_normals(scene.primitives, hit_owner, face[hit], points))
    out_depth = np.zeros((height, width))
    out_depth[hit] = hit_depth
    if rng is not None:
        color += rng.standard_normal(color.shape, dtype=np.float32) * np.float32(image_noise)
        if depth_noise > 0:
            out_depth *= 1.0 + rng.normal(0.0, depth_noise, out_depth.shape)
    labels = np.array([p.label for p in scene.primitives] + [IGNORE_LABEL], dtype=np.uint8)  # owner -1: the last
    image = np.clip(np.rint(color), 0, 255).astype(np.uint8)
    return image, out_depth.astype(np.float32), labels[owner], owner


def render_view(
    scene: SynthScene,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator | None = None,
    image_noise: float = 0.0,
    depth_noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view: (colour uint8 [H,W,3], z-depth float32 metres [H,W], labels uint8 [H,W]).

    Pixels that hit nothing have depth 0, label 255 and black colour. Without ``rng`` the
    images are exact; with it, Gaussian colour noise (std ``image_noise``, 0..255 units) and,
    when ``depth_noise`` > 0, multiplicative depth noise of that relative std are added.
    """
    color, depth, labels, _ = render_view_parts(
        scene, intrinsics, cam_to_world, width, height, rng, image_noise, depth_noise
    )
    return color, depth, labels


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (OpenCV axes) at ``eye`` looking at ``target`` with world +z up (no roll)."""
    forward = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: the view direction is vertical, so the image's up is undefined")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def _camera_is_clear(scene: SynthScene, eye: np.ndarray, obstacles: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    lx, ly, h = scene.room_size
    inside = _WALL_MARGIN <= eye[0] <= lx - _WALL_MARGIN and _WALL_MARGIN <= eye[1] <= ly - _WALL_MARGIN
    if not inside or not 0.2 <= eye[2] <= h - 0.2:
        return False
    return not any(np.all(eye >= low) and np.all(eye <= high) for low, high in obstacles)


def _look_target(scene: SynthScene, eye: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An object centre (70%) or a random point in the room, at least 1 m away horizontally."""
    lx, ly, _ = scene.room_size
    objects = [o for o in scene.objects if o.kind not in _SHELL_KINDS]
    for _ in range(50):
        if objects and rng.random() < 0.7:
            target = objects[int(rng.integers(len(objects)))].center + rng.normal(0.0, 0.1, 3)
        else:
            target = np.array([rng.uniform(0.15, 0.85) * lx, rng.uniform(0.15, 0.85) * ly, rng.uniform(0.2, 1.2)])
        if np.linalg.norm(target[:2] - eye[:2]) >= 1.0:
            return target
    heading = rng.uniform(0.0, 2 * math.pi)
    return eye + np.array([math.cos(heading), math.sin(heading), -0.5])


def camera_poses(
    scene: SynthScene, n: int, rng: np.random.Generator, height: tuple[float, float] = (1.2, 1.6)
) -> np.ndarray:
    """``n`` camera-to-world poses [n,4,4] on a jittered ellipse around the room centre.

    Cameras stand at ``height`` metres, at least 0.35 m from the walls and 0.25 m from every
    object's bounding box, and look at objects or random points of the room.
    """
    lx, ly, _ = scene.room_size
    semi_x, semi_y = max(lx / 2 - 0.9, 0.3), max(ly / 2 - 0.9, 0.3)
    obstacles = [
        (np.asarray(o.bounds_min) - _CAMERA_CLEARANCE, np.asarray(o.bounds_max) + _CAMERA_CLEARANCE)
        for o in scene.objects
        if o.kind not in _SHELL_KINDS
    ]
    phase = rng.uniform(0.0, 2 * math.pi)
    poses = np.empty((n, 4, 4))
    for i in range(n):
        for attempt in range(400):
            angle = phase + 2 * math.pi * (i + rng.uniform(-0.3, 0.3)) / n
            scale = rng.uniform(0.55, 1.0) if attempt < 200 else rng.uniform(0.0, 1.3)
            x, y = lx / 2 + semi_x * scale * math.cos(angle), ly / 2 + semi_y * scale * math.sin(angle)
            eye = np.array([x, y, rng.uniform(*height)])
            if _camera_is_clear(scene, eye, obstacles):
                break
        else:
            raise RuntimeError(f"{scene.scene_id}: found no free camera position for view {i}")
        poses[i] = look_at(eye, _look_target(scene, eye, rng))
    return poses


def render_views(scene: SynthScene, config: SynthConfig) -> list[SynthView]:
    """The scene's ``config.views_per_scene`` views at ScanNet size and intrinsics (deterministic)."""
    poses = camera_poses(
        scene, config.views_per_scene, np.random.default_rng([config.seed, scene.index, 2]), config.camera_height
    )
    noise_rng = np.random.default_rng([config.seed, scene.index, 3])
    intrinsics = scannet_intrinsics()
    views = []
    for i, pose in enumerate(poses):
        color, depth, label, part = render_view_parts(
            scene, intrinsics, pose, WIDTH, HEIGHT, noise_rng, config.image_noise, config.depth_noise
        )
        views.append(SynthView(i * FRAME_STEP, pose, color, depth, label, part))
    return views


def to_scene(scene: SynthScene, views: list[SynthView]) -> Scene:
    """The validated :class:`openscene_ray.kernel.scene.Scene` of a synthetic scene and its rendered views."""
    intrinsics = scannet_intrinsics()
    return Scene.create(
        scene.scene_id,
        scene.xyz,
        scene.rgb,
        scene.labels,
        [View(str(v.frame_id), v.color, v.depth, intrinsics, v.cam_to_world, label=v.label) for v in views],
    )
