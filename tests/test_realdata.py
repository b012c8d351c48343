"""Ingest the shared real samples and reproduce their known answers (../shared/data/README.md).

The checks below are plain numpy, independent of the project's fusion code: they take the
manifest's intrinsics, poses and depth scale at face value, so a wrong convention in ingest
(pose inverted, column-major K read row-major, depth scale off, K not rescaled) fails them.
"""

import argparse
import json

import numpy as np
import pytest

from openscene_ray.datasets import command
from openscene_ray.kernel import manifest as mf

pytestmark = pytest.mark.realdata


def _ingest(layout: str, root, out) -> mf.SceneRecord:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["--layout", layout, "--root", str(root), "--out", str(out), "--strict"])) == 0
    (record,) = mf.read_manifest(f"{out}/manifest.parquet")
    return record


def _project(points: np.ndarray, intrinsics: np.ndarray, cam_to_world: np.ndarray):
    """Pixel (u, v) rounded half-to-even, and camera z, of world points."""
    world_to_cam = np.linalg.inv(cam_to_world)
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(cam[:, 0] * intrinsics[0, 0] / z + intrinsics[0, 2])
        v = np.rint(cam[:, 1] * intrinsics[1, 1] / z + intrinsics[1, 2])
    return u, v, z


def test_redwood_posed_rgbd_reproduces_the_known_answer(shared_data, tmp_path):
    record = _ingest("posed-rgbd", shared_data / "redwood-livingroom1", tmp_path / "out")
    assert (record.image_width, record.image_height, record.depth_scale) == (640, 480, 1000.0)
    assert [v.frame_id for v in record.views] == ["00000", "00001", "00002", "00003", "00004"]
    k = record.views[0].intrinsics_matrix
    assert np.allclose(k, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])  # column-major file read correctly
    views = [mf.load_view(record, v) for v in record.views]

    # Back-project frame 0's valid depth into the world.
    depth0 = views[0].depth
    v0, u0 = np.nonzero(depth0 > 0)
    z0 = depth0[v0, u0].astype(np.float64)
    cam = np.stack([(u0 - k[0, 2]) * z0 / k[0, 0], (v0 - k[1, 2]) * z0 / k[1, 1], z0], axis=1)
    pose0 = views[0].cam_to_world
    world = cam @ pose0[:3, :3].T + pose0[:3, 3]
    colour0 = views[0].color[v0, u0].astype(np.float64)
    rng = np.random.default_rng(0)
    fractions, errors, random_errors = [], [], []
    for view in views[1:]:
        u, v, z = _project(world, view.intrinsics, view.cam_to_world)
        inside = (z > 0) & (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
        ui, vi = u[inside].astype(int), v[inside].astype(int)
        d = view.depth[vi, ui]
        seen = np.zeros(len(world), bool)
        seen[np.flatnonzero(inside)] = (d > 0) & (np.abs(d - z[inside]) <= 0.05 * d)
        fractions.append(seen.sum() / inside.sum())  # of the points that land in frame j's image
        colour = view.color[v[seen].astype(int), u[seen].astype(int)].astype(np.float64)
        errors.append(np.abs(colour - colour0[seen]).mean())
        pick = rng.integers(0, 640 * 480, seen.sum())
        random_errors.append(np.abs(view.color.reshape(-1, 3)[pick].astype(np.float64) - colour0[seen]).mean())
    print(f"redwood: visible {np.round(fractions, 3)}, rgb error {np.round(errors, 2)}, random {np.round(random_errors, 1)}")
    assert all(f > 0.9 for f in fractions)
    assert np.allclose(fractions, [0.97, 0.95, 0.94, 0.94], atol=0.006)
    assert all(e < 6 for e in errors)
    assert all(r > 30 for r in random_errors)

    # The point cloud ingest built (2 cm voxels, first point per voxel) agrees with every frame.
    xyz, rgb, labels = mf.load_points(record.points_uri)
    assert 20_000 < len(xyz) < 40_000 and (labels == 255).all()
    for view in views:
        u, v, z = _project(xyz.astype(np.float64), view.intrinsics, view.cam_to_world)
        inside = (z > 0) & (u >= 10) & (u < 630) & (v >= 10) & (v < 470)
        ui, vi = u[inside].astype(int), v[inside].astype(int)
        d = view.depth[vi, ui]
        ok = (d > 0) & (np.abs(d - z[inside]) <= 0.05 * d)
        assert ok.mean() > 0.9
        err = np.abs(view.color[vi[ok], ui[ok]].astype(np.float64) - rgb[inside][ok]).mean()
        assert err < 6


KNOWN_NUSCENES = {
    "CAM_FRONT": 8.7, "CAM_FRONT_RIGHT": 8.8, "CAM_FRONT_LEFT": 10.6,
    "CAM_BACK": 13.8, "CAM_BACK_LEFT": 11.7, "CAM_BACK_RIGHT": 9.5,
}  # fmt: skip


def _in_image(points, intrinsics, cam_to_world, width, height, cut):
    u, v, z = _project(points, intrinsics, cam_to_world)
    return (z > 0) & (u >= cut) & (u < width - cut) & (v >= cut) & (v < height - cut)


def test_nuscenes_sample_via_calib_adapter(shared_data, tmp_path):
    sample = shared_data / "nuscenes-sample"
    record = _ingest("nuscenes-calib", sample, tmp_path / "out")
    assert (record.image_width, record.image_height, record.cut_bound) == (800, 450, 5)
    assert record.depth_scale is None and record.visibility_threshold is None and record.num_points == 34_688
    xyz, rgb, labels = mf.load_points(record.points_uri)
    raw = np.fromfile(next(sample.glob("*LIDAR_TOP*.pcd.bin")), dtype=np.float32).reshape(-1, 5)
    assert np.array_equal(xyz, raw[:, :3]) and not rgb.any() and (labels == 255).all()
    calib = json.loads((sample / "calib.json").read_text())["images"]
    points = xyz.astype(np.float64)
    ingested, original = {}, {}
    for view in record.views:
        k0 = np.asarray(calib[view.frame_id]["cam2img"])
        assert np.allclose(view.intrinsics_matrix[0], [k0[0, 0] / 2, 0, k0[0, 2] * 799 / 1599])
        assert np.allclose(view.intrinsics_matrix[1], [0, k0[1, 1] / 2, k0[1, 2] * 449 / 899])
        assert np.allclose(np.linalg.inv(view.pose_matrix), calib[view.frame_id]["lidar2cam"], atol=1e-9)
        ingested[view.frame_id] = _in_image(points, view.intrinsics_matrix, view.pose_matrix, 800, 450, 5)
        original[view.frame_id] = _in_image(points, k0, view.pose_matrix, 1600, 900, 5)
    for name, table in (("800x450", ingested), ("1600x900", original)):
        percent = {cam: round(100 * m.mean(), 2) for cam, m in table.items()}
        union = 100 * np.any(list(table.values()), axis=0).mean()
        print(f"nuscenes in-image % at {name}: {percent}, any camera {union:.2f}")
        for cam, expected in KNOWN_NUSCENES.items():
            assert abs(percent[cam] - expected) <= 1.0, (name, cam)
        assert abs(union - 57.8) <= 1.0
    # The README's numbers are at the original resolution (they agree to 0.05 points there).
    for cam, expected in KNOWN_NUSCENES.items():
        assert abs(100 * original[cam].mean() - expected) <= 0.05
