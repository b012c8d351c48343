"""Instance and part maps of rendered views, and SAM-like mask hierarchies room ⊃ object ⊃ part.

A view's part map (the primitive of each pixel) gives the ground truth at two levels: objects
(``instance``: object index + 1) and parts (``part``: primitive index + 1), 0 where a ray hits
nothing. The emitted masks mimic SAM's automatic masks, view-inconsistent by construction: each
view draws its own corruption (seeded) — masks dropped, object and part masks fragmented in two
by a random cut, neighbouring objects merged into one mask — before the masks are related by the
original's inside/same rules (:mod:`openscene_ray.hierarchy.masks`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from openscene_ray.kernel.config import StrictModel

__all__ = ["SynthMasksConfig", "corrupted_hierarchy", "id_maps", "object_of_parts"]


class SynthMasksConfig(StrictModel):
    """The mask hierarchies written next to each view (``scannet_2d/<scene>/seg*``, ``instance``, ``part``)."""

    drop: float = Field(0.15, ge=0, le=1, description="probability that an object or part mask is missing")
    fragment: float = Field(0.1, ge=0, le=1, description="probability that a mask is cut in two fragments")
    merge: float = Field(0.1, ge=0, le=1, description="probability that an object is merged with a neighbour")
    min_area: int = Field(20, ge=1, description="masks below this many pixels are not emitted")
    room_mask: bool = Field(True, description="emit the whole room (every hit pixel) as the root mask")


def object_of_parts(objects, n_parts: int) -> np.ndarray:
    """int32 [P]: the object index of each primitive (part)."""
    owner = np.full(n_parts, -1, dtype=np.int32)
    for index, obj in enumerate(objects):
        owner[list(obj.primitive_indices)] = index
    return owner


def id_maps(part: np.ndarray, object_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance, part) uint16 [H, W] maps: object index + 1 and primitive index + 1, 0 = no hit."""
    hit = part >= 0
    instance = np.zeros(part.shape, dtype=np.uint16)
    instance[hit] = object_of[part[hit]] + 1
    parts = np.where(hit, part + 1, 0).astype(np.uint16)
    return instance, parts


def _fragments(mask: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """``mask`` cut in two by a random line through its centroid."""
    rows, cols = np.nonzero(mask)
    angle = rng.uniform(0.0, np.pi)
    side = (rows - rows.mean()) * np.cos(angle) + (cols - cols.mean()) * np.sin(angle) > 0
    pieces = []
    for keep in (side, ~side):
        piece = np.zeros_like(mask)
        piece[rows[keep], cols[keep]] = True
        pieces.append(piece)
    return pieces


def _neighbours(instance: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a, b), a < b, of object ids (instance values) that touch in the image."""
    pairs = set()
    for a, b in ((instance[:, :-1], instance[:, 1:]), (instance[:-1], instance[1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        pairs |= set(zip(low.tolist(), high.tolist()))
    return pairs


def _object_groups(instance: np.ndarray, rng: np.random.Generator, merge: float) -> list[list[int]]:
    """Visible object ids grouped into masks: single objects, or a neighbouring pair merged."""
    ids = [int(i) for i in np.unique(instance) if i > 0]
    touching = sorted(_neighbours(instance))
    merged: set[int] = set()
    groups = []
    for a, b in touching:
        if a not in merged and b not in merged and rng.random() < merge:
            groups.append([a, b])
            merged |= {a, b}
    groups += [[i] for i in ids if i not in merged]
    return groups


def _emit(mask: np.ndarray, rng: np.random.Generator, config: SynthMasksConfig, out: list[np.ndarray]) -> None:
    """Append ``mask`` as SAM would see it: dropped, cut in two, or whole."""
    if rng.random() < config.drop:
        return
    pieces = _fragments(mask, rng) if rng.random() < config.fragment else [mask]
    out.extend(p for p in pieces if p.sum() >= config.min_area)


def corrupted_hierarchy(
    part: np.ndarray, object_of: np.ndarray, rng: np.random.Generator, config: SynthMasksConfig
) -> np.ndarray:
    """SAM-like masks bool [M, H, W] of one view: room, objects and the parts of multi-part objects,
    corrupted by ``config`` with ``rng``, in a random order (exact duplicates removed)."""
    instance, parts = id_maps(part, object_of)
    out: list[np.ndarray] = []
    if config.room_mask and (part >= 0).sum() >= config.min_area:
        out.append(part >= 0)
    for group in _object_groups(instance, rng, config.merge):
        _emit(np.isin(instance, group), rng, config, out)
    for obj in (int(i) for i in np.unique(instance) if i > 0):
        visible = [int(p) for p in np.unique(parts[instance == obj])]
        if len(visible) < 2:
            continue  # a one-part object: its part mask is the object mask
        for part_id in visible:
            _emit(parts == part_id, rng, config, out)
    if not out:
        return np.zeros((0, *part.shape), dtype=bool)
    stacked = np.stack(out)
    _, first = np.unique(stacked.reshape(len(stacked), -1), axis=0, return_index=True)
    unique = stacked[np.sort(first)]
    return unique[rng.permutation(len(unique))]
