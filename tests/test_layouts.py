"""Dataset layout readers on tiny fixtures written through the storage layer."""

import io
import pickle
import uuid

import numpy as np
import pytest

from openscene_ray.datasets import points
from openscene_ray.datasets.layouts import (
    SceneRef,
    build_layout,
    get_layout,
    layout_names,
)
from openscene_ray.datasets.matterport import opengl_to_opencv, select_views
from openscene_ray.datasets.posed_rgbd import VoxelCloud
from openscene_ray.datasets.view_files import scale_intrinsics
from openscene_ray.kernel import images, storage
from openscene_ray.kernel.config import ConfigError
from openscene_ray.kernel.scene import SceneError

RNG = np.random.default_rng(7)


def _root() -> str:
    return f"memory://layouts-{uuid.uuid4().hex[:8]}"


def _put(uri: str, data: bytes) -> str:
    storage.write_bytes(uri, data)
    return uri


def _jpeg(w: int, h: int) -> bytes:
    return images.encode_jpeg(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _depth(w: int, h: int, value: int = 1500) -> bytes:
    return images.encode_png(np.full((h, w), value, np.uint16))


def _txt(matrix: np.ndarray) -> bytes:
    out = io.StringIO()
    np.savetxt(out, matrix)
    return out.getvalue().encode()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _pose(tx: float, ty: float = 0.0, tz: float = 0.0, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pose[:3, 3] = [tx, ty, tz]
    return pose


def _pth(xyz, colors, labels) -> bytes:
    return pickle.dumps((xyz, colors, labels), protocol=2)


# ---- registry and formulas ------------------------------------------------------------------


def test_registry_names_and_config_overrides():
    assert layout_names() == ["matterport", "nuscenes", "nuscenes-calib", "posed-rgbd", "replica", "scannet"]
    assert get_layout("scannet").name == "scannet"
    with pytest.raises(KeyError, match="unknown layout 'kitti'; known: matterport, nuscenes"):
        get_layout("kitti")
    layout = build_layout("scannet", ["frame_skip=10", "cut_bound=4", "bad_views=skip"])
    assert (layout.config.frame_skip, layout.config.cut_bound, layout.config.bad_views) == (10, 4, "skip")
    with pytest.raises(ConfigError, match="field frame_skip"):
        build_layout("scannet", ["frame_skip=0"])
    with pytest.raises(ConfigError, match="field no_such_option"):
        build_layout("replica", ["no_such_option=1"])
    with pytest.raises(ConfigError, match="multiple of stored_frame_step"):
        build_layout("replica", ["frame_stride=15"])
    with pytest.raises(ConfigError, match="visibility_threshold"):
        build_layout("nuscenes", ["visibility_threshold=0.25"])


def test_scale_intrinsics_matches_the_reference_formula():
    k = np.array([[577.870605, 0, 319.5], [0, 577.870605, 239.5], [0, 0, 1]])
    out = scale_intrinsics(k, (640, 480), (320, 240))  # ScanNet
    assert np.allclose(out[[0, 1, 0, 1], [0, 1, 2, 2]], [288.9353025, 288.9353025, 159.5, 119.5], atol=1e-9)
    k = np.array([[600.0, 0, 599.5], [0, 600.0, 339.5], [0, 0, 1]])
    out = scale_intrinsics(k, (1200, 680), (640, 360))  # Replica: floor(360*1200/680) = 635
    assert np.allclose(out[[0, 1, 0, 1], [0, 1, 2, 2]], [317.5, 317.6470588235294, 319.5, 179.5], atol=1e-9)
    k = np.array([[1000.0, 0, 648.0], [0, 1000.0, 484.0], [0, 0, 1]])
    out = scale_intrinsics(k, (1296, 968), (320, 240))  # floor(240*1296/968) = floor(321.3) = 321
    assert out[0, 0] == pytest.approx(1000.0 * 321 / 1296) and out[1, 1] == pytest.approx(1000.0 * 240 / 968)
    assert out[0, 2] == pytest.approx(648.0 * 319 / 1295) and out[1, 2] == pytest.approx(484.0 * 239 / 967)
    assert np.array_equal(scale_intrinsics(k, (1296, 968), (1296, 968)), k)


def test_reference_colors_and_labels_are_converted():
    rgb = RNG.integers(0, 256, (6, 3)).astype(np.uint8)
    colors = rgb / 127.5 - 1.0
    labels = np.array([0.0, 5.0, 255.0, -100.0, 19.0, 254.0])
    xyz, out_rgb, out_labels = points.validated_points("s", np.ones((6, 3)), colors, labels, "f.pth")
    assert xyz.dtype == np.float32 and np.array_equal(out_rgb, rgb)
    assert out_labels.tolist() == [0, 5, 255, 255, 19, 254] and out_labels.dtype == np.int16
    assert np.array_equal(points.colors_to_rgb(0, 4, "s", "f"), np.zeros((4, 3), np.uint8))  # nuScenes' scalar 0
    with pytest.raises(SceneError, match=r"scene 's': labels: 1 labels are not integers in 0..254 \(e.g. 2.5\)"):
        points.labels_to_int16(np.array([1.0, 2.5]), 2, "s", "f")
    with pytest.raises(SceneError, match=r"colors: float colours outside \[-1,1\]"):
        points.colors_to_rgb(np.full((2, 3), 200.0), 2, "s", "f")
    with pytest.raises(SceneError, match=r"scene 's': xyz: empty point cloud \(file f.pth\)"):
        points.validated_points("s", np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), "f.pth")


# ---- ScanNet --------------------------------------------------------------------------------


def _scannet_scene(root, scene_id, split="val", frames=range(0, 101, 10), lost=(), labels_2d=(), n=30):
    xyz = RNG.normal(size=(n, 3))
    rgb = RNG.integers(0, 256, (n, 3)).astype(np.uint8)
    labels = RNG.integers(0, 20, n).astype(np.float64)
    labels[:3] = [255, -100, 255]
    _put(storage.join(root, "scannet_3d", split, f"{scene_id}_vh_clean_2.pth"), _pth(xyz, rgb / 127.5 - 1, labels))
    base = storage.join(root, "scannet_2d", scene_id)
    for f in frames:
        _put(storage.join(base, "color", f"{f}.jpg"), _jpeg(32, 24))
        _put(storage.join(base, "depth", f"{f}.png"), _depth(32, 24))
        pose = np.full((4, 4), -np.inf) if f in lost else _pose(0.1 * f)
        _put(storage.join(base, "pose", f"{f}.txt"), _txt(pose))
        if f in labels_2d:
            _put(storage.join(base, "label", f"{f}.png"), images.encode_png(np.full((24, 32), 3, np.uint8)))
    return xyz, rgb, labels


def test_scannet_reads_points_views_and_skips_lost_tracking():
    root = _root()
    xyz, rgb, labels = _scannet_scene(root, "scene0001_00", lost=(40,), labels_2d=(20,))
    _scannet_scene(root, "scene0000_00", split="train", frames=(0, 20))
    layout = build_layout("scannet")
    refs = layout.list_scenes(root)
    assert [(r.scene_id, r.split) for r in refs] == [("scene0000_00", "train"), ("scene0001_00", "val")]
    assert [r.scene_id for r in layout.list_scenes(root, "val")] == ["scene0001_00"]
    scene = layout.read_scene(root, refs[1])
    assert np.allclose(scene.xyz, xyz.astype(np.float32)) and np.array_equal(scene.rgb, rgb)
    assert scene.labels[:3].tolist() == [255, 255, 255] and np.array_equal(scene.labels[3:], labels[3:].astype(np.int16))
    assert [v.frame_id for v in scene.views] == ["0", "20", "60", "80", "100"]  # multiples of 20; 40 lost
    lost = f"cam_to_world: non-finite values (lost tracking) (file {root}/scannet_2d/scene0001_00/pose/40.txt)"
    assert scene.skipped_views == [("40", lost)]
    view = scene.views[3]
    assert view.intrinsics == (288.9353, 0.0, 159.5, 0.0, 288.9353, 119.5, 0.0, 0.0, 1.0)
    assert np.allclose(view.pose_matrix, _pose(8.0))
    assert view.depth_uri == f"{root}/scannet_2d/scene0001_00/depth/80.png" and view.label_uri is None
    assert scene.views[1].label_uri == f"{root}/scannet_2d/scene0001_00/label/20.png"
    record = scene.to_record("scannet", "memory://x/points.parquet")
    assert (record.image_width, record.image_height, record.depth_scale, record.visibility_threshold, record.cut_bound) == (
        320, 240, 1000.0, 0.25, 10,
    )  # fmt: skip


def test_scannet_bad_view_files_name_scene_view_and_file():
    root = _root()
    _scannet_scene(root, "scene0002_00", frames=(0, 20, 40))
    base = f"{root}/scannet_2d/scene0002_00"
    storage.remove(f"{base}/depth/20.png")
    layout = build_layout("scannet")
    (ref,) = layout.list_scenes(root)
    with pytest.raises(SceneError, match=rf"scene 'scene0002_00': view 20.depth: missing file \(file {base}/depth/20.png\)"):
        layout.read_scene(root, ref)
    _put(f"{base}/color/40.jpg", b"\xff\xd8\xff garbage, not a jpeg")
    skipping = build_layout("scannet", ["bad_views=skip"])
    scene = skipping.read_scene(root, ref)
    assert [v.frame_id for v in scene.views] == ["0"]
    assert scene.skipped_views == [
        ("20", f"depth: missing file (file {base}/depth/20.png)"),
        ("40", f"color: cannot decode image header (not a recognised image format) (file {base}/color/40.jpg)"),
    ]
    _put(f"{base}/pose/0.txt", _txt(np.diag([2.0, 1.0, 1.0, 1.0])))
    with pytest.raises(SceneError, match=r"view 0.cam_to_world: rotation block is not orthonormal .*pose/0.txt"):
        layout.read_scene(root, SceneRef("scene0002_00", "val", ref.source))
    with pytest.raises(SceneError, match=r"views: no usable views \(3 candidates\); skipped: 0: cam_to_world"):
        skipping.read_scene(root, ref)


def test_decode_mode_catches_a_truncated_jpeg_that_has_a_valid_header():
    root = _root()
    _scannet_scene(root, "scene0003_00", frames=(0, 20))
    uri = f"{root}/scannet_2d/scene0003_00/color/20.jpg"
    _put(uri, _jpeg(320, 240)[:1000])
    (ref,) = build_layout("scannet").list_scenes(root)
    assert [v.frame_id for v in build_layout("scannet").read_scene(root, ref).views] == ["0", "20"]
    with pytest.raises(SceneError, match=rf"view 20.color: cannot decode image .*\(file {uri}\)"):
        build_layout("scannet", ["check_images=decode"]).read_scene(root, ref)


def test_scannet_wrong_aspect_and_depth_mode_are_view_errors():
    root = _root()
    _scannet_scene(root, "scene0004_00", frames=(0,))
    base = f"{root}/scannet_2d/scene0004_00"
    (ref,) = build_layout("scannet").list_scenes(root)
    _put(f"{base}/depth/0.png", images.encode_png(np.zeros((24, 32, 3), np.uint8)))
    with pytest.raises(SceneError, match=r"view 0.depth: unexpected image mode 'RGB' for a depth image"):
        build_layout("scannet").read_scene(root, ref)
    _put(f"{base}/color/0.jpg", _jpeg(40, 20))
    with pytest.raises(SceneError, match=r"view 0.color: stored size 40x20 does not match the fusion size 320x240"):
        build_layout("scannet").read_scene(root, ref)


# ---- Matterport ------------------------------------------------------------------------------


def test_select_views_inside_bbox_then_nearest_fallback():
    centres = np.array([[0.5, 0.5, 0.5], [2.0, 0, 0], [1.0, 0.2, 0.2], [0.9, 0.9, 0.9], [5, 5, 5]])
    lo, hi = np.zeros(3), np.ones(3)
    assert select_views(centres, lo, hi, 100).tolist() == [0, 3]  # [1,.2,.2] is on the face: not strictly inside
    far = centres + 10.0
    assert select_views(far, lo, hi, 0).tolist() == []
    # distances to the bbox centre (0.5, 0.5, 0.5): 17.32, 17.68, 17.27, 18.01, 25.11 -> nearest first
    assert select_views(far, lo, hi, 3).tolist() == [2, 0, 1]


def _matterport(root, cameras, poses=None):
    """A building 'B1' with cameras at ``cameras`` (centres); 20x16 images with K at that size."""
    base = storage.join(root, "matterport_2d", "B1")
    names = []
    for i, centre in enumerate(cameras):
        name = f"pano{i:03d}_i1_{i % 6}"
        names.append(name)
        pose = _pose(*centre) if poses is None else poses[i]
        _put(storage.join(base, "color", f"{name}.jpg"), _jpeg(20, 16))
        _put(storage.join(base, "depth", f"pano{i:03d}_d1_{i % 6}.png"), _depth(20, 16))
        _put(storage.join(base, "pose", f"{name}.txt"), _txt(pose))
        _put(storage.join(base, "intrinsic", f"{name}.txt"), _txt(np.array([[15.0 + i, 0, 9.5], [0, 16, 7.5], [0, 0, 1]])))
    return names


def _region(root, split, name, lo, hi):
    xyz = np.array([lo, hi, np.add(lo, hi) / 2], dtype=np.float64)
    _put(storage.join(root, "matterport_3d", split, f"B1_{name}.pth"), _pth(xyz, np.zeros((3, 3)), np.array([1.0, 2, 255])))


def test_matterport_views_inside_region_and_test_split_fallback():
    root = _root()
    inside = [(0.5, 0.5, 0.5), (1.5, 1.5, 0.5)]
    outside = [(10.0 + i, 0.0, 0.0) for i in range(103)]  # distances to (1,1,1) grow with i
    names = _matterport(root, inside + outside)
    _region(root, "val", "region0", (0, 0, 0), (2, 2, 1))
    _region(root, "val", "region1", (-6, -6, -6), (-5, -5, -5))
    _region(root, "test", "region2", (0, 0, 3), (2, 2, 4))
    layout = build_layout("matterport")
    refs = {r.scene_id: r for r in layout.list_scenes(root)}
    assert sorted(refs) == ["B1_region0", "B1_region1", "B1_region2"]
    scene = layout.read_scene(root, refs["B1_region0"])
    assert [v.frame_id for v in scene.views] == names[:2]
    view = scene.views[1]
    assert view.depth_uri == f"{root}/matterport_2d/B1/depth/pano001_d1_1.png"
    # K of the stored 20x16 image rescaled to 640x512: fx * 640/20, fy * 512/16, cx * 639/19, cy * 511/15
    assert np.allclose(view.intrinsics_matrix, [[16.0 * 32, 0, 319.5], [0, 16 * 32, 255.5], [0, 0, 1]])
    with pytest.raises(SceneError, match=r"scene 'B1_region1': views: no camera of building B1 lies inside"):
        layout.read_scene(root, refs["B1_region1"])
    fallback = layout.read_scene(root, refs["B1_region2"])
    assert len(fallback.views) == 100
    assert {v.frame_id for v in fallback.views} == set(names[:100])  # the 3 farthest are dropped
    assert (fallback.depth_scale, fallback.visibility_threshold, fallback.image_width) == (4000.0, 0.02, 640)


def test_matterport_pose_convention_flips_columns_one_and_two():
    root = _root()
    raw = _pose(0.5, 0.5, 0.5, angle=0.3)
    _matterport(root, [(0.5, 0.5, 0.5)], poses=[raw])
    _region(root, "val", "region0", (0, 0, 0), (1, 1, 1))
    expected = raw.copy()
    expected[:3, 1:3] *= -1
    assert np.allclose(opengl_to_opencv(raw), expected)
    assert np.allclose(opengl_to_opencv(raw)[:3, [0, 3]], raw[:3, [0, 3]])
    (ref,) = build_layout("matterport").list_scenes(root)
    (as_is,) = build_layout("matterport").read_scene(root, ref).views
    (flipped,) = build_layout("matterport", ["pose_convention=opengl"]).read_scene(root, ref).views
    assert np.allclose(as_is.pose_matrix, raw) and np.allclose(flipped.pose_matrix, expected)


# ---- Replica ---------------------------------------------------------------------------------


def _replica(root, frames):
    xyz = RNG.normal(size=(10, 3))
    _put(storage.join(root, "replica_3d", "room0.pth"), _pth(xyz, np.zeros((10, 3)), np.full(10, 255)))
    base = storage.join(root, "replica_2d", "room0")
    for i in frames:
        _put(storage.join(base, "color", f"{i}.jpg"), _jpeg(32, 18))
        _put(storage.join(base, "depth", f"{i}.png"), _depth(32, 18))
        _put(storage.join(base, "pose", f"{i}.txt"), _txt(_pose(0.01 * i)))


def test_replica_frame_stride_counts_original_frames():
    root = _root()
    _replica(root, range(26))
    (ref,) = build_layout("replica").list_scenes(root)
    assert (ref.scene_id, ref.split) == ("room0", "all")
    stored_every_10th = build_layout("replica").read_scene(root, ref)  # files already every 10th frame
    assert [v.frame_id for v in stored_every_10th.views] == [str(i) for i in sorted(range(26))]
    full_rate = build_layout("replica", ["stored_frame_step=1"]).read_scene(root, ref)
    assert [v.frame_id for v in full_rate.views] == ["0", "10", "20"]
    every_20th = build_layout("replica", ["frame_stride=20"]).read_scene(root, ref)
    assert [v.frame_id for v in every_20th.views] == [str(i) for i in range(0, 26, 2)]
    view = full_rate.views[2]
    assert np.allclose(view.intrinsics_matrix, [[317.5, 0, 319.5], [0, 317.6470588235294, 179.5], [0, 0, 1]])
    assert np.allclose(view.pose_matrix, _pose(0.2))
    assert (full_rate.depth_scale, full_rate.image_width, full_rate.image_height) == (6553.5, 640, 360)


# ---- nuScenes --------------------------------------------------------------------------------


def test_nuscenes_preprocessed_layout_scales_k_and_refuses_pickled_npy():
    root = _root()
    xyz = RNG.normal(size=(8, 3))
    _put(f"{root}/nuscenes_3d/val/scene-0001.pth", _pth(xyz, 0, np.full(8, 255.0)))
    base = f"{root}/nuscenes_2d/val/scene-0001"
    k = np.array([[126.6, 0, 81.6], [0, 126.6, 49.1], [0, 0, 1]])  # K at the stored 160x90 images
    for i, cam in enumerate(("back", "back_left", "back_right", "front", "front_left", "front_right")):
        _put(f"{base}/color/{cam}.jpg", _jpeg(160, 90))
        _put(f"{base}/K/{cam}.npy", _npy(k))
        _put(f"{base}/pose/{cam}.npy", _npy(_pose(0, angle=i * np.pi / 3)))
    layout = build_layout("nuscenes")
    (ref,) = layout.list_scenes(root)
    scene = layout.read_scene(root, ref)
    assert [v.frame_id for v in scene.views] == ["back", "back_left", "back_right", "front", "front_left", "front_right"]
    assert np.array_equal(scene.rgb, np.zeros((8, 3), np.uint8)) and (scene.labels == 255).all()
    expected = [[126.6 * 800 / 160, 0, 81.6 * 799 / 159], [0, 126.6 * 450 / 90, 49.1 * 449 / 89], [0, 0, 1]]
    assert np.allclose(scene.views[0].intrinsics_matrix, expected)
    assert np.allclose(scene.views[4].pose_matrix, _pose(0, angle=4 * np.pi / 3))
    assert scene.views[0].depth_uri is None and scene.depth_scale is None and scene.visibility_threshold is None
    assert scene.cut_bound == 5 and (scene.image_width, scene.image_height) == (800, 450)
    _put(f"{base}/pose/front.npy", _npy(np.array([{"evil": 1}], dtype=object)))
    with pytest.raises(SceneError, match=r"view front.cam_to_world: not a plain .npy array .*pose/front.npy"):
        layout.read_scene(root, ref)


# ---- posed RGB-D -----------------------------------------------------------------------------


def _redwood(root, n_frames=3, w=8, h=6, depth_mm=2000):
    """A capture looking at a wall 2 m away; frame i is moved 0.1*i m along x."""
    _put(f"{root}/camera_primesense.json", b'{"width": 8, "height": 6, "intrinsic_matrix": [4, 0, 0, 0, 5, 0, 3.5, 2.5, 1]}')
    lines = []
    for i in range(n_frames):
        colour = np.zeros((h, w, 3), np.uint8)
        colour[..., 0] = 10 * i
        colour[..., 1] = np.arange(w)[None, :] * 20
        _put(f"{root}/color/{i:05d}.png", images.encode_png(colour))
        _put(f"{root}/depth/{i:05d}.png", _depth(w, h, depth_mm))
        lines.append(f"{i} {i} {i + 1}")
        lines += [" ".join(f"{v:.6f}" for v in row) for row in _pose(0.1 * i)]
    _put(f"{root}/trajectory.log", ("\n".join(lines) + "\n").encode())


def test_posed_rgbd_redwood_builds_a_voxel_cloud_from_depth():
    root = _root()
    _redwood(f"{root}/cap1")
    layout = build_layout("posed-rgbd", ["cloud_frame_stride=2"])
    (ref,) = layout.list_scenes(f"{root}/cap1")
    assert (ref.scene_id, ref.source) == ("cap1", f"{root}/cap1")
    assert [r.scene_id for r in layout.list_scenes(root)] == ["cap1"]  # a folder of captures
    scene = layout.read_scene(root, ref)
    assert [v.frame_id for v in scene.views] == ["00000", "00001", "00002"]
    assert np.allclose(scene.views[0].intrinsics_matrix, [[4, 0, 3.5], [0, 5, 2.5], [0, 0, 1]])  # column-major file
    assert np.allclose(scene.views[2].pose_matrix, _pose(0.2), atol=1e-6)
    assert (scene.image_width, scene.image_height, scene.depth_scale, scene.visibility_threshold) == (8, 6, 1000.0, 0.1)
    # frames 0 and 2 back-projected: pixel (u,v) of frame i -> ((u-3.5)*2/4 + 0.1*i, (v-2.5)*2/5, 2), points
    # 0.5 m apart in x; frame 2's 0.2 m shift puts each of its points in a new 2 cm voxel: 2 * 48 points.
    assert len(scene.xyz) == 96 and (scene.labels == 255).all()
    xs = np.unique(np.round(scene.xyz[:, 0], 4))
    assert np.allclose(xs, np.sort(np.concatenate([(np.arange(8) - 3.5) * 0.5, (np.arange(8) - 3.5) * 0.5 + 0.2])))
    assert np.allclose(scene.xyz[:, 2], 2.0)
    first = (np.abs(scene.xyz[:, 0] - (-1.75)) < 1e-4) & (np.abs(scene.xyz[:, 1] - (-1.0)) < 1e-4)
    assert scene.rgb[first].tolist() == [[0, 0, 0]]  # frame 0, pixel (0, 0)
    shifted = (np.abs(scene.xyz[:, 0] - (-1.55)) < 1e-4) & (np.abs(scene.xyz[:, 1] - (-1.0)) < 1e-4)
    assert scene.rgb[shifted].tolist() == [[20, 0, 0]]  # frame 2, pixel (0, 0)


def test_voxel_cloud_first_point_and_centroid():
    xyz = np.array([[0.001, 0.001, 0.001], [0.015, 0.015, 0.015], [0.5, 0.5, 0.5]])
    rgb = np.array([[10, 10, 10], [30, 30, 30], [200, 0, 0]], np.uint8)
    first = VoxelCloud(0.02, "first")
    first.add(xyz[:1], rgb[:1])
    first.add(xyz[1:], rgb[1:])
    pts, colours = first.points()
    assert np.allclose(pts, [[0.001] * 3, [0.5] * 3]) and colours.tolist() == [[10] * 3, [200, 0, 0]]
    centroid = VoxelCloud(0.02, "centroid")
    centroid.add(xyz[:2], rgb[:2])
    centroid.add(xyz[2:], rgb[2:])
    pts, colours = centroid.points()
    assert np.allclose(pts, [[0.008] * 3, [0.5] * 3]) and colours.tolist() == [[20] * 3, [200, 0, 0]]


def test_posed_rgbd_seven_scenes_with_text_intrinsics_and_ply_points():
    root = _root()
    for i in range(4):
        _put(f"{root}/frame-{i:06d}.color.png", images.encode_png(np.full((6, 8, 3), 9, np.uint8)))
        _put(f"{root}/frame-{i:06d}.depth.png", _depth(8, 6, 1000))
        _put(f"{root}/frame-{i:06d}.pose.txt", _txt(_pose(0.0, 0.1 * i)))
    _put(f"{root}/intrinsics.txt", _txt(np.array([[5.0, 0, 4], [0, 5, 3], [0, 0, 1]])))
    xyz = np.array([[0.0, 0, 1], [1, 2, 3]], np.float32)
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
    header += b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nproperty int label\nend_header\n"
    body = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"), ("l", "<i4")])
    body["x"], body["y"], body["z"] = xyz.T
    body["r"], body["l"] = [7, 250], [3, 255]
    _put(f"{root}/points.ply", header + body.tobytes())
    layout = build_layout("posed-rgbd", ["frame_stride=2", "depth_scale=5000"])
    (ref,) = layout.list_scenes(root)
    scene = layout.read_scene(root, ref)
    assert [v.frame_id for v in scene.views] == ["000000", "000002"]
    assert np.allclose(scene.views[1].pose_matrix, _pose(0.0, 0.2))
    assert np.allclose(scene.views[1].intrinsics_matrix, [[5, 0, 4], [0, 5, 3], [0, 0, 1]])
    assert scene.depth_scale == 5000.0
    assert np.array_equal(scene.xyz, xyz) and scene.rgb[:, 0].tolist() == [7, 250] and scene.labels.tolist() == [3, 255]
    ascii_ply = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty double x\nproperty double y\nproperty double z\n"
    ascii_ply += b"property float red\nproperty float green\nproperty float blue\nend_header\n0 0 1 1 0 0.5\n1 2 3 0 1 0\n"
    _put(f"{root}/points.ply", ascii_ply)
    scene = layout.read_scene(root, ref)
    assert np.allclose(scene.xyz, xyz) and scene.rgb.tolist() == [[255, 0, 128], [0, 255, 0]]
    assert scene.labels.tolist() == [255, 255]
    faces_only = b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int v\nend_header\n3 0 1 2\n"
    _put(f"{root}/points.ply", faces_only)
    with pytest.raises(SceneError, match=r"points: the first PLY element must be .vertex., got .face. \(file "):
        layout.read_scene(root, ref)


def test_posed_rgbd_errors_name_the_file():
    root = _root()
    _redwood(root)
    layout = build_layout("posed-rgbd")
    (ref,) = layout.list_scenes(root)
    storage.remove(f"{root}/camera_primesense.json")
    with pytest.raises(SceneError, match=r"intrinsics: no intrinsics file \(looked for camera_primesense.json"):
        layout.read_scene(root, ref)
    scene = build_layout("posed-rgbd", ["intrinsics=[4, 5, 3.5, 2.5]"]).read_scene(root, ref)
    assert np.allclose(scene.views[0].intrinsics_matrix, [[4, 0, 3.5], [0, 5, 2.5], [0, 0, 1]])
    _put(f"{root}/trajectory.log", b"0 0 1\n1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(SceneError, match=r"trajectory: 1 poses for 3 colour images .*\(file .*trajectory.log\)"):
        build_layout("posed-rgbd", ["intrinsics=[4, 5, 3.5, 2.5]"]).read_scene(root, ref)
    empty = _root()
    _redwood(empty, depth_mm=0)
    (ref,) = layout.list_scenes(empty)
    with pytest.raises(SceneError, match=r"points: no valid depth to build a point cloud from"):
        layout.read_scene(empty, ref)
