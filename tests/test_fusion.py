"""Multi-view fusion: parity with a per-view loop written here from the formulas, edge cases of
projection and visibility, view accounting, and known answers on real Redwood and nuScenes data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openscene_ray.extractors import build_extractor
from openscene_ray.fusion import (
    FusionParams,
    fuse_views,
    project,
    visible_points,
)
from openscene_ray.kernel.scene import View


class MapExtractor:
    """A fixed random feature map per frame id; records the frame ids of every call."""

    name = "test-maps"
    text_model = "none"
    device = torch.device("cpu")

    def __init__(self, dim: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32):
        self.feature_dim = dim
        self.seed = seed
        self.dtype = dtype
        self.calls: list[list[str]] = []

    def map_of(self, view: View) -> np.ndarray:
        """The view's map as float64, holding exactly the values ``extract`` returns."""
        rng = np.random.default_rng([self.seed, int(view.frame_id)])
        values = torch.from_numpy(rng.standard_normal((view.height, view.width, self.feature_dim)).astype(np.float32))
        return values.to(self.dtype).double().numpy()

    def extract(self, views, height, width):
        self.calls.append([v.frame_id for v in views])
        return torch.from_numpy(np.stack([self.map_of(v) for v in views])).to(self.dtype)


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    pose[:3, 3] = centre
    return pose


def random_scene(seed: int, n_points: int = 3000, n_views: int = 10, width: int = 48, height: int = 36):
    """Points in and around a box, cameras around it (one looking away); depth = perturbed z-buffer."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-1, 1, (n_points, 3))
    xyz[: n_points // 5] *= 4  # some points outside the frusta or behind cameras
    xyz = xyz.astype(np.float32)
    k = np.array([[40.0, 0, (width - 1) / 2], [0, 38.0, (height - 1) / 2], [0, 0, 1]])
    views = []
    for i in range(n_views):
        angle = rng.uniform(0, 2 * np.pi)
        centre = np.array([3 * np.cos(angle), 3 * np.sin(angle), rng.uniform(-0.5, 0.5)])
        target = rng.uniform(-0.3, 0.3, 3)
        if i == 3:  # view 3 is far out, looking away from everything
            centre, target = 10 * centre, 20 * centre
        pose = look_at(centre, target)
        p = (np.linalg.inv(pose) @ np.c_[xyz, np.ones(n_points)].T)[:3]
        u = np.round(p[0] * k[0, 0] / p[2] + k[0, 2]).astype(int)
        v = np.round(p[1] * k[1, 1] / p[2] + k[1, 2]).astype(int)
        ok = (p[2] > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        zbuf = np.full((height, width), np.inf)
        np.minimum.at(zbuf, (v[ok], u[ok]), p[2][ok])
        depth = np.where(np.isfinite(zbuf), zbuf, 0) * rng.uniform(0.85, 1.15, (height, width))
        depth[rng.random((height, width)) < 0.1] = 0
        color = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        views.append(View(str(i), color, depth.astype(np.float32), k, pose))
    return xyz, views


def loop_fusion(xyz, views, feature_map, cut, thr, use_depth):
    """Per view, per point, straight from the formulas in float64."""
    n = xyz.shape[0]
    sums, counts = np.zeros((n, 0)), np.zeros(n, int)
    for view in views:
        h, w, k = view.height, view.width, view.intrinsics
        p = np.linalg.inv(view.cam_to_world) @ np.c_[xyz.astype(np.float64), np.ones(n)].T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = np.round(p[0] * k[0, 0] / p[2] + k[0, 2]), np.round(p[1] * k[1, 1] / p[2] + k[1, 2])
        visible = np.zeros(n, bool)
        for i in np.flatnonzero((p[2] > 0) & (u >= cut) & (u < w - cut) & (v >= cut) & (v < h - cut)):
            if use_depth:
                d = float(view.depth[int(v[i]), int(u[i])])
                visible[i] = d > 0 and abs(d - p[2, i]) <= thr * d
            else:
                visible[i] = True
        if visible.any():
            fmap = feature_map(view)
            if sums.shape[1] == 0:
                sums = np.zeros((n, fmap.shape[2]))
            sums[visible] += fmap[v[visible].astype(int), u[visible].astype(int)]
            counts[visible] += 1
    seen = counts > 0
    return sums[seen] / counts[seen, None], seen, counts


@pytest.mark.parametrize(
    "seed, cut, thr, depth_test, batch",
    [(0, 0, 0.1, True, 1), (1, 3, 0.1, True, 3), (2, 10, 0.25, True, 8), (3, 5, None, True, 4), (4, 2, 0.1, False, 2)],
)
def test_parity_with_per_view_loop(seed, cut, thr, depth_test, batch):
    xyz, views = random_scene(seed)
    extractor = MapExtractor(seed=seed)
    params = FusionParams(cut_bound=cut, visibility_threshold=thr, depth_test=depth_test, views_per_batch=batch)
    result = fuse_views(xyz, iter(views), extractor, params)
    want, seen, counts = loop_fusion(xyz, views, extractor.map_of, cut, thr, thr is not None and depth_test)
    assert 0.05 < seen.mean() < 1.0
    np.testing.assert_array_equal(result.mask, seen)
    np.testing.assert_array_equal(result.n_views, counts.astype(np.uint16))
    assert result.features.dtype == torch.float16 and result.features.shape == want.shape
    np.testing.assert_allclose(result.features.float().numpy(), want, rtol=2e-3, atol=2e-3)
    # View 3 looks away: it is counted, never sent to the extractor.
    sent = [f for call in extractor.calls for f in call]
    assert "3" not in sent and result.n_views_no_points == 1
    assert result.n_views_used == len(sent) == 9 and result.n_views_invalid == 0
    assert max(len(c) for c in extractor.calls) <= batch
    if thr is not None and depth_test:  # the depth test really removes points
        _, seen_nodepth, _ = loop_fusion(xyz, views, extractor.map_of, cut, thr, False)
        assert seen_nodepth.sum() > seen.sum()


def single_view(width: int, height: int, k: np.ndarray, depth: np.ndarray | None = None, frame: str = "0") -> View:
    return View(frame, np.zeros((height, width, 3), np.uint8), depth, k, np.eye(4))


def test_round_half_to_even_and_pixel_lookup():
    k = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    xyz = np.array([[2.5, 0.5, 1], [3.5, 1.5, 1], [2.4999, 2.5, 1], [4.5, 3.5, 1]], dtype=np.float32)
    proj = project(torch.as_tensor(xyz, dtype=torch.float64), np.eye(4), k, 8, 8)
    assert proj.index.tolist() == [0, 1, 2, 3]
    assert proj.u.tolist() == [2, 4, 2, 4] and proj.v.tolist() == [0, 2, 2, 4]

    class Coords:  # feature = (u, v) of the pixel
        name, text_model, feature_dim, device = "coords", "none", 2, torch.device("cpu")

        def extract(self, views, height, width):
            vv, uu = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
            return torch.stack([uu, vv], -1).float().expand(len(views), -1, -1, -1)

    result = fuse_views(xyz, [single_view(8, 8, k)], Coords(), FusionParams(0, None))
    assert result.features.tolist() == [[2, 0], [4, 2], [2, 2], [4, 4]]


def test_cut_bound_edges():
    width, height, cut = 10, 8, 2
    k = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    us = [1, 2, 7, 8, 4, 4, 4, 4]  # u == cut inside, u == W-cut outside
    vs = [4, 4, 4, 4, 1, 2, 5, 6]  # v == cut inside, v == H-cut outside
    xyz = np.array([[u, v, 1.0] for u, v in zip(us, vs)], dtype=np.float32)
    result = fuse_views(xyz, [single_view(width, height, k)], MapExtractor(), FusionParams(cut, None))
    assert result.mask.tolist() == [False, True, True, False, False, True, True, False]


def test_relative_depth_threshold_edge_and_invalid_depth():
    k = np.array([[1.0, 0, 2], [0, 1.0, 2], [0, 0, 1]])
    depth = np.zeros((5, 5), np.float32)
    depth[2, 2] = 2.0  # |2 - z| <= 0.25 * 2 = 0.5
    zs = [2.5, 1.5, 2.5 + 2**-20, 1.5 - 2**-20, 2.0]
    xyz = np.array([[0, 0, z] for z in zs] + [[1.0, 0, 1.0]], dtype=np.float32)  # last: pixel with depth 0
    view = single_view(5, 5, k, depth)
    result = fuse_views(xyz, [view], MapExtractor(), FusionParams(0, 0.25))
    assert result.mask.tolist() == [True, True, False, False, True, False]
    no_test = fuse_views(xyz, [view], MapExtractor(), FusionParams(0, 0.25, depth_test=False))
    assert no_test.mask.all()
    no_thr = fuse_views(xyz, [view], MapExtractor(), FusionParams(0, None))
    assert no_thr.mask.all()


def test_points_behind_or_on_the_camera_plane_are_never_visible():
    k = np.array([[1.0, 0, 2], [0, 1.0, 2], [0, 0, 1]])
    depth = np.ones((5, 5), np.float32)
    # z = -1 projects to the centre pixel; z = 0 gives nan/inf pixels; the last point is visible.
    xyz = np.array([[0, 0, -1], [0.5, 0.5, -1], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    for params, depth_map in [(FusionParams(0, 3.0), depth), (FusionParams(0, None), None)]:
        result = fuse_views(xyz, [single_view(5, 5, k, depth_map)], MapExtractor(), params)
        assert result.mask.tolist() == [False, False, False, False, True]


def test_invalid_poses_skipped_and_batches_flushed():
    xyz, views = random_scene(5, n_views=8)
    bad = []
    for i, pose in enumerate([np.full((4, 4), -np.inf), np.diag([1.0, 1, 0, 1]), np.diag([2.0, 1, 1, 1])]):
        bad.append(View(f"10{i}", views[0].color, views[0].depth, views[0].intrinsics, pose))
    small = View("20", np.zeros((20, 30, 3), np.uint8), None, views[0].intrinsics, views[0].cam_to_world)
    stream = [*views[:2], bad[0], *views[2:5], bad[1], small, *views[5:], bad[2]]
    extractor = MapExtractor()
    result = fuse_views(xyz, stream, extractor, FusionParams(0, 0.1, views_per_batch=3))
    assert result.n_views_invalid == 3 and result.n_views_no_points == 1 and result.n_views_used == 8
    # batches of 3 views of one size; the 30x20 view flushes the pending batch
    assert extractor.calls == [["0", "1", "2"], ["4"], ["20"], ["5", "6", "7"]]


def test_no_views_gives_empty_result():
    xyz = np.zeros((4, 3), np.float32)
    result = fuse_views(xyz, [], MapExtractor(dim=5), FusionParams(0, None))
    assert result.features.shape == (0, 5) and not result.mask.any() and result.n_views_used == 0


def test_params_validation():
    with pytest.raises(ValueError, match="cut_bound"):
        FusionParams(-1, None)
    with pytest.raises(ValueError, match="visibility_threshold"):
        FusionParams(0, 0.0)
    with pytest.raises(ValueError, match="views_per_batch"):
        FusionParams(0, None, views_per_batch=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_parity_with_half_precision_maps(dtype):
    """fp16 / bf16 maps are gathered and added in fp32: the same answer as float64 sums of the same values."""
    xyz, views = random_scene(6)
    extractor = MapExtractor(dim=16, seed=6, dtype=dtype)
    result = fuse_views(xyz, views, extractor, FusionParams(cut_bound=2, visibility_threshold=0.1, views_per_batch=3))
    want, seen, counts = loop_fusion(xyz, views, extractor.map_of, 2, 0.1, True)
    np.testing.assert_array_equal(result.mask, seen)
    np.testing.assert_array_equal(result.n_views, counts.astype(np.uint16))
    np.testing.assert_allclose(result.features.float().numpy(), want, rtol=2e-3, atol=2e-3)


def test_features_are_the_fp16_rounding_of_the_exact_mean():
    """Within half an fp16 step of the float64 mean (plus fp32 summation noise), element by element."""
    xyz, views = random_scene(7, n_points=4000, n_views=12)
    extractor = MapExtractor(dim=24, seed=7)
    result = fuse_views(xyz, views, extractor, FusionParams(cut_bound=1, visibility_threshold=0.1, views_per_batch=4))
    want, seen, _ = loop_fusion(xyz, views, extractor.map_of, 1, 0.1, True)
    np.testing.assert_array_equal(result.mask, seen)
    got = result.features.float().numpy().astype(np.float64)
    lower = np.abs(want).astype(np.float16)
    lower = np.where(lower > np.abs(want), np.nextafter(lower, np.float16(0)), lower)
    excess = np.abs(got - want) - 0.5 * np.spacing(lower).astype(np.float64)
    assert excess.max() <= 1e-7, excess.max()  # fp32 sums of a dozen unit-scale terms


def test_each_view_sees_exactly_what_visible_points_finds():
    """Frustum culling is conservative: per view, the fused mask is the exact visibility test's."""
    rng = np.random.default_rng(11)
    xyz = rng.uniform(-6, 6, (20_000, 3)).astype(np.float32)  # around and behind every camera
    k = np.array([[30.0, 0, 23.5], [0, 30.0, 17.5], [0, 0, 1]])
    xyz_t = torch.as_tensor(xyz, dtype=torch.float64)
    for i in range(12):
        centre, target = rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)
        view = View(str(i), np.zeros((36, 48, 3), np.uint8), None, k, look_at(centre, target))
        for params in (FusionParams(cut_bound=0, visibility_threshold=None), FusionParams(cut_bound=5, visibility_threshold=None)):
            result = fuse_views(xyz, [view], MapExtractor(dim=2), params)
            index, _ = visible_points(xyz_t, view, params)
            assert 0 < index.numel() < len(xyz)
            np.testing.assert_array_equal(np.flatnonzero(result.mask), index.numpy())


def test_unseen_and_non_finite_points():
    """Points no view sees, and NaN/inf points, get no feature; their neighbours are unaffected."""
    xyz, views = random_scene(8)
    bad = np.array([[np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf], [1e9, 1e9, 1e9]], dtype=np.float32)
    extractor = MapExtractor(seed=8)
    params = FusionParams(cut_bound=0, visibility_threshold=0.1, views_per_batch=4)
    plain = fuse_views(xyz, views, extractor, params)
    mixed = fuse_views(np.concatenate([bad, xyz]), views, extractor, params)
    assert not mixed.mask[:4].any() and (mixed.n_views[:4] == 0).all()
    np.testing.assert_array_equal(mixed.mask[4:], plain.mask)
    assert torch.equal(mixed.features, plain.features)
    assert (~plain.mask).any() and (plain.n_views[~plain.mask] == 0).all()


def test_no_points():
    _, views = random_scene(9, n_views=3)
    result = fuse_views(np.zeros((0, 3), np.float32), views, MapExtractor(dim=4), FusionParams(0, 0.1))
    assert result.features.shape == (0, 4) and result.mask.shape == (0,)
    assert result.n_views_used == 0 and result.n_views_no_points == 3


# ---------------------------------------------------------------- real data


def read_redwood(root: Path, invert_poses: bool = False):
    """Frame 0's valid depth back-projected to world points with colours, and views 1-4."""
    lines = (root / "trajectory.log").read_text().split("\n")
    poses = [np.loadtxt(lines[5 * i + 1 : 5 * i + 5]) for i in range(5)]
    if invert_poses:
        poses = [np.linalg.inv(p) for p in poses]
    k = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    colors = [np.asarray(Image.open(root / "color" / f"0000{i}.jpg").convert("RGB")) for i in range(5)]
    depths = [(np.asarray(Image.open(root / "depth" / f"0000{i}.png")) / 1000.0).astype(np.float32) for i in range(5)]
    vv, uu = np.nonzero(depths[0] > 0)
    d = depths[0][vv, uu].astype(np.float64)
    cam = np.stack([(uu - k[0, 2]) * d / k[0, 0], (vv - k[1, 2]) * d / k[1, 1], d, np.ones_like(d)])
    xyz = (poses[0] @ cam)[:3].T.astype(np.float32)
    views = [View(str(i), colors[i], depths[i], k, poses[i]) for i in range(1, 5)]
    return xyz, colors[0][vv, uu], views


@pytest.mark.realdata
def test_redwood_rgb_fusion_reproduces_frame0_colours(shared_data):
    root = shared_data / "redwood-livingroom1"
    params = FusionParams(cut_bound=0, visibility_threshold=0.05, views_per_batch=2)
    xyz, rgb0, views = read_redwood(root)
    result = fuse_views(xyz, views, build_extractor("rgb"), params)
    error = np.abs(result.features.float().numpy() * 255 - rgb0[result.mask]).mean()
    assert result.mask.mean() > 0.9 and error < 6, (result.mask.mean(), error)
    no_depth = FusionParams(cut_bound=0, visibility_threshold=0.05, depth_test=False)
    for i, view in enumerate(views):  # per frame, visible / in-image (README: 0.97 0.95 0.94 0.94)
        visible = fuse_views(xyz, [view], build_extractor("rgb"), params).mask.sum()
        inside = fuse_views(xyz, [view], build_extractor("rgb"), no_depth).mask.sum()
        assert abs(visible / inside - [0.97, 0.95, 0.94, 0.94][i]) < 0.006, (i, visible / inside)
    # The same pipeline with inverted poses cannot reach a single-digit error.
    xyz_w, rgb_w, views_w = read_redwood(root, invert_poses=True)
    wrong = fuse_views(xyz_w, views_w, build_extractor("rgb"), params)
    wrong_error = np.abs(wrong.features.float().numpy() * 255 - rgb_w[wrong.mask]).mean()
    assert wrong_error >= 10, (wrong.mask.mean(), wrong_error)


@pytest.mark.realdata
def test_nuscenes_no_depth_visible_fractions(shared_data):
    root = shared_data / "nuscenes-sample"
    calib = json.loads((root / "calib.json").read_text())
    (lidar,) = root.glob("*LIDAR_TOP*.pcd.bin")
    xyz = np.fromfile(lidar, dtype=np.float32).reshape(-1, 5)[:, :3]
    assert xyz.shape[0] == 34_688
    expected = {"CAM_FRONT": 8.7, "CAM_FRONT_RIGHT": 8.8, "CAM_FRONT_LEFT": 10.6,
                "CAM_BACK": 13.8, "CAM_BACK_LEFT": 11.7, "CAM_BACK_RIGHT": 9.5}  # fmt: skip
    views = []
    for cam in expected:
        info = calib["images"][cam]
        color = np.asarray(Image.open(root / info["img_path"]).convert("RGB"))
        assert color.shape == (900, 1600, 3)
        pose = np.linalg.inv(np.asarray(info["lidar2cam"], dtype=np.float64))
        views.append(View(cam, color, None, np.asarray(info["cam2img"], dtype=np.float64), pose))
    params = FusionParams(cut_bound=5, visibility_threshold=None)
    for view in views:
        single = fuse_views(xyz, [view], build_extractor("rgb"), params)
        assert abs(100 * single.mask.mean() - expected[view.frame_id]) <= 0.5, (view.frame_id, single.mask.mean())
    result = fuse_views(xyz, views, build_extractor("rgb"), params)
    assert abs(100 * result.mask.mean() - 57.8) <= 0.5
    assert result.n_views_used == 6 and result.features.shape == (result.mask.sum(), 3)
