"""Voxelisation: first-point representatives, the point -> voxel map, determinism, batching."""

from __future__ import annotations

import numpy as np
import pytest

from openscene_ray.models import batch_voxels, voxelize


def _clustered_points(seed: int, n: int = 5000) -> np.ndarray:
    """Many points per voxel, in random order, with negative coordinates."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.0, 1.0, (300, 3))
    return (centres[rng.integers(0, 300, n)] + rng.uniform(-0.03, 0.03, (n, 3))).astype(np.float32)


def test_representative_is_the_first_point_of_each_voxel():
    xyz = _clustered_points(0)
    voxel_size = 0.02
    coords, rep, inverse = voxelize(xyz, voxel_size)
    assert coords.dtype == np.int32 and rep.dtype == np.int64 and inverse.dtype == np.int64
    assert coords.shape == (rep.shape[0], 3) and inverse.shape == (xyz.shape[0],)
    assert 300 < rep.shape[0] < xyz.shape[0]  # voxels really merge points

    cells = np.floor(xyz.astype(np.float64) / voxel_size).astype(np.int64)
    first: dict[tuple, int] = {}
    for i, cell in enumerate(map(tuple, cells)):
        first.setdefault(cell, i)
    assert len(first) == rep.shape[0]
    shift = cells.min(axis=0)
    for v, i in enumerate(rep):
        assert first[tuple(cells[i])] == i
        assert tuple(coords[v]) == tuple(cells[i] - shift)


def test_inverse_map_round_trip():
    xyz = _clustered_points(1)
    coords, rep, inverse = voxelize(xyz, 0.05)
    cells = np.floor(xyz.astype(np.float64) / 0.05).astype(np.int64)
    np.testing.assert_array_equal(coords[inverse], cells - cells.min(axis=0))
    np.testing.assert_array_equal(inverse[rep], np.arange(rep.shape[0]))
    # Each representative is the smallest point index that maps to its voxel.
    smallest = np.full(rep.shape[0], xyz.shape[0])
    np.minimum.at(smallest, inverse, np.arange(xyz.shape[0]))
    np.testing.assert_array_equal(rep, smallest)
    # Voxel features scattered back to points: every point gets its voxel's representative.
    np.testing.assert_array_equal(rep[inverse][rep], rep)
    assert coords.min() == 0 and len(np.unique(coords, axis=0)) == coords.shape[0]


def test_voxelisation_is_deterministic_and_order_aware():
    xyz = _clustered_points(2)
    a = voxelize(xyz, 0.02)
    b = voxelize(xyz.copy(), 0.02)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # Reversing the points keeps the voxel set and picks the last original point as representative.
    coords_r, rep_r, inverse_r = voxelize(xyz[::-1], 0.02)
    np.testing.assert_array_equal(coords_r, a[0])
    n = xyz.shape[0]
    last = np.zeros(a[1].shape[0], dtype=np.int64)
    np.maximum.at(last, a[2], np.arange(n))
    np.testing.assert_array_equal(n - 1 - rep_r, last)
    np.testing.assert_array_equal(inverse_r, a[2][::-1])


def test_floor_semantics_and_voxel_size():
    xyz = np.array([[0.0, 0.0, 0.0], [0.24, 0.0, 0.0], [0.25, 0.0, 0.0], [-0.01, 0.0, 0.0], [0.5, 0.5, 0.5]])
    coords, rep, inverse = voxelize(xyz, 0.25)
    # cells: x = 0, 0, 1, -1, 2 -> shifted by +1
    assert coords.tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 2, 2]]
    assert rep.tolist() == [3, 0, 2, 4]
    assert inverse.tolist() == [1, 1, 2, 0, 3]
    fine = voxelize(_clustered_points(3), 0.02)[0].shape[0]
    coarse = voxelize(_clustered_points(3), 0.05)[0].shape[0]
    assert fine > coarse


def test_voxelize_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        voxelize(np.zeros((4, 2)), 0.02)
    with pytest.raises(ValueError, match="empty"):
        voxelize(np.zeros((0, 3)), 0.02)
    with pytest.raises(ValueError, match="positive"):
        voxelize(np.zeros((4, 3)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0.0, np.nan, 0.0]]), 0.02)


def test_batch_voxels_prefixes_the_batch_index():
    a = voxelize(_clustered_points(4), 0.05)[0]
    b = voxelize(_clustered_points(5), 0.05)[0]
    batched = batch_voxels([a, b])
    assert batched.dtype == np.int32 and batched.flags.c_contiguous
    assert batched.shape == (a.shape[0] + b.shape[0], 4)
    np.testing.assert_array_equal(batched[: a.shape[0], 0], 0)
    np.testing.assert_array_equal(batched[a.shape[0] :, 0], 1)
    np.testing.assert_array_equal(batched[a.shape[0] :, 1:], b)
    with pytest.raises(ValueError):
        batch_voxels([])
