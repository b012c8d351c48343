"""Procedural indoor rooms built from z-rotated boxes and vertical cylinders, and their surface points.

A room's interior is the box ``[0,Lx] x [0,Ly] x [0,H]`` (metres, z up). A floor slab and four wall
slabs close it from outside. ScanNet-20 has no ceiling class, so the ceiling is off by default;
when enabled it is a slab above the room labelled 255 (ignore). Furniture of ScanNet-20 classes is
assembled from primitives with class-typical proportions. Each primitive carries its class id
(an index into ``get_label_set("scannet20").class_names``) and a base colour.

Surface points are sampled uniformly by area over the primitives' surfaces, keeping only points
that can be seen at all: inside the room and not inside (or on the hidden contact face of)
another primitive, e.g. the wall behind a picture or the floor under a bed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.scene import IGNORE_LABEL

__all__ = [
    "NEAR_LIMIT",
    "Box",
    "Cylinder",
    "Primitive",
    "SceneObject",
    "SynthConfig",
    "SynthScene",
    "class_id",
    "generate_scene",
    "sample_surface",
    "scene_id_for",
    "shade",
    "surface_normals",
]

RoomType = Literal["bedroom", "living_room", "kitchen", "office", "bathroom"]
ROOM_TYPES: tuple[str, ...] = ("bedroom", "living_room", "kitchen", "office", "bathroom")

_CLASS_IDS = {name: i for i, name in enumerate(get_label_set("scannet20").class_names)}

# Two directional lights (key and fill) plus ambient light; shared by points and rendered images.
_KEY_LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
_FILL_LIGHT = np.array([-0.5, -0.3, 0.4]) / np.linalg.norm([-0.5, -0.3, 0.4])
_AMBIENT, _KEY_GAIN, _FILL_GAIN = 0.4, 0.5, 0.25

_WALL_THICKNESS = 0.1
NEAR_LIMIT = 1e-6  # ray hits count only beyond this ray parameter (metres of z-depth)


def class_id(name: str) -> int:
    """The ScanNet-20 class id of ``name`` (e.g. ``class_id("chair") == 4``)."""
    return _CLASS_IDS[name]


def shade(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambert shading: ``albedo`` [M,3] (0..255) lit by the fixed key/fill lights, float [M,3]."""
    factor = (
        _AMBIENT
        + _KEY_GAIN * np.maximum(normals @ _KEY_LIGHT, 0.0)
        + _FILL_GAIN * np.maximum(normals @ _FILL_LIGHT, 0.0)
    )
    return albedo * factor[:, None]


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Box:
    """A box rotated by ``yaw`` (radians) about the vertical axis through ``center``.

    Face ids are ``2*axis + side`` in the box frame (axis 0,1,2 = x,y,z; side 1 = positive face).
    """

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    yaw: float
    label: int
    color: tuple[float, float, float]

    def corners(self) -> np.ndarray:
        """The 8 corners in world coordinates, [8,3]; corner ``4*ix + 2*iy + iz`` has signs (ix, iy, iz)."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return (signs * np.asarray(self.half_size)) @ _yaw_matrix(self.yaw).T + np.asarray(self.center)

    def area(self) -> float:
        hx, hy, hz = self.half_size
        return 8.0 * (hy * hz + hx * hz + hx * hy)

    def face_normals(self) -> np.ndarray:
        """World unit normals of the faces, [6,3] indexed by face id."""
        local = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float64)
        return local @ _yaw_matrix(self.yaw).T

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points uniform by area on the surface [n,3] and their face ids [n]."""
        hx, hy, hz = self.half_size
        areas = np.repeat([hy * hz, hx * hz, hx * hy], 2)
        face = rng.choice(6, size=n, p=areas / areas.sum())
        half = np.asarray(self.half_size)
        local = rng.uniform(-1.0, 1.0, size=(n, 3)) * half
        axis = face // 2
        local[np.arange(n), axis] = np.where(face % 2 == 1, 1.0, -1.0) * half[axis]
        return local @ _yaw_matrix(self.yaw).T + np.asarray(self.center), face

    def contains(self, points: np.ndarray, tolerance: float) -> np.ndarray:
        """Whether each point [n,3] lies in the closed box grown by ``tolerance``."""
        local = (points - np.asarray(self.center)) @ _yaw_matrix(self.yaw)
        return np.all(np.abs(local) <= np.asarray(self.half_size) + tolerance, axis=1)

    def intersect(
        self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slab test for rays ``origin + t*(dx,dy,dz)``.

        Returns the first hit ``t`` beyond NEAR_LIMIT (inf: miss) and the entry face id.
        """
        ox, oy, oz = (np.asarray(origin, dtype=np.float64) - np.asarray(self.center)).tolist()
        if self.yaw:
            c, s = math.cos(self.yaw), math.sin(self.yaw)
            ox, oy = c * ox + s * oy, c * oy - s * ox
            dx, dy = c * dx + s * dy, c * dy - s * dx
        hx, hy, hz = self.half_size
        with np.errstate(divide="ignore", invalid="ignore"):
            near_x, far_x = _slab(ox, dx, hx)
            near_y, far_y = _slab(oy, dy, hy)
            near_z, far_z = _slab(oz, dz, hz)
        near = np.maximum(np.maximum(near_x, near_y), near_z)
        far = np.minimum(np.minimum(far_x, far_y), far_z)
        hit = (near <= far) & (near > NEAR_LIMIT)
        face = np.zeros(near.shape, dtype=np.int8)
        rows = np.nonzero(hit)
        if len(rows[0]):
            entry = near[rows]
            y_face = np.where(entry == near_y[rows], 2 + (dy[rows] < 0), dx[rows] < 0)
            face[rows] = np.where(entry == near_z[rows], 4 + (dz[rows] < 0), y_face)
        return np.where(hit, near, np.inf), face


def _slab(origin: float, direction: np.ndarray, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of the slab ``|x| <= half`` along one axis."""
    inverse = 1.0 / direction
    a = (-half - origin) * inverse
    b = (half - origin) * inverse
    return np.minimum(a, b), np.maximum(a, b)


@dataclass(frozen=True)
class Cylinder:
    """A vertical cylinder with axis through ``center`` (x, y), from ``z_min`` to ``z_max``.

    Face ids: 0 side, 1 bottom cap, 2 top cap.
    """

    center: tuple[float, float]
    z_min: float
    z_max: float
    radius: float
    label: int
    color: tuple[float, float, float]

    def corners(self) -> np.ndarray:
        """The 8 corners of the bounding box in world coordinates, ordered as :meth:`Box.corners`."""
        x, y, r = self.center[0], self.center[1], self.radius
        return np.array(
            [[x + sx * r, y + sy * r, z] for sx in (-1, 1) for sy in (-1, 1) for z in (self.z_min, self.z_max)]
        )

    def area(self) -> float:
        return 2 * math.pi * self.radius * (self.z_max - self.z_min + self.radius)

    def face_normals(self) -> np.ndarray:
        """Cap normals at face ids 1 and 2, [6,3]; the side's (id 0) depends on the point (see surface_normals)."""
        normals = np.zeros((6, 3))
        normals[1, 2], normals[2, 2] = -1.0, 1.0
        return normals

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points uniform by area on the surface (side and both caps) [n,3] and their face ids [n]."""
        cap = math.pi * self.radius**2
        areas = np.array([2 * math.pi * self.radius * (self.z_max - self.z_min), cap, cap])
        face = rng.choice(3, size=n, p=areas / areas.sum())
        angle = rng.uniform(0.0, 2 * math.pi, n)
        radial = np.where(face == 0, self.radius, self.radius * np.sqrt(rng.uniform(0.0, 1.0, n)))
        z = np.select([face == 1, face == 2], [self.z_min, self.z_max], rng.uniform(self.z_min, self.z_max, n))
        points = np.stack([self.center[0] + radial * np.cos(angle), self.center[1] + radial * np.sin(angle), z], axis=1)
        return points, face

    def contains(self, points: np.ndarray, tolerance: float) -> np.ndarray:
        """Whether each point [n,3] lies in the closed cylinder grown by ``tolerance``."""
        radial2 = ((points[:, :2] - np.asarray(self.center)) ** 2).sum(axis=1)
        return (
            (radial2 <= (self.radius + tolerance) ** 2)
            & (points[:, 2] >= self.z_min - tolerance)
            & (points[:, 2] <= self.z_max + tolerance)
        )

    def intersect(
        self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Side quadratic plus both caps: first hit ``t`` beyond NEAR_LIMIT (inf: miss) and its face id."""
        ox, oy, oz = float(origin[0] - self.center[0]), float(origin[1] - self.center[1]), float(origin[2])
        a = dx * dx + dy * dy
        b = 2.0 * (ox * dx + oy * dy)
        c = ox * ox + oy * oy - self.radius**2
        disc = b * b - 4.0 * a * c
        face = np.zeros(np.shape(dx), dtype=np.int8)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)  # entry point (origin outside)
            z_side = oz + t_side * dz
            best = np.where(
                (disc >= 0) & (z_side >= self.z_min) & (z_side <= self.z_max) & (t_side > NEAR_LIMIT), t_side, np.inf
            )
            for face_id, z_cap in ((1, self.z_min), (2, self.z_max)):
                t_cap = (z_cap - oz) / dz
                radial2 = (ox + t_cap * dx) ** 2 + (oy + t_cap * dy) ** 2
                better = (radial2 <= self.radius**2) & (t_cap > NEAR_LIMIT) & (t_cap < best)
                best = np.where(better, t_cap, best)
                face[better] = face_id
        return best, face


Primitive = Box | Cylinder


def surface_normals(
    primitives: tuple[Primitive, ...] | list[Primitive], owner: np.ndarray, face: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Outward unit normals [n,3] at surface points [n,3] on face ``face`` of ``primitives[owner]``."""
    normals = np.stack([p.face_normals() for p in primitives])[owner, face]
    is_cylinder = np.array([isinstance(p, Cylinder) for p in primitives])
    side = np.flatnonzero(is_cylinder[owner] & (face == 0))
    if len(side):
        axes = np.array([p.center[:2] for p in primitives])[owner[side]]
        offset = points[side, :2] - axes
        normals[side, :2] = offset / np.maximum(np.linalg.norm(offset, axis=1), 1e-12)[:, None]
    return normals


@dataclass(frozen=True)
class SceneObject:
    """One object instance: its kind (e.g. ``"dining_table"``), class id and primitive indices."""

    kind: str
    label: int
    primitive_indices: tuple[int, ...]
    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.bounds_min) + np.asarray(self.bounds_max)) / 2


class SynthConfig(StrictModel):
    """Parameters of the synthetic world (``openscene-ray synth``). Ranges are ``[min, max]``."""

    seed: int = 0
    num_scenes: int = Field(10, ge=1)
    views_per_scene: int = Field(30, ge=1)
    points_per_scene: int = Field(50_000, ge=100)
    room_width: tuple[float, float] = (4.0, 7.0)  # x extent, metres
    room_length: tuple[float, float] = (3.5, 6.0)  # y extent, metres
    room_height: tuple[float, float] = (2.5, 3.0)
    room_types: list[RoomType] = Field(default_factory=lambda: list(ROOM_TYPES), min_length=1)
    # Furniture pieces per room (every chair counts). Walls also get one door, 1-2 windows (with
    # curtains in some rooms) and up to 2 pictures.
    furniture_per_room: tuple[int, int] = (4, 8)
    ceiling: bool = False  # labelled 255: ScanNet-20 has no ceiling class
    camera_height: tuple[float, float] = (1.2, 1.6)
    point_color_noise: float = Field(4.0, ge=0)  # std of per-point colour noise, 0..255 units
    image_noise: float = Field(3.0, ge=0)  # std of per-pixel colour noise, 0..255 units
    depth_noise: float = Field(0.0, ge=0, le=0.1)  # relative std of multiplicative depth noise
    val_fraction: float = Field(1.0, ge=0, le=1)  # the last round(n*f) scenes are "val", others "train"

    @model_validator(mode="after")
    def _check_ranges(self) -> SynthConfig:
        for name in ("room_width", "room_length", "room_height", "furniture_per_room", "camera_height"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: min {low} is larger than max {high}")
        if min(self.room_width[0], self.room_length[0]) < 3.0:
            raise ValueError("room_width and room_length must be at least 3.0 m")
        if self.room_height[0] < 2.3:
            raise ValueError("room_height must be at least 2.3 m (doors are up to 2.1 m tall)")
        if self.furniture_per_room[0] < 1:
            raise ValueError("furniture_per_room: min must be at least 1")
        if self.camera_height[0] < 0.3 or self.camera_height[1] > self.room_height[0] - 0.3:
            raise ValueError("camera_height must lie within [0.3, min room_height - 0.3]")
        return self


@dataclass(frozen=True)
class SynthScene:
    """A generated room: its primitives and objects plus area-sampled surface points.

    ``xyz`` float32 [N,3] metres, ``rgb`` uint8 [N,3], ``labels`` int16 [N] (255 = ignore).
    """

    scene_id: str
    index: int
    room_type: str
    room_size: tuple[float, float, float]
    primitives: tuple[Primitive, ...]
    objects: tuple[SceneObject, ...]
    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray

    @cached_property
    def primitive_corners(self) -> np.ndarray:
        """Bounding-box corners of every primitive, [P,8,3] (computed once)."""
        return np.stack([p.corners() for p in self.primitives])


def scene_id_for(index: int) -> str:
    """ScanNet-style scene id of the ``index``-th synthetic scene, e.g. ``scene0003_00``."""
    return f"scene{index:04d}_00"


# ---------------------------------------------------------------------------------------------
# Object catalogue. Builders return parts in the object frame: origin at the centre of the
# footprint on the floor, front towards +y, back (against a wall) towards -y. Labels are set
# when the object is placed.

_WOOD = ((140, 100, 60), (165, 120, 75), (110, 75, 45), (190, 160, 120), (90, 60, 40))
_FABRIC = ((170, 60, 60), (60, 90, 150), (90, 130, 90), (200, 180, 150), (120, 120, 130), (80, 60, 100))
_LIGHT = ((225, 225, 215), (235, 230, 220), (210, 215, 225))
_METAL = ((160, 160, 165), (90, 90, 95), (200, 200, 205))
_WALL = ((215, 210, 195), (200, 210, 215), (225, 215, 200), (190, 200, 185))
_FLOOR = ((150, 110, 70), (120, 120, 120), (180, 160, 130), (90, 70, 55))
_ART = ((200, 80, 40), (40, 120, 180), (230, 200, 60), (60, 160, 90), (150, 50, 140))


def _color(rng: np.random.Generator, palette, jitter: float = 15.0) -> tuple[float, float, float]:
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float64)
    return tuple(np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255).tolist())


def _box(x: float, y: float, z0: float, size_x: float, size_y: float, size_z: float, color) -> Box:
    """A part in the object frame: centre (x, y) on the footprint, bottom at z0, full sizes."""
    return Box((x, y, z0 + size_z / 2), (size_x / 2, size_y / 2, size_z / 2), 0.0, IGNORE_LABEL, color)


def _cylinder(x: float, y: float, z0: float, z1: float, radius: float, color) -> Cylinder:
    return Cylinder((x, y), z0, z1, radius, IGNORE_LABEL, color)


@dataclass(frozen=True)
class _Model:
    """An unplaced object: parts in the object frame and its footprint (width along x, depth along y)."""

    parts: tuple[Primitive, ...]
    width: float
    depth: float
    height: float


def _model(parts: list[Primitive], width: float, depth: float) -> _Model:
    height = max(p.corners()[:, 2].max() for p in parts)
    return _Model(tuple(parts), width, depth, float(height))


def _legs(rng, width, depth, height, leg, color, inset=0.02) -> list[Primitive]:
    """Four legs at the corners of a width x depth footprint, square or round."""
    round_legs = rng.random() < 0.4
    parts: list[Primitive] = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x = sx * (width / 2 - inset - leg / 2)
            y = sy * (depth / 2 - inset - leg / 2)
            if round_legs:
                parts.append(_cylinder(x, y, 0.0, height, leg / 2, color))
            else:
                parts.append(_box(x, y, 0.0, leg, leg, height, color))
    return parts


def _bed(rng) -> _Model:
    width, depth = rng.uniform(1.4, 1.8), rng.uniform(1.95, 2.15)
    frame, bedding = _color(rng, _WOOD), _color(rng, _LIGHT + _FABRIC)
    head = rng.uniform(0.8, 1.1)
    parts = [
        _box(0, -depth / 2 + 0.03, 0, width, 0.06, head, frame),
        _box(0, 0.03, 0, width, depth - 0.06, 0.32, frame),
        _box(0, 0.04, 0.32, width - 0.06, depth - 0.14, 0.22, bedding),
        _box(0, -depth / 2 + 0.3, 0.54, width - 0.3, 0.35, 0.1, _color(rng, _LIGHT)),
    ]
    return _model(parts, width, depth)


def _chair(rng) -> _Model:
    size, seat_z = rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48)
    wood, seat = _color(rng, _WOOD + _METAL), _color(rng, _FABRIC + _WOOD)
    back = rng.uniform(0.4, 0.5)
    parts = _legs(rng, size, size, seat_z, 0.035, wood)
    parts.append(_box(0, 0, seat_z, size, size, 0.04, seat))
    parts.append(_box(0, -size / 2 + 0.02, seat_z + 0.04, size, 0.04, back, seat))
    return _model(parts, size, size)


def _sofa(rng) -> _Model:
    width, depth = rng.uniform(1.6, 2.4), rng.uniform(0.8, 0.95)
    fabric = _color(rng, _FABRIC)
    seat, arm, back = rng.uniform(0.4, 0.45), rng.uniform(0.55, 0.65), rng.uniform(0.8, 0.9)
    parts = [
        _box(0, 0.1, 0, width - 0.4, depth - 0.2, seat, fabric),
        _box(0, -depth / 2 + 0.1, 0, width, 0.2, back, fabric),
        _box(-width / 2 + 0.1, 0.1, 0, 0.2, depth - 0.2, arm, fabric),
        _box(width / 2 - 0.1, 0.1, 0, 0.2, depth - 0.2, arm, fabric),
    ]
    return _model(parts, width, depth)


def _table(rng, width, depth, height) -> _Model:
    wood = _color(rng, _WOOD + _LIGHT)
    if rng.random() < 0.3:  # round pedestal table
        radius = min(width, depth) / 2
        parts = [
            _cylinder(0, 0, height - 0.04, height, radius, wood),
            _cylinder(0, 0, 0.03, height - 0.04, 0.05, wood),
            _cylinder(0, 0, 0, 0.03, min(0.3, radius * 0.6), wood),
        ]
        return _model(parts, 2 * radius, 2 * radius)
    parts = _legs(rng, width, depth, height - 0.04, 0.05, wood, inset=0.05)
    parts.append(_box(0, 0, height - 0.04, width, depth, 0.04, wood))
    return _model(parts, width, depth)


def _dining_table(rng) -> _Model:
    return _table(rng, rng.uniform(1.1, 1.7), rng.uniform(0.8, 1.0), rng.uniform(0.72, 0.77))


def _coffee_table(rng) -> _Model:
    return _table(rng, rng.uniform(0.9, 1.2), rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.48))


def _desk(rng) -> _Model:
    width, depth, height = rng.uniform(1.1, 1.6), rng.uniform(0.6, 0.75), rng.uniform(0.73, 0.77)
    top, body = _color(rng, _WOOD + _LIGHT), _color(rng, _WOOD + _LIGHT + _METAL)
    drawers = rng.uniform(0.35, 0.45)
    parts = [
        _box(0, 0, height - 0.03, width, depth, 0.03, top),
        _box(-width / 2 + 0.015, 0, 0, 0.03, depth, height - 0.03, body),
        _box(width / 2 - drawers / 2, 0, 0, drawers, depth, height - 0.03, body),
    ]
    return _model(parts, width, depth)


def _cabinet(rng) -> _Model:
    width, depth, height = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.55), rng.uniform(0.6, 1.1)
    body = _color(rng, _WOOD + _LIGHT)
    footprint = depth + 0.03  # the handle sticks out 2 cm in front of the body
    parts = [
        _box(0, -0.025, 0, width - 0.04, depth - 0.02, 0.08, _color(rng, _METAL)),
        _box(0, -0.015, 0.08, width, depth, height - 0.08, body),
        _box(0, footprint / 2 - 0.02, height * 0.6, width * 0.3, 0.02, 0.03, _color(rng, _METAL)),
    ]
    return _model(parts, width, footprint)


def _bookshelf(rng) -> _Model:
    width, depth, height = rng.uniform(0.7, 1.2), rng.uniform(0.28, 0.38), rng.uniform(1.5, 2.0)
    wood, panel = _color(rng, _WOOD + _LIGHT), 0.02
    parts = [
        _box(-width / 2 + panel / 2, 0, 0, panel, depth, height, wood),
        _box(width / 2 - panel / 2, 0, 0, panel, depth, height, wood),
        _box(0, -depth / 2 + 0.005, 0, width - 2 * panel, 0.01, height, wood),
        _box(0, 0, 0, width - 2 * panel, depth, 0.06, wood),
        _box(0, 0, height - panel, width - 2 * panel, depth, panel, wood),
    ]
    shelves = int(rng.integers(3, 6))
    inner = width - 2 * panel
    for k in range(1, shelves + 1):
        z = 0.06 + k * (height - 0.06) / (shelves + 1)
        parts.append(_box(0, 0, z, inner, depth, panel, wood))
    for k in range(shelves + 1):  # a row of books on the bottom board and on every shelf
        z0 = 0.06 + k * (height - 0.06) / (shelves + 1) + (panel if k else 0.0)
        gap = (height - 0.06) / (shelves + 1) - panel
        books = inner * rng.uniform(0.3, 0.9)
        x = -inner / 2 + rng.uniform(0, inner - books)
        book_height = gap * rng.uniform(0.5, 0.85)
        parts.append(_box(x + books / 2, 0.01, z0, books, depth - 0.04, book_height, _color(rng, _ART, 40)))
    return _model(parts, width, depth)


def _counter(rng) -> _Model:
    width, depth = rng.uniform(1.4, 2.6), rng.uniform(0.58, 0.65)
    parts = [
        _box(0, -0.01, 0, width, depth - 0.02, 0.86, _color(rng, _LIGHT + _WOOD)),
        _box(0, 0, 0.86, width, depth, 0.04, _color(rng, _METAL + _LIGHT)),
    ]
    return _model(parts, width, depth)


def _refrigerator(rng) -> _Model:
    width, depth, height = rng.uniform(0.6, 0.8), rng.uniform(0.65, 0.75), rng.uniform(1.7, 1.9)
    parts = [
        _box(0, -0.015, 0, width, depth - 0.03, height, _color(rng, _LIGHT + _METAL)),
        _box(width / 2 - 0.06, depth / 2 - 0.015, height * 0.45, 0.03, 0.03, 0.4, _color(rng, _METAL)),
    ]
    return _model(parts, width, depth)


def _toilet(rng) -> _Model:
    white = _color(rng, _LIGHT, 8)
    parts = [
        _box(0, -0.26, 0, 0.4, 0.18, 0.78, white),
        _cylinder(0, 0.05, 0, 0.4, 0.19, white),
    ]
    return _model(parts, 0.4, 0.7)


def _sink(rng) -> _Model:
    white = _color(rng, _LIGHT, 8)
    parts = [
        _cylinder(0, -0.05, 0, 0.7, 0.07, white),
        _box(0, 0, 0.7, 0.56, 0.44, 0.16, white),
        _cylinder(0, -0.17, 0.86, 0.98, 0.015, _color(rng, _METAL)),
    ]
    return _model(parts, 0.56, 0.44)


def _bathtub(rng) -> _Model:
    width, depth, height, wall = rng.uniform(1.5, 1.75), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6), 0.07
    white = _color(rng, _LIGHT, 8)
    parts = [
        _box(0, 0, 0, width, depth, 0.12, white),
        _box(0, -depth / 2 + wall / 2, 0.12, width, wall, height - 0.12, white),
        _box(0, depth / 2 - wall / 2, 0.12, width, wall, height - 0.12, white),
        _box(-width / 2 + wall / 2, 0, 0.12, wall, depth - 2 * wall, height - 0.12, white),
        _box(width / 2 - wall / 2, 0, 0.12, wall, depth - 2 * wall, height - 0.12, white),
    ]
    return _model(parts, width, depth)


def _other_furniture(rng) -> _Model:
    color = _color(rng, _FABRIC + _WOOD)
    if rng.random() < 0.5:  # ottoman / stool
        radius = rng.uniform(0.2, 0.3)
        return _model([_cylinder(0, 0, 0, rng.uniform(0.38, 0.46), radius, color)], 2 * radius, 2 * radius)
    size = rng.uniform(0.35, 0.5)  # side table
    parts = _legs(rng, size, size, 0.5, 0.03, color)
    parts.append(_box(0, 0, 0.5, size, size, 0.03, color))
    return _model(parts, size, size)


def _door(rng) -> _Model:
    width, height = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)
    parts = [
        _box(0, 0, 0, width, 0.04, height, _color(rng, _WOOD + _LIGHT)),
        _box(width / 2 - 0.1, 0.035, 1.0, 0.1, 0.03, 0.03, _color(rng, _METAL)),
    ]
    return _model(parts, width, 0.04)  # the back of the door panel lies on the wall


def _window(rng, width: float, height: float) -> _Model:
    frame, glass = _color(rng, _LIGHT + _WOOD), _color(rng, ((150, 180, 200), (170, 190, 205)), 10)
    bar = 0.05
    parts = [
        _box(0, -0.015, 0, width - 2 * bar, 0.02, height, glass),  # on the wall, recessed in the frame
        _box(-width / 2 + bar / 2, 0, 0, bar, 0.05, height, frame),
        _box(width / 2 - bar / 2, 0, 0, bar, 0.05, height, frame),
        _box(0, 0, 0, width - 2 * bar, 0.05, bar, frame),
        _box(0, 0, height - bar, width - 2 * bar, 0.05, bar, frame),
    ]
    return _model(parts, width, 0.05)


def _picture(rng, width: float, height: float) -> _Model:
    parts = [
        _box(0, -0.005, 0, width, 0.02, height, _color(rng, _WOOD + _METAL)),
        _box(0, 0.01, 0.04, width - 0.08, 0.01, height - 0.08, _color(rng, _ART, 50)),
    ]
    return _model(parts, width, 0.03)


def _curtain(rng, width: float, height: float) -> _Model:
    return _model([_box(0, 0, 0, width, 0.06, height, _color(rng, _FABRIC + _LIGHT))], width, 0.06)


# kind -> (class name, builder, placement): "wall" objects stand with their back against a wall,
# "free" objects stand anywhere on the floor.
_FURNITURE: dict[str, tuple[str, Callable[[np.random.Generator], _Model], str]] = {
    "bed": ("bed", _bed, "wall"),
    "chair": ("chair", _chair, "free"),
    "sofa": ("sofa", _sofa, "wall"),
    "dining_table": ("table", _dining_table, "free"),
    "coffee_table": ("table", _coffee_table, "free"),
    "desk": ("desk", _desk, "wall"),
    "cabinet": ("cabinet", _cabinet, "wall"),
    "bookshelf": ("bookshelf", _bookshelf, "wall"),
    "counter": ("counter", _counter, "wall"),
    "refrigerator": ("refrigerator", _refrigerator, "wall"),
    "toilet": ("toilet", _toilet, "wall"),
    "sink": ("sink", _sink, "wall"),
    "bathtub": ("bathtub", _bathtub, "wall"),
    "other_furniture": ("otherfurniture", _other_furniture, "free"),
}

# room type -> (required kinds, optional kinds with weights). "dining_set" and "desk_set" place a
# table or desk together with chairs.
_ROOMS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "bedroom": (("bed",), {"cabinet": 3, "desk_set": 2, "bookshelf": 2, "other_furniture": 1, "chair": 1}),
    "living_room": (
        ("sofa",),
        {"coffee_table": 3, "bookshelf": 2, "cabinet": 2, "dining_set": 1, "chair": 1, "other_furniture": 1, "sofa": 1},
    ),
    "kitchen": (("counter",), {"dining_set": 3, "refrigerator": 2, "cabinet": 2, "counter": 1, "chair": 1}),
    "office": (("desk_set",), {"bookshelf": 3, "cabinet": 2, "desk_set": 2, "dining_set": 1, "chair": 1}),
    "bathroom": (("toilet", "sink"), {"bathtub": 3, "cabinet": 1, "other_furniture": 1}),
}


class _Layout:
    """Places objects in a room without overlaps; collects primitives and objects."""

    def __init__(self, rng: np.random.Generator, size: tuple[float, float, float]):
        self.rng = rng
        self.size = size
        self.primitives: list[Primitive] = []
        self.objects: list[SceneObject] = []
        self.floor_rects: list[tuple[float, float, float, float, float]] = []  # x0, y0, x1, y1, top
        self.wall_spans: list[list[tuple[float, float, float, float]]] = [[], [], [], []]

    def wall_length(self, wall: int) -> float:
        return self.size[0] if wall % 2 == 0 else self.size[1]

    def wall_frame(self, wall: int, along: float, offset: float) -> tuple[float, float, float]:
        """(x, y, yaw) of a point ``along`` a wall at ``offset`` into the room, facing the room.

        Walls: 0 is y=0, 1 is x=Lx, 2 is y=Ly, 3 is x=0, going counter-clockwise.
        """
        lx, ly, _ = self.size
        if wall == 0:
            return along, offset, 0.0
        if wall == 1:
            return lx - offset, along, math.pi / 2
        if wall == 2:
            return lx - along, ly - offset, math.pi
        return offset, ly - along, -math.pi / 2

    def add_shell(self, with_ceiling: bool) -> None:
        lx, ly, h = self.size
        t = _WALL_THICKNESS
        wall, floor = _color(self.rng, _WALL, 10), _color(self.rng, _FLOOR)
        slabs = [
            ("floor", (lx / 2, ly / 2, -t / 2), (lx / 2, ly / 2, t / 2), floor, class_id("floor")),
            ("wall", (lx / 2, -t / 2, h / 2), (lx / 2, t / 2, h / 2), wall, class_id("wall")),
            ("wall", (lx + t / 2, ly / 2, h / 2), (t / 2, ly / 2, h / 2), wall, class_id("wall")),
            ("wall", (lx / 2, ly + t / 2, h / 2), (lx / 2, t / 2, h / 2), wall, class_id("wall")),
            ("wall", (-t / 2, ly / 2, h / 2), (t / 2, ly / 2, h / 2), wall, class_id("wall")),
        ]
        if with_ceiling:
            ceiling_color = (235.0, 235.0, 235.0)
            slabs.append(("ceiling", (lx / 2, ly / 2, h + t / 2), (lx / 2, ly / 2, t / 2), ceiling_color, IGNORE_LABEL))
        for kind, center, half, color, label in slabs:
            self._add(kind, label, [Box(center, half, 0.0, label, color)])

    def _add(self, kind: str, label: int, parts: list[Primitive]) -> None:
        start = len(self.primitives)
        self.primitives.extend(parts)
        corners = np.concatenate([p.corners() for p in parts])
        self.objects.append(
            SceneObject(
                kind,
                label,
                tuple(range(start, len(self.primitives))),
                tuple(corners.min(axis=0).tolist()),
                tuple(corners.max(axis=0).tolist()),
            )
        )

    def _footprint(self, model: _Model, x: float, y: float, yaw: float) -> tuple[float, float, float, float]:
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        hx = (model.width * c + model.depth * s) / 2
        hy = (model.width * s + model.depth * c) / 2
        return x - hx, y - hy, x + hx, y + hy

    def _floor_free(self, rect, clearance: float, above: float = 0.0) -> bool:
        """Whether ``rect`` lies in the room, ``clearance`` away from every object taller than ``above``."""
        lx, ly, _ = self.size
        if rect[0] < -1e-9 or rect[1] < -1e-9 or rect[2] > lx + 1e-9 or rect[3] > ly + 1e-9:
            return False
        x0, y0, x1, y1 = rect
        return all(
            x0 >= ox1 + clearance or x1 <= ox0 - clearance or y0 >= oy1 + clearance or y1 <= oy0 - clearance
            for ox0, oy0, ox1, oy1, top in self.floor_rects
            if top > above
        )

    def _wall_free(self, wall: int, span: tuple[float, float, float, float]) -> bool:
        a0, a1, z0, z1 = span
        return all(a0 >= b1 + 0.1 or a1 <= b0 - 0.1 or z0 >= w1 or z1 <= w0 for b0, b1, w0, w1 in self.wall_spans[wall])

    def _commit(self, kind, label, model, x, y, yaw, rect=None, wall_span=None, z_offset=0.0) -> None:
        rotation = _yaw_matrix(yaw)
        parts: list[Primitive] = []
        for part in model.parts:
            if isinstance(part, Box):
                center = rotation @ np.asarray(part.center) + np.array([x, y, z_offset])
                parts.append(replace(part, center=tuple(center.tolist()), yaw=part.yaw + yaw, label=label))
            else:
                center = rotation[:2, :2] @ np.asarray(part.center) + np.array([x, y])
                z_min, z_max = part.z_min + z_offset, part.z_max + z_offset
                parts.append(replace(part, center=tuple(center.tolist()), z_min=z_min, z_max=z_max, label=label))
        self._add(kind, label, parts)
        if rect is not None:
            self.floor_rects.append((*rect, model.height))
        if wall_span is not None:
            self.wall_spans[wall_span[0]].append(wall_span[1])

    def place_against_wall(
        self, kind: str, label: int, model: _Model, attempts: int = 40, front_clearance: float = 0.0
    ) -> bool:
        """Stand ``model`` with its back on a random wall; ``front_clearance`` keeps floor free in front."""
        for _ in range(attempts):
            wall = int(self.rng.integers(4))
            length = self.wall_length(wall)
            if model.width > length - 0.1 or model.depth + front_clearance > min(self.size[:2]) - 0.5:
                continue
            along = self.rng.uniform(model.width / 2 + 0.05, length - model.width / 2 - 0.05)
            x, y, yaw = self.wall_frame(wall, along, model.depth / 2)
            cx, cy, _ = self.wall_frame(wall, along, (model.depth + front_clearance) / 2)
            check = self._footprint(replace(model, depth=model.depth + front_clearance), cx, cy, yaw)
            span = (along - model.width / 2, along + model.width / 2, 0.0, model.height)
            if self._floor_free(check, 0.05) and self._wall_free(wall, span):
                self._commit(kind, label, model, x, y, yaw, check, (wall, span))
                return True
        return False

    def place_on_wall(
        self, kind: str, label: int, model: _Model, z0: float, wall: int | None = None, along: float | None = None
    ) -> tuple[int, float] | None:
        """Hang ``model`` flat on a wall with its bottom at ``z0``; returns (wall, position along it).

        The wall and the position are random unless given.
        """
        for _ in range(1 if along is not None else 30):
            w = int(self.rng.integers(4)) if wall is None else wall
            length = self.wall_length(w)
            if model.width > length - 0.3:
                continue
            a = self.rng.uniform(model.width / 2 + 0.15, length - model.width / 2 - 0.15) if along is None else along
            if a - model.width / 2 < 0.05 or a + model.width / 2 > length - 0.05:
                continue
            span = (a - model.width / 2, a + model.width / 2, z0, z0 + model.height)
            x, y, yaw = self.wall_frame(w, a, model.depth / 2)
            # free on this wall, and clear of furniture standing against the neighbouring walls
            if self._wall_free(w, span) and self._floor_free(self._footprint(model, x, y, yaw), 0.02, above=z0):
                self._commit(kind, label, model, x, y, yaw, None, (w, span), z_offset=z0)
                return w, a
        return None

    def place_door(self) -> bool:
        """A door standing on the floor, with 0.9 m of free floor in front of it."""
        model = _door(self.rng)
        return self.place_against_wall("door", class_id("door"), model, attempts=60, front_clearance=0.9)

    def free_spot(self, width: float, depth: float, attempts: int = 40) -> tuple[float, float, float] | None:
        """A random (x, y, yaw) where a width x depth footprint stands on free floor."""
        lx, ly, _ = self.size
        for _ in range(attempts):
            yaw = self.rng.uniform(-math.pi, math.pi)
            x, y = self.rng.uniform(0.3, lx - 0.3), self.rng.uniform(0.3, ly - 0.3)
            c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
            hx, hy = (width * c + depth * s) / 2, (width * s + depth * c) / 2
            if self._floor_free((x - hx, y - hy, x + hx, y + hy), 0.1):
                return x, y, yaw
        return None

    def place_free(self, kind: str, label: int, model: _Model) -> bool:
        """Stand ``model`` anywhere on free floor at a random yaw."""
        spot = self.free_spot(model.width, model.depth)
        if spot is None:
            return False
        self._commit(kind, label, model, *spot, self._footprint(model, *spot))
        return True

    def place_chair_at(self, x: float, y: float, yaw: float) -> bool:
        """A chair at (x, y) rotated by ``yaw`` (its front is the rotated +y), if the floor is free."""
        model = _chair(self.rng)
        rect = self._footprint(model, x, y, yaw)
        if not self._floor_free(rect, 0.02):
            return False
        self._commit("chair", class_id("chair"), model, x, y, yaw, rect)
        return True

    def place_dining_set(self) -> int:
        """A dining table with up to four chairs around it; returns the number of pieces placed."""
        model = _dining_table(self.rng)
        spot = self.free_spot(model.width + 1.4, model.depth + 1.4)  # room for the chairs
        if spot is None:
            return 0
        x, y, yaw = spot
        self._commit("dining_table", class_id("table"), model, x, y, yaw, self._footprint(model, x, y, yaw))
        pieces = 1
        rotation = _yaw_matrix(yaw)[:2, :2]
        seats = [(0.0, model.depth / 2 + 0.35, math.pi), (0.0, -model.depth / 2 - 0.35, 0.0)]
        if model.width > 1.3:
            seats = [(sx * model.width / 4, sy, turn) for sx in (-1, 1) for _, sy, turn in seats]
        for local_x, local_y, turn in seats:
            if self.rng.random() < 0.2:
                continue
            cx, cy = rotation @ np.array([local_x, local_y]) + np.array([x, y])
            pieces += self.place_chair_at(float(cx), float(cy), yaw + turn + self.rng.uniform(-0.2, 0.2))
        return pieces

    def place_desk_set(self) -> int:
        """A desk against a wall with a chair in front of it; returns the number of pieces placed."""
        model = _desk(self.rng)
        if not self.place_against_wall("desk", class_id("desk"), model):
            return 0
        top = self.primitives[self.objects[-1].primitive_indices[0]]
        forward = _yaw_matrix(top.yaw)[:2, 1]
        cx, cy = np.asarray(top.center[:2]) + forward * (model.depth / 2 + 0.35)
        return 1 + self.place_chair_at(float(cx), float(cy), top.yaw + math.pi + self.rng.uniform(-0.2, 0.2))

    def place_furniture(self, kind: str) -> int:
        """Place one furniture kind (or a dining/desk set); returns the number of pieces placed."""
        if kind == "dining_set":
            return self.place_dining_set()
        if kind == "desk_set":
            return self.place_desk_set()
        class_name, build, placement = _FURNITURE[kind]
        model = build(self.rng)
        if placement == "wall":
            return int(self.place_against_wall(kind, class_id(class_name), model))
        return int(self.place_free(kind, class_id(class_name), model))

    def place_window(self, with_curtains: bool) -> int:
        """A window on a wall (curtains either side when asked); returns the number of items."""
        height = self.size[2]
        width, sill = self.rng.uniform(0.8, 1.6), self.rng.uniform(0.8, 1.0)
        model = _window(self.rng, width, self.rng.uniform(1.0, min(1.4, height - sill - 0.25)))
        placed = self.place_on_wall("window", class_id("window"), model, sill)
        if placed is None:
            return 0
        items = 1
        if with_curtains:
            wall, along = placed
            curtain_width = self.rng.uniform(0.3, 0.5)
            for side in (-1, 1):
                curtain = _curtain(self.rng, curtain_width, height - 0.15)
                position = along + side * (width / 2 + 0.12 + curtain_width / 2)
                items += self.place_on_wall("curtain", class_id("curtain"), curtain, 0.05, wall, position) is not None
        return items

    def place_picture(self) -> bool:
        width, height = self.rng.uniform(0.3, 1.0), self.rng.uniform(0.3, 0.7)
        z0 = self.rng.uniform(1.3, 1.7) - height / 2
        return self.place_on_wall("picture", class_id("picture"), _picture(self.rng, width, height), z0) is not None


def _layout_room(rng: np.random.Generator, config: SynthConfig) -> tuple[str, _Layout]:
    room_type = config.room_types[int(rng.integers(len(config.room_types)))]
    size = (
        float(rng.uniform(*config.room_width)),
        float(rng.uniform(*config.room_length)),
        float(rng.uniform(*config.room_height)),
    )
    layout = _Layout(rng, size)
    layout.add_shell(config.ceiling)
    required, optional = _ROOMS[room_type]
    pieces = sum(layout.place_furniture(kind) for kind in required)
    layout.place_door()
    for _ in range(int(rng.integers(1, 3))):
        layout.place_window(room_type != "bathroom" and rng.random() < 0.5)
    target = int(rng.integers(config.furniture_per_room[0], config.furniture_per_room[1] + 1))
    kinds = list(optional)
    weights = np.asarray([optional[k] for k in kinds], dtype=np.float64)
    for _ in range(40):
        if pieces >= target:
            break
        pieces += layout.place_furniture(kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))])
    for _ in range(int(rng.integers(0, 3))):
        layout.place_picture()
    return room_type, layout


def sample_surface(
    primitives: tuple[Primitive, ...] | list[Primitive],
    room_size: tuple[float, float, float],
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` points uniform by area over the surfaces that can be seen.

    Returns (points [n,3], primitive index [n], face id [n]).

    Points outside the room interior, or inside another primitive (closed, 1e-6 m tolerance),
    are rejected and redrawn, so hidden contact faces (the wall behind a picture, the floor
    under a bed) carry no points.
    """
    areas = np.array([p.area() for p in primitives])
    probabilities = areas / areas.sum()
    bounds = [(p.corners().min(axis=0) - 1e-6, p.corners().max(axis=0) + 1e-6) for p in primitives]
    upper = np.asarray(room_size) + 1e-6
    kept_points, kept_owner, kept_face = [], [], []
    total = 0
    while total < count:
        per_primitive = rng.multinomial(max(2 * (count - total), 1000), probabilities)
        samples = [p.sample(int(n), rng) for p, n in zip(primitives, per_primitive)]
        points, face = np.concatenate([p for p, _ in samples]), np.concatenate([f for _, f in samples])
        owner = np.repeat(np.arange(len(primitives)), per_primitive)
        keep = np.all((points >= -1e-6) & (points <= upper), axis=1)
        x, y, z = points[:, 0].copy(), points[:, 1].copy(), points[:, 2].copy()
        for index, (primitive, (low, high)) in enumerate(zip(primitives, bounds)):
            near = (x >= low[0]) & (x <= high[0]) & (y >= low[1]) & (y <= high[1]) & (z >= low[2]) & (z <= high[2])
            candidates = np.flatnonzero(near & keep & (owner != index))
            if len(candidates):
                keep[candidates[primitive.contains(points[candidates], 1e-6)]] = False
        kept_points.append(points[keep])
        kept_owner.append(owner[keep])
        kept_face.append(face[keep])
        total += int(keep.sum())
    chosen = rng.permutation(total)[:count]
    return tuple(np.concatenate(kept)[chosen] for kept in (kept_points, kept_owner, kept_face))


def generate_scene(config: SynthConfig, index: int) -> SynthScene:
    """The ``index``-th room of the world described by ``config`` (pure and deterministic)."""
    room_type, layout = _layout_room(np.random.default_rng([config.seed, index, 0]), config)
    primitives = tuple(layout.primitives)
    point_rng = np.random.default_rng([config.seed, index, 1])
    points, owner, face = sample_surface(primitives, layout.size, config.points_per_scene, point_rng)
    albedo = np.array([p.color for p in primitives], dtype=np.float64)[owner]
    color = shade(albedo, surface_normals(primitives, owner, face, points))
    color += point_rng.normal(0.0, config.point_color_noise, albedo.shape)
    labels = np.array([p.label for p in primitives], dtype=np.int16)[owner]
    return SynthScene(
        scene_id=scene_id_for(index),
        index=index,
        room_type=room_type,
        room_size=layout.size,
        primitives=primitives,
        objects=tuple(layout.objects),
        xyz=points.astype(np.float32),
        rgb=np.clip(np.rint(color), 0, 255).astype(np.uint8),
        labels=labels,
    )
