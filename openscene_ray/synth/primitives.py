"""Ray-traceable primitives of the synthetic world: z-rotated boxes and vertical cylinders.

Each primitive is one *part* of an object (see :mod:`openscene_ray.synth.rooms`): it carries the
class id of its object and a base colour, can sample its surface uniformly by area, tell whether
points lie inside it, and intersect camera rays exactly. :func:`surface_normals` and
:func:`shade` give the outward normals and the Lambert shading shared by the sampled points and
the rendered images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["NEAR_LIMIT", "Box", "Cylinder", "Primitive", "shade", "surface_normals", "yaw_matrix"]

NEAR_LIMIT = 1e-6  # ray hits count only beyond this ray parameter (metres of z-depth)

# Two directional lights (key and fill) plus ambient light; shared by points and rendered images.
_KEY_LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
_FILL_LIGHT = np.array([-0.5, -0.3, 0.4]) / np.linalg.norm([-0.5, -0.3, 0.4])
_AMBIENT, _KEY_GAIN, _FILL_GAIN = 0.4, 0.5, 0.25


def shade(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambert shading: ``albedo`` [M,3] (0..255) lit by the fixed key/fill lights, float [M,3]."""
    factor = (
        _AMBIENT
        + _KEY_GAIN * np.maximum(normals @ _KEY_LIGHT, 0.0)
        + _FILL_GAIN * np.maximum(normals @ _FILL_LIGHT, 0.0)
    )
    return albedo * factor[:, None]


def yaw_matrix(yaw: float) -> np.ndarray:
    """The 3x3 rotation by ``yaw`` radians about the vertical (z) axis."""
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
        return (signs * np.asarray(self.half_size)) @ yaw_matrix(self.yaw).T + np.asarray(self.center)

    def area(self) -> float:
        """Surface area in square metres."""
        hx, hy, hz = self.half_size
        return 8.0 * (hy * hz + hx * hz + hx * hy)

    def face_normals(self) -> np.ndarray:
        """World unit normals of the faces, [6,3] indexed by face id."""
        local = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float64)
        return local @ yaw_matrix(self.yaw).T

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points uniform by area on the surface [n,3] and their face ids [n]."""
        hx, hy, hz = self.half_size
        areas = np.repeat([hy * hz, hx * hz, hx * hy], 2)
        face = rng.choice(6, size=n, p=areas / areas.sum())
        half = np.asarray(self.half_size)
        local = rng.uniform(-1.0, 1.0, size=(n, 3)) * half
        axis = face // 2
        local[np.arange(n), axis] = np.where(face % 2 == 1, 1.0, -1.0) * half[axis]
        return local @ yaw_matrix(self.yaw).T + np.asarray(self.center), face

    def contains(self, points: np.ndarray, tolerance: float) -> np.ndarray:
        """Whether each point [n,3] lies in the closed box grown by ``tolerance``."""
        local = (points - np.asarray(self.center)) @ yaw_matrix(self.yaw)
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
        """Surface area in square metres (side and both caps)."""
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
