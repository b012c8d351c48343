"""Room layout: a room's shell and furniture placed without overlaps, as primitives grouped in objects.

The structure is room ⊃ object ⊃ part: :class:`RoomLayout` collects every part (primitive) of the
room in one list and one :class:`SceneObject` per placed object, which names its kind, its class
id and the indices of its parts in that list (in the order of the object's
:class:`~openscene_ray.synth.furniture.Model` parts). Walls are numbered 0..3 counter-clockwise
from the wall at y = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from openscene_ray.synth.furniture import (
    FURNITURE,
    Model,
    build_chair,
    build_curtain,
    build_desk,
    build_dining_table,
    build_door,
    build_picture,
    build_window,
    class_id,
    room_shell,
)
from openscene_ray.synth.primitives import Box, Primitive, yaw_matrix

__all__ = ["ROOM_TYPES", "RoomLayout", "RoomType", "SceneObject", "furnish_room"]

RoomType = Literal["bedroom", "living_room", "kitchen", "office", "bathroom"]
ROOM_TYPES: tuple[str, ...] = ("bedroom", "living_room", "kitchen", "office", "bathroom")

# room type -> (required kinds, optional kinds with weights). "dining_set" and "desk_set" place a
# table or desk together with chairs.
_ROOM_FURNITURE: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "bedroom": (("bed",), {"cabinet": 3, "desk_set": 2, "bookshelf": 2, "other_furniture": 1, "chair": 1}),
    "living_room": (
        ("sofa",),
        {"coffee_table": 3, "bookshelf": 2, "cabinet": 2, "dining_set": 1, "chair": 1, "other_furniture": 1, "sofa": 1},
    ),
    "kitchen": (("counter",), {"dining_set": 3, "refrigerator": 2, "cabinet": 2, "counter": 1, "chair": 1}),
    "office": (("desk_set",), {"bookshelf": 3, "cabinet": 2, "desk_set": 2, "dining_set": 1, "chair": 1}),
    "bathroom": (("toilet", "sink"), {"bathtub": 3, "cabinet": 1, "other_furniture": 1}),
}


@dataclass(frozen=True)
class SceneObject:
    """One object instance: its kind (e.g. ``"dining_table"``), class id, parts and bounding box.

    ``primitive_indices`` index the room's primitives; their order is the order of the model's parts.
    """

    kind: str
    label: int
    primitive_indices: tuple[int, ...]
    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]

    @property
    def center(self) -> np.ndarray:
        """The centre of the bounding box, [3]."""
        return (np.asarray(self.bounds_min) + np.asarray(self.bounds_max)) / 2


class RoomLayout:
    """Places objects in a room without overlaps; collects primitives and objects."""

    def __init__(self, rng: np.random.Generator, size: tuple[float, float, float]):
        self.rng = rng
        self.size = size
        self.primitives: list[Primitive] = []
        self.objects: list[SceneObject] = []
        self.floor_rects: list[tuple[float, float, float, float, float]] = []  # x0, y0, x1, y1, top
        self.wall_spans: list[list[tuple[float, float, float, float]]] = [[], [], [], []]

    def wall_length(self, wall: int) -> float:
        """The length of wall ``wall`` (0..3) in metres."""
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
        """The floor and the four walls (and the ceiling when asked), one object each."""
        for kind, label, slab in room_shell(self.rng, self.size, with_ceiling):
            self._add(kind, label, [slab])

    def _add(self, kind: str, label: int, parts: list[Primitive]) -> None:
        """Append ``parts`` to the room's primitives as one new object."""
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

    def _footprint(self, model: Model, x: float, y: float, yaw: float) -> tuple[float, float, float, float]:
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
        rotation = yaw_matrix(yaw)
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
        self, kind: str, label: int, model: Model, attempts: int = 40, front_clearance: float = 0.0
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
        self, kind: str, label: int, model: Model, z0: float, wall: int | None = None, along: float | None = None
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
        model = build_door(self.rng)
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

    def place_free(self, kind: str, label: int, model: Model) -> bool:
        """Stand ``model`` anywhere on free floor at a random yaw."""
        spot = self.free_spot(model.width, model.depth)
        if spot is None:
            return False
        self._commit(kind, label, model, *spot, self._footprint(model, *spot))
        return True

    def place_chair_at(self, x: float, y: float, yaw: float) -> bool:
        """A chair at (x, y) rotated by ``yaw`` (its front is the rotated +y), if the floor is free."""
        model = build_chair(self.rng)
        rect = self._footprint(model, x, y, yaw)
        if not self._floor_free(rect, 0.02):
            return False
        self._commit("chair", class_id("chair"), model, x, y, yaw, rect)
        return True

    def place_dining_set(self) -> int:
        """A dining table with up to four chairs around it; returns the number of pieces placed."""
        model = build_dining_table(self.rng)
        spot = self.free_spot(model.width + 1.4, model.depth + 1.4)  # room for the chairs
        if spot is None:
            return 0
        x, y, yaw = spot
        self._commit("dining_table", class_id("table"), model, x, y, yaw, self._footprint(model, x, y, yaw))
        pieces = 1
        rotation = yaw_matrix(yaw)[:2, :2]
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
        model = build_desk(self.rng)
        if not self.place_against_wall("desk", class_id("desk"), model):
            return 0
        top = self.primitives[self.objects[-1].primitive_indices[0]]
        forward = yaw_matrix(top.yaw)[:2, 1]
        cx, cy = np.asarray(top.center[:2]) + forward * (model.depth / 2 + 0.35)
        return 1 + self.place_chair_at(float(cx), float(cy), top.yaw + math.pi + self.rng.uniform(-0.2, 0.2))

    def place_furniture(self, kind: str) -> int:
        """Place one furniture kind (or a dining/desk set); returns the number of pieces placed."""
        if kind == "dining_set":
            return self.place_dining_set()
        if kind == "desk_set":
            return self.place_desk_set()
        class_name, build, placement = FURNITURE[kind]
        model = build(self.rng)
        if placement == "wall":
            return int(self.place_against_wall(kind, class_id(class_name), model))
        return int(self.place_free(kind, class_id(class_name), model))

    def place_window(self, with_curtains: bool) -> int:
        """A window on a wall (curtains either side when asked); returns the number of items."""
        height = self.size[2]
        width, sill = self.rng.uniform(0.8, 1.6), self.rng.uniform(0.8, 1.0)
        model = build_window(self.rng, width, self.rng.uniform(1.0, min(1.4, height - sill - 0.25)))
        placed = self.place_on_wall("window", class_id("window"), model, sill)
        if placed is None:
            return 0
        items = 1
        if with_curtains:
            wall, along = placed
            curtain_width = self.rng.uniform(0.3, 0.5)
            for side in (-1, 1):
                curtain = build_curtain(self.rng, curtain_width, height - 0.15)
                position = along + side * (width / 2 + 0.12 + curtain_width / 2)
                items += self.place_on_wall("curtain", class_id("curtain"), curtain, 0.05, wall, position) is not None
        return items

    def place_picture(self) -> bool:
        """A framed picture at eye height on a random free stretch of wall."""
        width, height = self.rng.uniform(0.3, 1.0), self.rng.uniform(0.3, 0.7)
        z0 = self.rng.uniform(1.3, 1.7) - height / 2
        model = build_picture(self.rng, width, height)
        return self.place_on_wall("picture", class_id("picture"), model, z0) is not None


def furnish_room(
    rng: np.random.Generator,
    room_type: str,
    size: tuple[float, float, float],
    with_ceiling: bool,
    furniture_per_room: tuple[int, int],
) -> RoomLayout:
    """A room of ``room_type`` and ``size``: its shell, the type's required furniture, a door,
    1-2 windows, optional furniture up to a random count in ``furniture_per_room`` and 0-2 pictures."""
    layout = RoomLayout(rng, size)
    layout.add_shell(with_ceiling)
    required, optional = _ROOM_FURNITURE[room_type]
    pieces = sum(layout.place_furniture(kind) for kind in required)
    layout.place_door()
    for _ in range(int(rng.integers(1, 3))):
        layout.place_window(room_type != "bathroom" and rng.random() < 0.5)
    target = int(rng.integers(furniture_per_room[0], furniture_per_room[1] + 1))
    kinds = list(optional)
    weights = np.asarray([optional[k] for k in kinds], dtype=np.float64)
    for _ in range(40):
        if pieces >= target:
            break
        pieces += layout.place_furniture(kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))])
    for _ in range(int(rng.integers(0, 3))):
        layout.place_picture()
    return layout
