"""The synthetic world: exact ray casting, surface sampling, determinism and the ScanNet-layout writer."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from openscene_ray.cli import main as cli_main
from openscene_ray.kernel import images, safe_load, storage
from openscene_ray.kernel.config import ConfigError, load_config
from openscene_ray.synth import (
    FRAME_STEP,
    HEIGHT,
    WIDTH,
    Box,
    SynthConfig,
    camera_poses,
    generate_scene,
    look_at,
    render_view,
    render_views,
    scannet_intrinsics,
    to_scene,
    write_world,
)
from openscene_ray.synth.furniture import class_id

K = scannet_intrinsics()
FX, FY, CX, CY = K[0, 0], K[1, 1], K[0, 2], K[1, 2]


@pytest.fixture(scope="module")
def config() -> SynthConfig:
    return SynthConfig(seed=7, num_scenes=3, views_per_scene=6, points_per_scene=20_000)


@pytest.fixture(scope="module")
def scenes(config):
    return [generate_scene(config, i) for i in range(config.num_scenes)]


def surface_distance(primitive, points: np.ndarray) -> np.ndarray:
    """Unsigned distance from points [n,3] to the primitive's surface (independent of the renderer)."""
    if isinstance(primitive, Box):
        c, s = math.cos(primitive.yaw), math.sin(primitive.yaw)
        rel = points - np.asarray(primitive.center)
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1)
        d = np.abs(local) - np.asarray(primitive.half_size)
    else:
        radial = np.linalg.norm(points[:, :2] - np.asarray(primitive.center), axis=1) - primitive.radius
        height = np.maximum(primitive.z_min - points[:, 2], points[:, 2] - primitive.z_max)
        d = np.stack([radial, height], axis=1)
    outside = np.linalg.norm(np.maximum(d, 0.0), axis=1)
    inside = np.minimum(d.max(axis=1), 0.0)
    return np.abs(outside + inside)


def back_project(depth: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points of the valid pixels (z-depth convention) and their (v, u) indices."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - CX) / FX * z, (v - CY) / FY * z, z], axis=1)
    return cam @ pose[:3, :3].T + pose[:3, 3], (v, u)


def test_known_depth_and_pixel_centres_against_a_wall():
    """Camera 2 m from the wall y=0 at 0.5 m height: wall depth is exactly 2 (z-depth, not ray
    length) and the floor/wall boundary row is where the projection of the wall foot rounds to."""
    scene = generate_scene(SynthConfig(seed=1, num_scenes=1, points_per_scene=1000), 0)
    walls_and_floor = tuple(p for p in scene.primitives if p.label in (class_id("wall"), class_id("floor")))
    shell = replace(scene, primitives=walls_and_floor)
    lx = scene.room_size[0]
    eye = np.array([lx / 2, 2.0, 0.5])
    pose = look_at(eye, eye + np.array([0.0, -1.0, 0.0]))
    color, depth, label = render_view(shell, K, pose, WIDTH, HEIGHT)
    assert color.shape == (HEIGHT, WIDTH, 3) and depth.dtype == np.float32 and label.dtype == np.uint8
    first_floor_row = math.ceil(CY + FY * 0.5 / 2.0)  # 192
    assert first_floor_row == 192
    assert np.all(label[:first_floor_row] == class_id("wall"))
    assert np.all(label[first_floor_row:] == class_id("floor"))
    np.testing.assert_allclose(depth[:first_floor_row], 2.0, atol=1e-6)
    rows = np.arange(first_floor_row, HEIGHT, dtype=np.float64)
    floor_depth = np.repeat((0.5 * FY / (rows - CY))[:, None], WIDTH, axis=1)
    np.testing.assert_allclose(depth[first_floor_row:], floor_depth, rtol=1e-6)


def test_rendered_pixels_back_project_onto_a_primitive_of_their_label(scenes, config):
    checked = 0
    for scene in scenes:
        poses = camera_poses(scene, 3, np.random.default_rng(scene.index), config.camera_height)
        for pose in poses:
            _, depth, label = render_view(scene, K, pose, WIDTH, HEIGHT)
            assert np.array_equal(depth > 0, label != 255)  # no ceiling: a miss is the only 255
            points, (v, u) = back_project(depth, pose)
            pixel_labels = label[v, u]
            best = np.full(len(points), np.inf)
            for primitive in scene.primitives:
                mine = pixel_labels == primitive.label
                if mine.any():
                    best[mine] = np.minimum(best[mine], surface_distance(primitive, points[mine]))
            assert best.max() < 1e-3, f"{scene.scene_id}: pixel {best.argmax()} is {best.max():.4f} m off its surface"
            checked += len(points)
    assert checked > 0.9 * len(scenes) * 3 * WIDTH * HEIGHT


def test_sampled_points_agree_with_the_label_maps(scenes, config):
    passing = agreeing = 0
    for scene in scenes:
        xyz = scene.xyz.astype(np.float64)
        for view in render_views(scene, config):
            world_to_cam = np.linalg.inv(view.cam_to_world)
            cam = xyz @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
            z = cam[:, 2]
            front = z > 1e-6
            u = np.rint(cam[front, 0] / z[front] * FX + CX).astype(np.int64)
            v = np.rint(cam[front, 1] / z[front] * FY + CY).astype(np.int64)
            inside = (u >= 0) & (u < WIDTH) & (v >= 0) & (v < HEIGHT)
            index = np.flatnonzero(front)[inside]
            u, v = u[inside], v[inside]
            observed = view.depth[v, u]
            visible = (observed > 0) & (np.abs(observed - z[index]) <= 0.02 * observed)
            passing += int(visible.sum())
            agreeing += int((view.label[v[visible], u[visible]] == scene.labels[index[visible]]).sum())
    assert passing > 20_000
    assert agreeing / passing > 0.97, f"label agreement {agreeing / passing:.4f}"


def test_points_are_on_surfaces_and_inside_the_room(scenes, config):
    for scene in scenes:
        assert scene.xyz.dtype == np.float32 and scene.xyz.shape == (config.points_per_scene, 3)
        assert scene.rgb.dtype == np.uint8 and scene.labels.dtype == np.int16
        lx, ly, h = scene.room_size
        assert scene.xyz.min() >= -1e-5 and np.all(scene.xyz.max(axis=0) <= np.array([lx, ly, h]) + 1e-5)
        points = scene.xyz.astype(np.float64)
        best = np.full(len(points), np.inf)
        for primitive in scene.primitives:
            mine = scene.labels == primitive.label
            best[mine] = np.minimum(best[mine], surface_distance(primitive, points[mine]))
        assert best.max() < 1e-5


def test_every_room_has_five_classes_and_cameras_stand_free():
    config = SynthConfig(seed=11, num_scenes=12, points_per_scene=2000)
    room_types = set()
    for index in range(config.num_scenes):
        scene = generate_scene(config, index)
        room_types.add(scene.room_type)
        classes = set(np.unique(scene.labels).tolist())
        assert len(classes - {255}) >= 5, f"{scene.scene_id} ({scene.room_type}): classes {sorted(classes)}"
        assert {class_id("wall"), class_id("floor"), class_id("door"), class_id("window")} <= classes
        poses = camera_poses(scene, 30, np.random.default_rng(index), config.camera_height)
        eyes = poses[:, :3, 3]
        lx, ly, h = scene.room_size
        assert np.all((eyes[:, :2] > 0.3) & (eyes[:, :2] < np.array([lx, ly]) - 0.3))
        assert np.all((eyes[:, 2] >= 1.2) & (eyes[:, 2] <= 1.6))
        for primitive in scene.primitives:
            corners = primitive.corners()
            low, high = corners.min(axis=0) - 0.2, corners.max(axis=0) + 0.2
            assert not np.any(np.all((eyes >= low) & (eyes <= high), axis=1))
        rotations = poses[:, :3, :3]
        identity = np.broadcast_to(np.eye(3), rotations.shape)
        np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), identity, atol=1e-9)
        np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-9)
    assert len(room_types) >= 3


def read_tree(root: str) -> dict[str, bytes]:
    fs, base = storage.filesystem(root)
    return {path[len(base) :]: fs.cat_file(path) for path in fs.find(base)}


def test_same_seed_same_bytes_different_seed_different_bytes():
    tiny = SynthConfig(seed=5, num_scenes=2, views_per_scene=3, points_per_scene=3000)
    write_world(tiny, "memory://synth-det/a")
    write_world(tiny, "memory://synth-det/b")
    write_world(tiny.model_copy(update={"seed": 6}), "memory://synth-det/c")
    a, b, c = (read_tree(f"memory://synth-det/{name}") for name in "abc")
    assert len(a) == 1 + 2 * (1 + 3 * 4)
    assert a == b
    pth = "/scannet_3d/train/scene0000_00_vh_clean_2.pth"  # val_fraction 0.5: the second scene is val
    assert a[pth] != c[pth]
    assert a["/scannet_2d/scene0001_00/color/40.jpg"] != c["/scannet_2d/scene0001_00/color/40.jpg"]


def test_writer_round_trip(tmp_path):
    config = SynthConfig(seed=2, num_scenes=2, views_per_scene=3, points_per_scene=4000, val_fraction=0.5)
    root = str(tmp_path / "world")
    assert write_world(config, root) == ["scene0000_00", "scene0001_00"]
    assert storage.exists(storage.join(root, "scannet_3d", "train", "scene0000_00_vh_clean_2.pth"))
    assert not storage.exists(storage.join(root, "scannet_3d", "val", "scene0000_00_vh_clean_2.pth"))
    assert load_config(SynthConfig, storage.join(root, "synth_config.yaml")) == config

    scene = generate_scene(config, 1)
    views = render_views(scene, config)
    pth = storage.join(root, "scannet_3d", "val", "scene0001_00_vh_clean_2.pth")
    coords, colors, labels = safe_load.loads(storage.read_bytes(pth), pth)
    assert coords.dtype == colors.dtype == labels.dtype == np.float32
    assert coords.shape == (4000, 3) and colors.shape == (4000, 3) and labels.shape == (4000,)
    np.testing.assert_array_equal(coords, scene.xyz)
    np.testing.assert_array_equal(labels, scene.labels.astype(np.float32))
    assert colors.min() >= -1.0 and colors.max() <= 1.0
    np.testing.assert_array_equal(np.rint((colors + 1.0) * 127.5).astype(np.uint8), scene.rgb)

    depth_files = storage.listdir(storage.join(root, "scannet_2d", "scene0001_00", "depth"))
    frames = sorted(int(uri.rsplit("/", 1)[1].removesuffix(".png")) for uri in depth_files)
    assert frames == [0, FRAME_STEP, 2 * FRAME_STEP]
    for view in views:
        base = storage.join(root, "scannet_2d", "scene0001_00")
        depth = images.decode_depth(storage.read_bytes(storage.join(base, "depth", f"{view.frame_id}.png")), 1000)
        assert np.array_equal(depth > 0, view.depth > 0)
        assert np.abs(depth - view.depth).max() <= 0.0005 + 1e-6
        label = images.decode_label(storage.read_bytes(storage.join(base, "label", f"{view.frame_id}.png")))
        np.testing.assert_array_equal(label, view.label)
        color = images.decode_color(storage.read_bytes(storage.join(base, "color", f"{view.frame_id}.jpg")))
        assert color.shape == (HEIGHT, WIDTH, 3)
        assert np.abs(color.astype(np.int16) - view.color).mean() < 3.0
        pose_text = storage.read_bytes(storage.join(base, "pose", f"{view.frame_id}.txt")).decode()
        assert len(pose_text.strip().splitlines()) == 4
        np.testing.assert_array_equal(np.loadtxt(pose_text.splitlines()), view.cam_to_world)

    model = to_scene(scene, views)
    assert model.num_points == 4000 and len(model.views) == 3 and model.views[1].frame_id == "20"


def test_cli_writes_a_world_and_prints_a_summary(capsys):
    assert cli_main(["synth", "--out", "memory://synth-cli", "--set", "num_scenes=1", "--set", "views_per_scene=2",
                     "--set", "points_per_scene=1500"]) == 0
    assert "synth: 1 scenes, 2 views, 1500 points written to memory://synth-cli" in capsys.readouterr().out
    assert storage.exists("memory://synth-cli/scannet_2d/scene0000_00/pose/20.txt")


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="room_width: min 6.0 is larger than max 5.0"):
        load_config(SynthConfig, overrides=["room_width=[6.0, 5.0]"])
    with pytest.raises(ConfigError, match="field val_fraction"):
        load_config(SynthConfig, overrides=["val_fraction=1.5"])


def test_optional_ceiling_is_labelled_ignore():
    scene = generate_scene(SynthConfig(seed=4, num_scenes=1, points_per_scene=5000, ceiling=True), 0)
    lx, ly, h = scene.room_size
    on_ceiling = scene.labels == 255
    assert on_ceiling.sum() > 200
    np.testing.assert_allclose(scene.xyz[on_ceiling, 2], h, atol=1e-5)
    eye = np.array([lx / 2, ly / 2, 1.4])
    pose = look_at(eye, eye + np.array([0.3, 0.0, 1.0]))  # steeply upwards
    _, depth, label = render_view(scene, K, pose, WIDTH, HEIGHT)
    u, v = WIDTH // 2, HEIGHT // 2
    ray_z = pose[2, :3] @ np.array([(u - CX) / FX, (v - CY) / FY, 1.0])  # world z gained per metre of z-depth
    assert label[v, u] == 255
    assert depth[v, u] == pytest.approx((h - 1.4) / ray_z, rel=1e-6)
