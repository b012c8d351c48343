"""Point-cloud augmentation for distillation training, after the reference's Mink/BPNet pipeline.

Training: elastic distortion (optional), a rotation built from per-axis angles (x and y tilts of
±π/64, a full turn about z) composed in random order, an isotropic scale U(0.9, 1.1), then a
mirror of x and/or y. Everything draws from a caller-supplied ``np.random.Generator``, so a seed
reproduces a batch exactly.

Evaluation is the identity by default. The reference also rotates and scales at test time (its
voxeliser always augments); ``test_time_augmentation=True`` reproduces that, seeded.

Elastic distortion: a Gaussian noise field on a grid of spacing ``granularity`` (metres), box-blurred
twice along each axis, trilinearly interpolated at each point and scaled by ``magnitude``
(metres); the reference's parameters are ``((0.2, 0.4), (0.8, 1.6))``. Working in metres is the
same as working on voxel coordinates with both numbers divided by the voxel size. The reference's
distillation loader computes the distortion but then voxelises the undistorted points (a quirk);
here the distorted points are what gets returned and voxelised.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import field_validator

from openscene_ray.kernel.config import StrictModel

__all__ = ["AugmentConfig", "augment_points", "elastic_distortion", "random_rotation"]

_Bound = tuple[float, float]


class AugmentConfig(StrictModel):
    """Augmentation settings; the defaults are the reference's training augmentation."""

    rotation_bounds: tuple[_Bound, _Bound, _Bound] = (
        (-math.pi / 64, math.pi / 64),
        (-math.pi / 64, math.pi / 64),
        (-math.pi, math.pi),
    )
    scale_bounds: _Bound = (0.9, 1.1)
    flip_probability: float = 0.95
    flip_axis_probability: float = 0.5
    elastic_distortion: bool = True
    elastic_params: tuple[_Bound, ...] = ((0.2, 0.4), (0.8, 1.6))
    elastic_probability: float = 0.95
    test_time_augmentation: bool = False

    @field_validator("rotation_bounds")
    @classmethod
    def _ordered(cls, value: tuple[_Bound, _Bound, _Bound]) -> tuple[_Bound, _Bound, _Bound]:
        for low, high in value:
            if low > high:
                raise ValueError(f"lower bound {low} exceeds upper bound {high}")
        return value

    @field_validator("scale_bounds")
    @classmethod
    def _positive_scale(cls, value: _Bound) -> _Bound:
        if not 0 < value[0] <= value[1]:
            raise ValueError("scale bounds must satisfy 0 < low <= high")
        return value

    @field_validator("flip_probability", "flip_axis_probability", "elastic_probability")
    @classmethod
    def _probability(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("must be a probability in [0, 1]")
        return value

    @field_validator("elastic_params")
    @classmethod
    def _elastic(cls, value: tuple[_Bound, ...]) -> tuple[_Bound, ...]:
        for granularity, magnitude in value:
            if granularity <= 0 or magnitude < 0:
                raise ValueError("each (granularity, magnitude) needs granularity > 0 and magnitude >= 0")
        return value


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def random_rotation(rng: np.random.Generator, bounds: tuple[_Bound, _Bound, _Bound]) -> np.ndarray:
    """A 3x3 rotation: one uniform angle per axis (x, y, z) within ``bounds``, composed in random order."""
    mats = [_axis_rotation(axis, rng.uniform(low, high)) for axis, (low, high) in enumerate(bounds)]
    order = rng.permutation(3)
    return mats[order[0]] @ mats[order[1]] @ mats[order[2]]


def _blur3(field: np.ndarray, axis: int) -> np.ndarray:
    """Mean over a 3-wide window along ``axis``, zero outside the field."""
    pad = [(0, 0)] * field.ndim
    pad[axis] = (1, 1)
    padded = np.pad(field, pad)
    n = field.shape[axis]
    return sum(padded.take(range(start, start + n), axis) for start in range(3)) / 3


def elastic_distortion(
    xyz: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator
) -> np.ndarray:
    """Displace points by a smooth random field: noise every ``granularity`` metres, times ``magnitude``."""
    xyz = np.asarray(xyz, dtype=np.float64)
    low = xyz.min(axis=0)
    dims = ((xyz - low).max(axis=0) // granularity).astype(np.int64) + 3
    noise = rng.standard_normal((*dims, 3), dtype=np.float32)
    for _ in range(2):
        for axis in range(3):
            noise = _blur3(noise, axis)
    # Grid node k on an axis sits at low + (k - 1) * granularity.
    pos = (xyz - low) / granularity + 1.0
    base = np.minimum(np.floor(pos).astype(np.int64), dims - 2)
    frac = pos - base
    field = np.zeros_like(xyz)
    for corner in range(8):
        offset = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        weight = np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=1)
        node = base + offset
        field += weight[:, None] * noise[node[:, 0], node[:, 1], node[:, 2]]
    return xyz + field * magnitude


def augment_points(
    xyz: np.ndarray,
    rng: np.random.Generator | None,
    config: AugmentConfig | None = None,
    training: bool = True,
) -> np.ndarray:
    """Augmented copy of ``xyz [N,3]`` (float32, same point order).

    ``training=True``: the full training augmentation. ``training=False``: the identity, or a
    random rotation and scale when ``config.test_time_augmentation`` is set. ``rng`` is required
    whenever anything random happens.
    """
    config = config or AugmentConfig()
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape [N, 3], got {xyz.shape}")
    if not training and not config.test_time_augmentation:
        return xyz.astype(np.float32)
    if rng is None:
        raise ValueError("augmentation draws random numbers: pass an np.random.Generator")
    if training and config.elastic_distortion and rng.random() < config.elastic_probability:
        for granularity, magnitude in config.elastic_params:
            xyz = elastic_distortion(xyz, granularity, magnitude, rng)
    xyz = xyz @ random_rotation(rng, config.rotation_bounds).T
    xyz = xyz * rng.uniform(*config.scale_bounds)
    if training and rng.random() < config.flip_probability:
        for axis in (0, 1):
            if rng.random() < config.flip_axis_probability:
                xyz[:, axis] = xyz[:, axis].max() - xyz[:, axis]
    return xyz.astype(np.float32)
