"""The object catalogue of the synthetic world: furniture, doors, windows, pictures and the room shell.

Builders return a :class:`Model`: its parts (primitives) in the object frame, origin at the centre
of the footprint on the floor, front towards +y, back (against a wall) towards -y. Parts are
unlabelled (255) until :mod:`openscene_ray.synth.rooms` places the object and gives every part the
object's class id; the order of a model's parts is kept through placement, so a part's index
within its object identifies it. Colours come from jittered palettes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.synth.primitives import Box, Cylinder, Primitive

__all__ = [
    "FURNITURE",
    "Model",
    "build_chair",
    "build_curtain",
    "build_desk",
    "build_dining_table",
    "build_door",
    "build_picture",
    "build_window",
    "class_id",
    "room_shell",
]

_CLASS_IDS = {name: i for i, name in enumerate(get_label_set("scannet20").class_names)}
_WALL_THICKNESS = 0.1

_WOOD = ((140, 100, 60), (165, 120, 75), (110, 75, 45), (190, 160, 120), (90, 60, 40))
_FABRIC = ((170, 60, 60), (60, 90, 150), (90, 130, 90), (200, 180, 150), (120, 120, 130), (80, 60, 100))
_LIGHT = ((225, 225, 215), (235, 230, 220), (210, 215, 225))
_METAL = ((160, 160, 165), (90, 90, 95), (200, 200, 205))
_WALL = ((215, 210, 195), (200, 210, 215), (225, 215, 200), (190, 200, 185))
_FLOOR = ((150, 110, 70), (120, 120, 120), (180, 160, 130), (90, 70, 55))
_ART = ((200, 80, 40), (40, 120, 180), (230, 200, 60), (60, 160, 90), (150, 50, 140))


def class_id(name: str) -> int:
    """The ScanNet-20 class id of ``name`` (e.g. ``class_id("chair") == 4``)."""
    return _CLASS_IDS[name]


def _color(rng: np.random.Generator, palette, jitter: float = 15.0) -> tuple[float, float, float]:
    """A random palette colour with uniform per-channel jitter."""
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float64)
    return tuple(np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255).tolist())


def _box(x: float, y: float, z0: float, size_x: float, size_y: float, size_z: float, color) -> Box:
    """A part in the object frame: centre (x, y) on the footprint, bottom at z0, full sizes."""
    return Box((x, y, z0 + size_z / 2), (size_x / 2, size_y / 2, size_z / 2), 0.0, IGNORE_LABEL, color)


def _cylinder(x: float, y: float, z0: float, z1: float, radius: float, color) -> Cylinder:
    """A vertical cylinder part in the object frame: axis at (x, y), from z0 to z1."""
    return Cylinder((x, y), z0, z1, radius, IGNORE_LABEL, color)


@dataclass(frozen=True)
class Model:
    """An unplaced object: its parts in the object frame, in order, and its footprint (width along x, depth along y)."""

    parts: tuple[Primitive, ...]
    width: float
    depth: float
    height: float


def _model(parts: list[Primitive], width: float, depth: float) -> Model:
    """A model of ``parts`` with its footprint; its height is the top of the highest part."""
    height = max(p.corners()[:, 2].max() for p in parts)
    return Model(tuple(parts), width, depth, float(height))


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


def build_bed(rng) -> Model:
    """A bed: headboard, frame, mattress and a pillow."""
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


def build_chair(rng) -> Model:
    """A chair: four legs, a seat and a backrest."""
    size, seat_z = rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48)
    wood, seat = _color(rng, _WOOD + _METAL), _color(rng, _FABRIC + _WOOD)
    back = rng.uniform(0.4, 0.5)
    parts = _legs(rng, size, size, seat_z, 0.035, wood)
    parts.append(_box(0, 0, seat_z, size, size, 0.04, seat))
    parts.append(_box(0, -size / 2 + 0.02, seat_z + 0.04, size, 0.04, back, seat))
    return _model(parts, size, size)


def build_sofa(rng) -> Model:
    """A sofa: seat, back and two armrests."""
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


def _table(rng, width, depth, height) -> Model:
    """A round pedestal table (top, column, foot) or four legs and a rectangular top."""
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


def build_dining_table(rng) -> Model:
    """A dining-height table."""
    return _table(rng, rng.uniform(1.1, 1.7), rng.uniform(0.8, 1.0), rng.uniform(0.72, 0.77))


def build_coffee_table(rng) -> Model:
    """A low coffee table."""
    return _table(rng, rng.uniform(0.9, 1.2), rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.48))


def build_desk(rng) -> Model:
    """A desk: top, a side panel and a drawer block."""
    width, depth, height = rng.uniform(1.1, 1.6), rng.uniform(0.6, 0.75), rng.uniform(0.73, 0.77)
    top, body = _color(rng, _WOOD + _LIGHT), _color(rng, _WOOD + _LIGHT + _METAL)
    drawers = rng.uniform(0.35, 0.45)
    parts = [
        _box(0, 0, height - 0.03, width, depth, 0.03, top),
        _box(-width / 2 + 0.015, 0, 0, 0.03, depth, height - 0.03, body),
        _box(width / 2 - drawers / 2, 0, 0, drawers, depth, height - 0.03, body),
    ]
    return _model(parts, width, depth)


def build_cabinet(rng) -> Model:
    """A cabinet: plinth, body and a handle."""
    width, depth, height = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.55), rng.uniform(0.6, 1.1)
    body = _color(rng, _WOOD + _LIGHT)
    footprint = depth + 0.03  # the handle sticks out 2 cm in front of the body
    parts = [
        _box(0, -0.025, 0, width - 0.04, depth - 0.02, 0.08, _color(rng, _METAL)),
        _box(0, -0.015, 0.08, width, depth, height - 0.08, body),
        _box(0, footprint / 2 - 0.02, height * 0.6, width * 0.3, 0.02, 0.03, _color(rng, _METAL)),
    ]
    return _model(parts, width, footprint)


def build_bookshelf(rng) -> Model:
    """A bookshelf: sides, back, base, top, 3-5 shelves and a row of books on every board."""
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


def build_counter(rng) -> Model:
    """A kitchen counter: base unit and worktop."""
    width, depth = rng.uniform(1.4, 2.6), rng.uniform(0.58, 0.65)
    parts = [
        _box(0, -0.01, 0, width, depth - 0.02, 0.86, _color(rng, _LIGHT + _WOOD)),
        _box(0, 0, 0.86, width, depth, 0.04, _color(rng, _METAL + _LIGHT)),
    ]
    return _model(parts, width, depth)


def build_refrigerator(rng) -> Model:
    """A refrigerator: body and a handle."""
    width, depth, height = rng.uniform(0.6, 0.8), rng.uniform(0.65, 0.75), rng.uniform(1.7, 1.9)
    parts = [
        _box(0, -0.015, 0, width, depth - 0.03, height, _color(rng, _LIGHT + _METAL)),
        _box(width / 2 - 0.06, depth / 2 - 0.015, height * 0.45, 0.03, 0.03, 0.4, _color(rng, _METAL)),
    ]
    return _model(parts, width, depth)


def build_toilet(rng) -> Model:
    """A toilet: cistern and a round bowl."""
    white = _color(rng, _LIGHT, 8)
    parts = [
        _box(0, -0.26, 0, 0.4, 0.18, 0.78, white),
        _cylinder(0, 0.05, 0, 0.4, 0.19, white),
    ]
    return _model(parts, 0.4, 0.7)


def build_sink(rng) -> Model:
    """A pedestal sink: column, basin and tap."""
    white = _color(rng, _LIGHT, 8)
    parts = [
        _cylinder(0, -0.05, 0, 0.7, 0.07, white),
        _box(0, 0, 0.7, 0.56, 0.44, 0.16, white),
        _cylinder(0, -0.17, 0.86, 0.98, 0.015, _color(rng, _METAL)),
    ]
    return _model(parts, 0.56, 0.44)


def build_bathtub(rng) -> Model:
    """A bathtub: base and four walls."""
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


def build_other_furniture(rng) -> Model:
    """An ottoman (one cylinder) or a side table (four legs and a top)."""
    color = _color(rng, _FABRIC + _WOOD)
    if rng.random() < 0.5:  # ottoman / stool
        radius = rng.uniform(0.2, 0.3)
        return _model([_cylinder(0, 0, 0, rng.uniform(0.38, 0.46), radius, color)], 2 * radius, 2 * radius)
    size = rng.uniform(0.35, 0.5)  # side table
    parts = _legs(rng, size, size, 0.5, 0.03, color)
    parts.append(_box(0, 0, 0.5, size, size, 0.03, color))
    return _model(parts, size, size)


def build_door(rng) -> Model:
    """A door: panel and handle."""
    width, height = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)
    parts = [
        _box(0, 0, 0, width, 0.04, height, _color(rng, _WOOD + _LIGHT)),
        _box(width / 2 - 0.1, 0.035, 1.0, 0.1, 0.03, 0.03, _color(rng, _METAL)),
    ]
    return _model(parts, width, 0.04)  # the back of the door panel lies on the wall


def build_window(rng, width: float, height: float) -> Model:
    """A window: glass recessed in a frame of four bars."""
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


def build_picture(rng, width: float, height: float) -> Model:
    """A picture: frame and canvas."""
    parts = [
        _box(0, -0.005, 0, width, 0.02, height, _color(rng, _WOOD + _METAL)),
        _box(0, 0.01, 0.04, width - 0.08, 0.01, height - 0.08, _color(rng, _ART, 50)),
    ]
    return _model(parts, width, 0.03)


def build_curtain(rng, width: float, height: float) -> Model:
    """A curtain: one hanging panel."""
    return _model([_box(0, 0, 0, width, 0.06, height, _color(rng, _FABRIC + _LIGHT))], width, 0.06)


# kind -> (class name, builder, placement): "wall" objects stand with their back against a wall,
# "free" objects stand anywhere on the floor.
FURNITURE: dict[str, tuple[str, Callable[[np.random.Generator], Model], str]] = {
    "bed": ("bed", build_bed, "wall"),
    "chair": ("chair", build_chair, "free"),
    "sofa": ("sofa", build_sofa, "wall"),
    "dining_table": ("table", build_dining_table, "free"),
    "coffee_table": ("table", build_coffee_table, "free"),
    "desk": ("desk", build_desk, "wall"),
    "cabinet": ("cabinet", build_cabinet, "wall"),
    "bookshelf": ("bookshelf", build_bookshelf, "wall"),
    "counter": ("counter", build_counter, "wall"),
    "refrigerator": ("refrigerator", build_refrigerator, "wall"),
    "toilet": ("toilet", build_toilet, "wall"),
    "sink": ("sink", build_sink, "wall"),
    "bathtub": ("bathtub", build_bathtub, "wall"),
    "other_furniture": ("otherfurniture", build_other_furniture, "free"),
}


def room_shell(
    rng: np.random.Generator, size: tuple[float, float, float], with_ceiling: bool
) -> list[tuple[str, int, Box]]:
    """The slabs closing the room ``[0,Lx] x [0,Ly] x [0,H]`` from outside, as (kind, class id, slab).

    A floor and four walls; with ``with_ceiling`` also a ceiling above the room labelled 255
    (ScanNet-20 has no ceiling class).
    """
    lx, ly, h = size
    t = _WALL_THICKNESS
    wall, floor = _color(rng, _WALL, 10), _color(rng, _FLOOR)
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
    return [(kind, label, Box(center, half, 0.0, label, color)) for kind, center, half, color, label in slabs]
