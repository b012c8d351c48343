"""Performance benchmarks: ``python jobs/benchmark.py fusion|all [--options]``.

Each case is a function in :data:`CASES` that takes the parsed arguments and returns a dict,
printed as one JSON line. Cases add their own options through :data:`OPTION_GROUPS`.

``fusion``: :func:`openscene_ray.fusion.fuse_views` against a naive per-view loop written from
the formulas in the style of the reference implementation (float64 projection of all points,
then a gather of all N points' features from the view's map and a masked add), on a synthetic
room with occluders and analytic depth maps. Both paths use the same zero-cost extractor (a
bank of random feature maps generated before timing) and must give the same mask and the same
fp16 features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from openscene_ray.fusion import FusionParams, FusionResult, fuse_views
from openscene_ray.scene import View

SCANNET_FOCAL, ROOM = 288.9353, np.array([6.0, 5.0, 3.0])
OCCLUDERS = [  # (lo, hi) boxes inside the room: a low block and a tall cabinet
    (np.array([2.5, 2.0, 0.0]), np.array([3.5, 3.0, 1.2])),
    (np.array([4.5, 0.5, 0.0]), np.array([5.0, 1.5, 2.2])),
]


def _box_faces(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The 6 faces of an axis-aligned box as (corner, edge1, edge2)."""
    faces = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        e1, e2 = np.zeros(3), np.zeros(3)
        e1[a], e2[b] = hi[a] - lo[a], hi[b] - lo[b]
        for side in (lo[axis], hi[axis]):
            corner = lo.copy()
            corner[axis] = side
            faces.append((corner, e1, e2))
    return faces


def _ray_box(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray, inside: bool) -> np.ndarray:
    """Ray parameter of the exit (``inside``) or the front entry of an axis-aligned box; inf if none."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - origin) / dirs, (hi - origin) / dirs
    near, far = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    if inside:
        return far
    return np.where((near <= far) & (near > 0), near, np.inf)


def room_scene(
    n_points: int, n_views: int, width: int, height: int, seed: int = 0
) -> tuple[np.ndarray, list[View]]:
    """Points on the surfaces of a room with two box occluders, and posed views with exact depth (mm)."""
    rng = np.random.default_rng(seed)
    faces = _box_faces(np.zeros(3), ROOM) + [f for lo, hi in OCCLUDERS for f in _box_faces(lo, hi)]
    areas = np.array([np.linalg.norm(np.cross(e1, e2)) for _, e1, e2 in faces])
    which = rng.choice(len(faces), size=n_points, p=areas / areas.sum())
    corners, e1s, e2s = (np.stack([f[i] for f in faces])[which] for i in range(3))
    st = rng.random((n_points, 2))
    xyz = (corners + st[:, :1] * e1s + st[:, 1:] * e2s).astype(np.float32)

    k = np.array([[SCANNET_FOCAL, 0, (width - 1) / 2], [0, SCANNET_FOCAL, (height - 1) / 2], [0, 0, 1]])
    uu, vv = np.meshgrid(np.arange(width), np.arange(height))
    rays_cam = np.stack([(uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1], np.ones_like(uu, float)], -1)
    views = []
    while len(views) < n_views:
        centre = rng.uniform([0.5, 0.5, 1.0], ROOM - [0.5, 0.5, 1.0])
        if any(np.all(centre > lo - 0.3) and np.all(centre < hi + 0.3) for lo, hi in OCCLUDERS):
            continue
        yaw, pitch = rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.3)
        forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
        pose[:3, 3] = centre
        dirs = rays_cam @ pose[:3, :3].T  # z-depth = ray parameter since the camera-frame z is 1
        t = _ray_box(centre, dirs, np.zeros(3), ROOM, inside=True)
        for lo, hi in OCCLUDERS:
            t = np.minimum(t, _ray_box(centre, dirs, lo, hi, inside=False))
        depth = (np.round(t * 1000) / 1000).astype(np.float32)
        color = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        views.append(View(str(len(views)), color, depth, k, pose))
    return xyz, views


class RandomMapBank:
    """Zero-cost extractor: view ``i`` gets the fixed random map ``bank[i % len(bank)]``.

    A batch of consecutive frame ids is returned as a slice of the bank (no copy).
    """

    name = "random-bank"
    text_model = "none"

    def __init__(self, n_maps: int, height: int, width: int, dim: int, seed: int, device: torch.device):
        generator = torch.Generator().manual_seed(seed)
        self.bank = torch.randn((n_maps, height, width, dim), generator=generator).to(device)
        self.feature_dim = dim
        self.device = device

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        ids = [int(v.frame_id) % len(self.bank) for v in views]
        if ids == list(range(ids[0], ids[0] + len(ids))) and ids[-1] < len(self.bank):
            return self.bank[ids[0] : ids[0] + len(ids)]
        return self.bank[torch.tensor(ids, device=self.device)]


def naive_fusion(xyz: np.ndarray, views: Sequence[View], extractor, params: FusionParams) -> FusionResult:
    """Per-view loop over all points from the formulas (float64, full-size temporaries)."""
    n = xyz.shape[0]
    coords = np.concatenate([xyz.astype(np.float64), np.ones((n, 1))], axis=1).T  # [4, N]
    sums = counts = None
    used = 0
    for view in views:
        h, w, k = view.height, view.width, view.intrinsics
        p = np.linalg.inv(view.cam_to_world) @ coords
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(p[0] * k[0, 0] / p[2] + k[0, 2])
            v = np.round(p[1] * k[1, 1] / p[2] + k[1, 2])
        cut = params.cut_bound
        inside = (p[2] > 0) & (u >= cut) & (u < w - cut) & (v >= cut) & (v < h - cut)
        ui, vi = np.where(inside, u, 0).astype(np.int64), np.where(inside, v, 0).astype(np.int64)
        mask = inside
        if view.depth is not None and params.visibility_threshold is not None and params.depth_test:
            d = view.depth[vi, ui].astype(np.float64)
            mask = inside & (d > 0) & (np.abs(d - p[2]) <= params.visibility_threshold * d)
        if not mask.any():
            continue
        feat = extractor.extract([view], h, w)[0]
        if sums is None:
            sums = torch.zeros(n, feat.shape[-1], dtype=torch.float32)
            counts = torch.zeros(n, dtype=torch.int32)
        gathered = feat[torch.from_numpy(vi), torch.from_numpy(ui)].float()  # [N, C]
        m = torch.from_numpy(mask)
        sums[m] += gathered[m]
        counts[m] += 1
        used += 1
    seen = counts > 0
    features = (sums[seen] / counts[seen].unsqueeze(1)).to(params.output_dtype)
    return FusionResult(features, seen.numpy(), counts.numpy().astype(np.uint16), used, 0, 0)


def add_fusion_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fusion")
    group.add_argument("--points", type=int, default=200_000)
    group.add_argument("--views", type=int, default=100)
    group.add_argument("--width", type=int, default=320)
    group.add_argument("--height", type=int, default=240)
    group.add_argument("--dim", type=int, default=768)
    group.add_argument("--views-per-batch", type=int, default=8)
    group.add_argument("--skip-naive", action="store_true", help="time only fuse_views")


def bench_fusion(args: argparse.Namespace) -> dict:
    """fuse_views vs the naive loop on a synthetic room (ScanNet settings: thr 0.25, cut 10)."""
    device = torch.device(args.device)
    xyz, views = room_scene(args.points, args.views, args.width, args.height, args.seed)
    extractor = RandomMapBank(args.views_per_batch, args.height, args.width, args.dim, args.seed, device)
    params = FusionParams(cut_bound=10, visibility_threshold=0.25, views_per_batch=args.views_per_batch)
    fuse_views(xyz[:1000], views[:2], extractor, params, device=device)  # warm-up

    def timed(fn):
        """Result, wall seconds, process CPU seconds (robust to other load with --threads 1)."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - start, time.process_time() - cpu_start

    fast, fast_s, fast_cpu = timed(lambda: fuse_views(xyz, views, extractor, params, device=device))
    pv = args.points * args.views
    out = {
        "case": "fusion",
        "points": args.points,
        "views": args.views,
        "image": f"{args.width}x{args.height}",
        "dim": args.dim,
        "views_per_batch": args.views_per_batch,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "seen_fraction": round(float(fast.mask.mean()), 4),
        "visible_pairs": int(fast.n_views.astype(np.int64).sum()),
        "fast_s": round(fast_s, 3),
        "fast_cpu_s": round(fast_cpu, 3),
        "fast_point_views_per_s": round(pv / fast_s),
    }
    if not args.skip_naive:
        if device.type != "cpu":
            extractor.bank = extractor.bank.cpu()
        naive, naive_s, naive_cpu = timed(lambda: naive_fusion(xyz, views, extractor, params))
        same_mask = bool(np.array_equal(fast.mask, naive.mask)) and bool(np.array_equal(fast.n_views, naive.n_views))
        diff = (fast.features.float() - naive.features.float()).abs() if same_mask else None
        out.update(
            naive_s=round(naive_s, 3),
            naive_cpu_s=round(naive_cpu, 3),
            naive_point_views_per_s=round(pv / naive_s),
            speedup=round(naive_s / fast_s, 2),
            speedup_cpu_time=round(naive_cpu / fast_cpu, 2),
            mask_identical=same_mask,
            max_abs_diff=float(diff.max()) if diff is not None else None,
            features_equal_fp16=bool(
                diff is not None and torch.all(diff <= 1e-3 * naive.features.float().abs() + 1e-4).item()
            ),
        )
    return out


CASES: dict[str, Callable[[argparse.Namespace], dict]] = {"fusion": bench_fusion}
OPTION_GROUPS: list[Callable[[argparse.ArgumentParser], None]] = [add_fusion_arguments]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=[*CASES, "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    for add in OPTION_GROUPS:
        add(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in CASES if args.case == "all" else [args.case]:
        print(json.dumps(CASES[name](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
