"""AFI on constructed point sets with known answers: label noise on a flat ground is cleaned, a thin
vertical pole keeps its label, the nuScenes ground rule keeps only ground classes on the fitted
plane near the ego vehicle, and unknown points carry no evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openscene_ray.kernel.labels import get_label_set
from openscene_ray.ssov.afi import AFIConfig, apply_afi, ground_plane_inliers
from openscene_ray.ssov.afi_nn import farthest_point_sample, fibonacci_sphere

DRIVABLE, MANMADE, CAR = 10, 14, 3
NUSCENES_GROUND = get_label_set("nuscenes16").ground_classes


def _street(seed: int = 0, noise: float = 0.25):
    """A 30 x 30 m flat road 1.8 m below the sensor with ``noise`` of its labels random, and a 3.7 m
    pole (5 cm thick) standing on it at 8 m."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-15, 15, (20000, 2)), -1.8 + rng.normal(0, 0.01, 20000)]
    pole = np.c_[8.0 + rng.normal(0, 0.01, 80), rng.normal(0, 0.01, 80), np.linspace(-1.7, 2.0, 80)]
    truth = np.r_[np.full(len(ground), DRIVABLE), np.full(len(pole), MANMADE)]
    labels = truth.copy()
    flip = rng.random(len(ground)) < noise
    labels[: len(ground)][flip] = rng.integers(0, 16, flip.sum())
    return np.r_[ground, pole], labels, truth, len(ground)


def test_the_nuscenes_label_set_names_its_ground_classes():
    names = get_label_set("nuscenes16").class_names
    assert [names[c] for c in NUSCENES_GROUND] == ["drivable surface", "other flat", "sidewalk", "terrain"]
    assert get_label_set("scannet20").ground_classes == ()


@pytest.mark.parametrize("ground_classes", [NUSCENES_GROUND, ()], ids=["nuscenes-ground-rule", "no-ground-rule"])
def test_label_noise_on_a_flat_ground_is_cleaned_and_a_thin_pole_keeps_its_label(ground_classes):
    xyz, labels, _truth, n_ground = _street()
    before = (labels[:n_ground] == DRIVABLE).mean()
    result = apply_afi(xyz, labels, 16, ground_classes)
    after = (result.labels[:n_ground] == DRIVABLE).mean()
    assert before == pytest.approx(0.763, abs=0.01) and after > 0.98  # measured 0.995
    assert (result.labels[n_ground:] == MANMADE).all()  # the pole is a line: its own bins keep it
    assert 0.15 < result.changed < 0.3


def test_the_ground_rule_forces_ground_classes_on_the_fitted_plane_near_the_ego():
    xyz, _, _, n_ground = _street(noise=0.0)
    labels = np.full(len(xyz), CAR)  # everything predicted "car"
    result = apply_afi(xyz, labels, 16, NUSCENES_GROUND)
    d = np.hypot(xyz[:, 0], xyz[:, 1])
    near = (d > 2) & (d < 5)
    assert result.ground[:n_ground][near[:n_ground]].mean() > 0.99 and not result.ground[n_ground:].any()
    # no ground-class evidence anywhere: the round-ground points end with no label at all
    assert (result.labels[result.ground] == -1).all()
    assert (result.labels[~result.ground & (d > 5)] == CAR).all()


def test_ransac_plane_follows_a_tilted_ground_and_ignores_points_above_it():
    rng = np.random.default_rng(3)
    xy = rng.uniform(-6, 6, (5000, 2))
    z = -1.9 + 0.02 * xy[:, 0] + rng.normal(0, 0.02, 5000)
    clutter = np.c_[rng.uniform(2.5, 4.5, (300, 2)), rng.uniform(-1.6, -1.45, 300)]  # low boxes near the ego
    xyz = np.r_[np.c_[xy, z], clutter]
    inliers = ground_plane_inliers(xyz, AFIConfig())
    d = np.hypot(xyz[:5000, 0], xyz[:5000, 1])
    assert inliers[:5000][(d > 2) & (d < 5)].mean() > 0.95 and inliers[5000:].mean() < 0.05
    assert not ground_plane_inliers(xyz[:3], AFIConfig()).any()  # too few candidates: no plane


def test_unknown_points_carry_no_evidence_and_are_filled_from_their_neighbours():
    xyz, labels, _truth, n_ground = _street(noise=0.0)
    holes = np.random.default_rng(1).random(n_ground) < 0.3
    labels = labels.copy()
    labels[:n_ground][holes] = -1
    result = apply_afi(xyz, labels, 16, ())
    assert (result.labels[:n_ground][holes] == DRIVABLE).mean() > 0.99


def test_point_nn_parts():
    sphere = fibonacci_sphere(20)
    assert sphere.shape == (20, 3) and np.allclose(np.linalg.norm(sphere, axis=1), 1)
    line = np.c_[np.arange(10.0), np.zeros(10), np.zeros(10)]
    assert farthest_point_sample(line, 3).tolist() == [0, 9, 4]  # starts at index 0, then the farthest
    config = AFIConfig()
    t = config.same_p_distance / math.log(config.beta)
    p = [config.beta * math.exp(-d / t) / (1 + config.beta * math.exp(-d / t)) for d in (0.0, 20.0)]
    assert p == pytest.approx([0.8, 0.5])  # the facts' mixing probabilities (off by default)
    xyz, labels, _, _ = _street(noise=0.0)
    pseudo = np.full(len(xyz), CAR)
    mixed = apply_afi(xyz, labels, 16, (), config.model_copy(update={"mix_pseudo": True}), pseudo)
    assert (mixed.labels == CAR).mean() > 0.2  # cars near the sensor win through the mixing
