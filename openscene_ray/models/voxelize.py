"""Voxelisation of point clouds for the sparse 3D network.

A voxel is represented by the first point (in the original point order) that falls into it, as
in the reference; every point keeps a link to its voxel so voxel predictions can be scattered
back to all points.

Two grids: ``cartesian`` (x, y, z at ``voxel_size``) and ``cylindrical``, the LiDAR grid of SLidR
and SSOV (seed facts §3.4-3.5): ρ = √(x²+y²) and z at ``voxel_size`` (0.1 m there), the azimuth
φ = atan2(y, x) in steps of ``angle_step_deg`` (1°), each floored.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COORDINATES", "batch_voxels", "voxel_grid_coordinates", "voxelize"]

COORDINATES = ("cartesian", "cylindrical")


def voxel_grid_coordinates(
    xyz: np.ndarray, voxel_size: float, coordinates: str = "cartesian", angle_step_deg: float = 1.0
) -> np.ndarray:
    """float64 ``[N,3]`` positions in voxel units before flooring: ``xyz / voxel_size``, or
    ``(ρ / voxel_size, φ° / angle_step_deg, z / voxel_size)`` for the cylindrical grid."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if coordinates == "cartesian":
        return xyz / voxel_size
    if coordinates != "cylindrical":
        raise ValueError(f"unknown voxel coordinates {coordinates!r}; expected one of {COORDINATES}")
    if not angle_step_deg > 0:
        raise ValueError(f"angle_step_deg must be positive, got {angle_step_deg}")
    rho = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2) / voxel_size
    phi = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) / angle_step_deg
    return np.stack([rho, phi, xyz[:, 2] / voxel_size], axis=1)


def voxelize(
    xyz: np.ndarray, voxel_size: float, coordinates: str = "cartesian", angle_step_deg: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantise points to a grid: ``(voxel_coords int32 [V,3], rep_index int64 [V], inverse int64 [N])``.

    ``voxel_coords = floor(xyz / voxel_size)`` (or the cylindrical cells, see
    :func:`voxel_grid_coordinates`) shifted so that the minimum is 0 on every axis,
    one row per occupied voxel in ascending (x, y, z) order; ``rep_index[v]`` is the smallest
    point index inside voxel ``v``; ``inverse[i]`` is the voxel of point ``i``, so
    ``voxel_coords[inverse] == the point's grid cell``. Deterministic and independent of ties.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape [N, 3], got {xyz.shape}")
    if xyz.shape[0] == 0:
        raise ValueError("xyz is empty: cannot voxelise a scene without points")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if not np.isfinite(xyz).all():
        raise ValueError("xyz contains NaN or infinite coordinates")
    grid = np.floor(voxel_grid_coordinates(xyz, voxel_size, coordinates, angle_step_deg)).astype(np.int64)
    grid -= grid.min(axis=0)
    extent = grid.max(axis=0) + 1
    if np.prod(extent.astype(np.float64)) >= 2.0**62:
        raise ValueError(f"grid of {extent.tolist()} voxels is too large; check units and voxel_size")
    keys = (grid[:, 0] * extent[1] + grid[:, 1]) * extent[2] + grid[:, 2]
    # return_index makes np.unique sort stably, so each index is the first occurrence.
    _, rep_index, inverse = np.unique(keys, return_index=True, return_inverse=True)
    voxel_coords = grid[rep_index].astype(np.int32)
    return voxel_coords, rep_index.astype(np.int64), inverse.reshape(-1).astype(np.int64)


def batch_voxels(voxel_coords: list[np.ndarray]) -> np.ndarray:
    """Stack per-scene ``[V_b, 3]`` voxel coords into the network's ``int32 [M, 4]`` (batch, x, y, z)."""
    if not voxel_coords:
        raise ValueError("batch_voxels needs at least one scene")
    parts = []
    for b, coords in enumerate(voxel_coords):
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"scene {b}: voxel coords must have shape [V, 3], got {coords.shape}")
        parts.append(np.concatenate([np.full((coords.shape[0], 1), b, dtype=np.int32), coords.astype(np.int32)], 1))
    return np.ascontiguousarray(np.concatenate(parts, 0))
