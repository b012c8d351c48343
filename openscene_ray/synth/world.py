"""The synthetic world: procedural indoor rooms and their surface points.

A room's interior is the box ``[0,Lx] x [0,Ly] x [0,H]`` (metres, z up). A floor slab and four wall
slabs close it from outside. ScanNet-20 has no ceiling class, so the ceiling is off by default;
when enabled it is a slab above the room labelled 255 (ignore). Furniture of ScanNet-20 classes is
assembled from primitives with class-typical proportions (:mod:`openscene_ray.synth.furniture`)
and placed without overlaps (:mod:`openscene_ray.synth.rooms`). Each primitive carries its class id
(an index into ``get_label_set("scannet20").class_names``) and a base colour.

Surface points are sampled uniformly by area over the primitives' surfaces, keeping only points
that can be seen at all: inside the room and not inside (or on the hidden contact face of)
another primitive, e.g. the wall behind a picture or the floor under a bed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from pydantic import Field, model_validator

from openscene_ray.kernel.config import StrictModel
from openscene_ray.synth.masks import SynthMasksConfig
from openscene_ray.synth.primitives import Primitive, shade, surface_normals
from openscene_ray.synth.rooms import (
    ROOM_TYPES,
    RoomLayout,
    RoomType,
    SceneObject,
    furnish_room,
)

__all__ = ["SynthConfig", "SynthScene", "generate_scene", "sample_surface", "scene_id_for"]


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
    val_fraction: float = Field(0.5, ge=0, le=1)  # the last round(n*f) scenes are "val", others "train"
    # Per-view instance/part maps and SAM-like mask hierarchies (``openscene-ray hierarchy``); off
    # by default, when the world's files are exactly those written without this option.
    hierarchy: SynthMasksConfig | None = None

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

    ``xyz`` float32 [N,3] metres, ``rgb`` uint8 [N,3], ``labels`` int16 [N] (255 = ignore);
    ``point_primitives`` int32 [N] is the primitive (part) each point lies on, and
    ``objects[i].primitive_indices`` are the parts of object ``i``.
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
    point_primitives: np.ndarray

    @cached_property
    def primitive_corners(self) -> np.ndarray:
        """Bounding-box corners of every primitive, [P,8,3] (computed once)."""
        return np.stack([p.corners() for p in self.primitives])


def scene_id_for(index: int) -> str:
    """ScanNet-style scene id of the ``index``-th synthetic scene, e.g. ``scene0003_00``."""
    return f"scene{index:04d}_00"


def _layout_room(rng: np.random.Generator, config: SynthConfig) -> tuple[str, RoomLayout]:
    """A random room type and size from ``config``, furnished."""
    room_type = config.room_types[int(rng.integers(len(config.room_types)))]
    size = (
        float(rng.uniform(*config.room_width)),
        float(rng.uniform(*config.room_length)),
        float(rng.uniform(*config.room_height)),
    )
    return room_type, furnish_room(rng, room_type, size, config.ceiling, config.furniture_per_room)


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
        point_primitives=owner.astype(np.int32),
    )
