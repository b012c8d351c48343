"""Training augmentation: rotation, scale, flips, elastic distortion, evaluation modes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openscene_ray.models import (
    AugmentConfig,
    augment_points,
    elastic_distortion,
    random_rotation,
    voxelize,
)
from openscene_ray.models.transforms import ChunkConfig, random_chunks

NO_RANDOM_GEOMETRY = dict(
    rotation_bounds=((0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    scale_bounds=(1.0, 1.0),
    flip_probability=0.0,
    elastic_distortion=False,
)


def _scene(seed: int = 0, n: int = 4000) -> np.ndarray:
    return np.random.default_rng(seed).uniform([0.0, 0.0, 0.0], [3.0, 2.5, 2.0], (n, 3)).astype(np.float32)


def test_evaluation_mode_is_the_identity_and_does_not_touch_the_input():
    xyz = _scene()
    before = xyz.copy()
    out = augment_points(xyz, None, AugmentConfig(), training=False)
    assert out.dtype == np.float32 and out is not xyz
    np.testing.assert_array_equal(out, xyz)
    augment_points(xyz, np.random.default_rng(0), AugmentConfig(), training=True)
    np.testing.assert_array_equal(xyz, before)


def test_training_augmentation_is_reproducible_from_the_generator():
    xyz = _scene()
    a = augment_points(xyz, np.random.default_rng(7))
    b = augment_points(xyz, np.random.default_rng(7))
    c = augment_points(xyz, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    with pytest.raises(ValueError, match="Generator"):
        augment_points(xyz, None, AugmentConfig(), training=True)


def test_rotation_is_a_full_turn_about_z_with_small_tilts():
    rng = np.random.default_rng(0)
    bounds = AugmentConfig().rotation_bounds
    headings, tilts = [], []
    for _ in range(2000):
        rot = random_rotation(rng, bounds)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        headings.append(math.atan2(rot[1, 0], rot[0, 0]))
        tilts.append(math.acos(np.clip(rot[2, 2], -1.0, 1.0)))  # angle between R z and z
    headings, tilts = np.array(headings), np.array(tilts)
    counts, _ = np.histogram(headings, bins=8, range=(-math.pi, math.pi))
    assert counts.min() > 0.08 * 2000 and counts.max() < 0.17 * 2000  # uniform over the full turn
    assert tilts.max() <= math.pi / 32 + 1e-9  # x and y tilts of at most pi/64 each
    assert tilts.max() > 0.7 * math.pi / 32 and tilts.mean() > 0.01


def test_scale_is_uniform_in_0_9_to_1_1():
    xyz = _scene(n=200)
    config = AugmentConfig(**{**NO_RANDOM_GEOMETRY, "scale_bounds": (0.9, 1.1)})
    rng = np.random.default_rng(1)
    scales = []
    for _ in range(500):
        out = augment_points(xyz, rng, config)
        ratio = out / xyz
        np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-5)  # isotropic
        scales.append(ratio[0, 0])
    scales = np.array(scales)
    assert 0.9 <= scales.min() < 0.92 and 1.08 < scales.max() <= 1.1
    assert abs(scales.mean() - 1.0) < 0.01


def test_flips_mirror_x_and_y_independently_never_z():
    xyz = _scene(n=100)
    config = AugmentConfig(**{**NO_RANDOM_GEOMETRY, "flip_probability": 0.95})
    rng = np.random.default_rng(2)
    flipped = np.zeros((1000, 3), dtype=bool)
    for trial in range(1000):
        out = augment_points(xyz, rng, config)
        for axis in range(3):
            mirrored = xyz[:, axis].max() - xyz[:, axis]
            if np.allclose(out[:, axis], mirrored, atol=1e-6):
                flipped[trial, axis] = True
            else:
                np.testing.assert_allclose(out[:, axis], xyz[:, axis], atol=1e-6)
    rate = flipped.mean(axis=0)
    assert abs(rate[0] - 0.475) < 0.05 and abs(rate[1] - 0.475) < 0.05 and rate[2] == 0.0
    both = (flipped[:, 0] & flipped[:, 1]).mean()
    assert abs(both - 0.95 * 0.25) < 0.05  # the two axes are drawn independently


@pytest.mark.parametrize(("granularity", "magnitude"), [(0.2, 0.4), (0.8, 1.6)])
def test_elastic_distortion_moves_points_a_bounded_non_zero_coherent_amount(granularity, magnitude):
    rng = np.random.default_rng(3)
    xyz = rng.uniform(0.0, [3.0, 3.0, 2.0], (8000, 3))
    neighbours = xyz + rng.normal(0.0, 0.005, xyz.shape)  # a point ~1 cm from each point
    moved = elastic_distortion(np.concatenate([xyz, neighbours]), granularity, magnitude, np.random.default_rng(4))
    d = moved - np.concatenate([xyz, neighbours])
    d, d_near = d[:8000], d[8000:]
    rms = np.sqrt((d**2).mean())
    # The twice box-blurred unit noise has std ~0.11, so displacements are ~0.1 * magnitude.
    assert 0.03 * magnitude < rms < 0.2 * magnitude
    assert np.abs(d).max() < magnitude
    typical = np.median(np.linalg.norm(d, axis=1))
    assert np.median(np.linalg.norm(d - d_near, axis=1)) < 0.05 * typical  # neighbours move together
    if granularity == 0.2:  # over metres the 0.2 m field decorrelates: random pairs move differently
        shuffled = np.random.default_rng(5).permutation(8000)
        assert np.median(np.linalg.norm(d - d[shuffled], axis=1)) > 0.8 * typical


def test_elastic_distortion_really_reaches_the_voxels():
    xyz = _scene(4)
    elastic_only = AugmentConfig(**{**NO_RANDOM_GEOMETRY, "elastic_distortion": True, "elastic_probability": 1.0})
    out = augment_points(xyz, np.random.default_rng(6), elastic_only)
    shift = np.linalg.norm(out - xyz, axis=1)
    assert shift.min() > 0.0 and 0.02 < np.median(shift) < 0.5
    before, after = voxelize(xyz, 0.02)[0], voxelize(out, 0.02)[0]
    assert not (before.shape == after.shape and np.array_equal(before, after))
    # Off: exactly the input.
    untouched = augment_points(xyz, np.random.default_rng(6), AugmentConfig(**NO_RANDOM_GEOMETRY))
    np.testing.assert_array_equal(untouched, xyz)


def test_test_time_augmentation_is_a_seeded_rotation_and_scale_only():
    xyz = _scene(5, n=500)
    config = AugmentConfig(test_time_augmentation=True)
    a = augment_points(xyz, np.random.default_rng(11), config, training=False)
    b = augment_points(xyz, np.random.default_rng(11), config, training=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - xyz).max() > 0.01
    # A similarity transform: the best linear fit is exact, orthogonal up to a scale in [0.9, 1.1]
    # and a proper rotation (no mirror, no elastic distortion at test time).
    centred, moved = xyz - xyz.mean(0), a - a.mean(0)
    linear, *_ = np.linalg.lstsq(centred, moved, rcond=None)
    np.testing.assert_allclose(centred @ linear, moved, atol=1e-4)
    scale = np.cbrt(np.linalg.det(linear))
    assert 0.9 <= scale <= 1.1
    np.testing.assert_allclose(linear.T @ linear / scale**2, np.eye(3), atol=1e-5)
    with pytest.raises(ValueError, match="Generator"):
        augment_points(xyz, None, config, training=False)


def test_config_validation():
    with pytest.raises(ValueError):
        AugmentConfig(scale_bounds=(1.1, 0.9))
    with pytest.raises(ValueError):
        AugmentConfig(flip_probability=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(elastic_params=((0.0, 0.4),))


def test_random_chunks():
    chunks = random_chunks(100_000)
    assert len(chunks) == 5
    for chunk in chunks:
        assert chunk.shape == (20_000,) and np.unique(chunk).size == 20_000
        assert np.all(np.diff(chunk) > 0) and chunk[0] >= 0 and chunk[-1] < 100_000
    assert not np.array_equal(chunks[0], chunks[1])
    again = random_chunks(100_000)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again))
    assert not np.array_equal(random_chunks(100_000, seed=1)[0], chunks[0])
    small = random_chunks(50, n_split_points=20_000, num_chunks=2)
    assert [c.tolist() for c in small] == [list(range(50))] * 2
    config = ChunkConfig()
    assert np.array_equal(config.indices(100_000, 3), chunks[3]) and not config.indices(100_000, 3).flags.writeable
