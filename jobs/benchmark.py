"""Performance benchmarks: ``python jobs/benchmark.py fusion|all [--options]``.

Each case is a function in :data:`CASES` that takes the parsed arguments and returns a dict,
printed as one JSON line. Cases add their own options through :data:`OPTION_GROUPS`.

``fusion``: :func:`openscene_ray.fusion.fuse_views` against a naive per-view loop written from
the formulas in the style of the reference implementation (float64 projection of all points,
then a gather of all N points' features from the view's map and a masked add), on a synthetic
room with occluders and analytic depth maps. Both paths use the same zero-cost extractor (a
bank of random feature maps generated before timing) and must give the same mask and the same
fp16 features.

``pipeline``: the fusion job (:func:`openscene_ray.fusion.job.run_fuse` on a local Ray)
against a plain in-process loop of ``load_scene_for_fusion`` + ``fuse_scene`` over the same
synthetic scenes with the same extractor: the time ratio (cold and steady, per actor-pool size),
scenes per minute, shard bytes per fused point and the peak memory of one actor.
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
from openscene_ray.kernel.scene import View

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


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distill")
    group.add_argument("--distill-scenes", type=int, default=4, help="synthetic train scenes")
    group.add_argument("--distill-points", type=int, default=20_000, help="points per scene")
    group.add_argument("--distill-voxel", type=float, default=0.05)
    group.add_argument("--distill-dim", type=int, default=768, help="fused feature dim = network head")
    group.add_argument("--distill-epochs", type=int, default=3, help="the first epoch is warm-up, not timed")
    group.add_argument("--distill-workers", default="1,2", help="comma-separated worker counts")


def bench_distill(args: argparse.Namespace) -> dict:
    """MinkUNet18A distillation on Ray Train: voxels/s and peak RSS per worker, per worker count.

    Label-oracle features are fused in-process onto a synthetic world; each worker count trains
    ``--distill-epochs`` epochs (1 scene per step, no validation). A worker's throughput is the
    voxels of the timed epochs over its time in the batch loop (loading and voxelising overlap
    in the collate thread; checkpoints are outside). Scaling efficiency is
    throughput(n workers) / (n * throughput(1 worker)).
    """
    import shutil
    import tempfile

    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.distill.job import DistillConfig, run_distill
    from openscene_ray.extractors import build_extractor
    from openscene_ray.fusion.job import (
        ExtractorConfig,
        FusionSettings,
        fuse_scene,
        load_scene_for_fusion,
    )
    from openscene_ray.kernel.config import load_config
    from openscene_ray.kernel.ray_runtime import init_ray
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    if args.distill_epochs < 2:
        raise ValueError("--distill-epochs must be at least 2 (the first epoch is warm-up)")
    root = tempfile.mkdtemp(prefix="bench-distill-")
    try:
        world = SynthConfig(seed=args.seed, num_scenes=args.distill_scenes, views_per_scene=10,
                            points_per_scene=args.distill_points, val_fraction=0.0)  # fmt: skip
        write_world(world, os.path.join(root, "raw"))
        layout = build_layout("scannet", overrides=["visibility_threshold=0.05"])
        records = ingest(layout, os.path.join(root, "raw"), os.path.join(root, "ingested")).records
        oracle = {"label_set": "scannet20", "text_encoder": "synthetic", "text_options": {"dim": args.distill_dim}}
        extractor = build_extractor("label-oracle", **oracle)
        for record in records:
            scene = load_scene_for_fusion(record)
            fuse_scene(record, scene.xyz, scene.views, extractor, ExtractorConfig(options=oracle),
                       FusionSettings(), os.path.join(root, "fused"), "bench")  # fmt: skip
        init_ray(None, num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False)
        out: dict = {"case": "distill", "scenes": len(records), "points": args.distill_points,
                     "voxel_size": args.distill_voxel, "dim": args.distill_dim, "device": args.device,
                     "cpu_count": os.cpu_count(), "runs": {}}  # fmt: skip
        for workers in (int(w) for w in args.distill_workers.split(",")):
            config = load_config(DistillConfig, base={
                "manifest": os.path.join(root, "ingested", "manifest.parquet"), "features": os.path.join(root, "fused"),
                "storage_path": os.path.join(root, "runs"), "name": f"workers-{workers}",
                "model": {"out_channels": args.distill_dim}, "voxel_size": args.distill_voxel,
                "epochs": args.distill_epochs, "batch_size": 1, "validate_every": 0, "workers": workers,
                "use_gpu": args.device.startswith("cuda"), "cpus_per_worker": 1, "keep_checkpoints": 1,
                "max_failures": 0, "seed": args.seed,
            })  # fmt: skip
            timed = run_distill(config).history[1:]
            voxels_per_s = [float(np.mean([h["worker_voxels_per_s"][r] for h in timed])) for r in range(workers)]
            run = {
                "worker_voxels_per_s": [round(v) for v in voxels_per_s],
                "voxels_per_s": round(sum(voxels_per_s)),
                "voxels_per_step": round(sum(h["voxels"] for h in timed) / sum(h["steps"] for h in timed)),
                "worker_peak_rss_mb": [round(max(h["worker_peak_rss_mb"][r] for h in timed)) for r in range(workers)],
            }
            if "gpu_peak_mb" in timed[-1]:
                run["gpu_peak_mb_rank0"] = round(max(h["gpu_peak_mb"] for h in timed))
            out["runs"][str(workers)] = run
        if "1" in out["runs"]:
            single = out["runs"]["1"]["voxels_per_s"]
            runs = out["runs"].items()
            out["scaling_efficiency"] = {w: round(r["voxels_per_s"] / (int(w) * single), 3) for w, r in runs}
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- pipeline: the Ray job vs a plain loop


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline")
    if "--scenes" not in parser._option_string_actions:  # shared with any other case that has it
        group.add_argument("--scenes", type=int, default=20, help="synthetic scenes (pipeline)")
    group.add_argument("--pipeline-views", type=int, default=30, help="views per synthetic scene (pipeline)")
    group.add_argument("--pipeline-points", type=int, default=50_000, help="points per synthetic scene (pipeline)")
    group.add_argument("--pipeline-dim", type=int, default=32, help="label-oracle feature dim (pipeline)")
    group.add_argument("--pipeline-actors", default="1,2", help="actor-pool sizes to time, e.g. 1,2 (pipeline)")
    group.add_argument("--pipeline-loader-cpus", type=float, default=0.5, help="CPUs per scene-loading task (pipeline)")
    group.add_argument("--pipeline-ray-cpus", type=int, default=None, help="Ray's CPUs (default: os.cpu_count())")
    group.add_argument("--pipeline-repeats", type=int, default=1, help="baseline + steady Ray runs, interleaved")
    group.add_argument("--pipeline-world", default=None, help="keep the synthetic world here; reused when it matches")
    group.add_argument("--pipeline-uv-workers", action="store_true",
                       help="keep Ray's `uv run` worker hook on (default: RAY_ENABLE_UV_RUN_RUNTIME_ENV=0)")


class _ProcessMonitor:
    """Watches this process's descendants (a local Ray: raylet, workers, actors) from /proc while
    a job runs. The process tree is rescanned every ``rescan`` seconds and the known processes are
    sampled every ``interval`` seconds, to keep the monitor's own cost small on 2 cores.

    Per pid: the process title, the kernel's peak-RSS mark VmHWM (exact, not sampled), the largest
    VmRSS and RssAnon sampled (RSS includes the object-store pages a process has mapped, RssAnon
    is its private heap), and the CPU time it used while watched (utime + stime; a process that
    exits loses at most its last ``interval``). Processes already running when the watch began
    with a title the summary asks for (the previous job's actors, shutting down) are left out.
    """

    def __init__(self, interval: float = 0.1, rescan: float = 0.5):
        import threading

        self.interval, self.rescan = interval, rescan
        self.procs: dict[int, dict] = {}
        self.monitor_cpu_s = 0.0
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _descendants(root: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [root]
        while todo:
            for child in children.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out

    def _read(self, pid: int) -> tuple[str, dict[str, int], float] | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError):
            return None
        kb = {k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM", "RssAnon") if k in status}
        return title, kb, (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def _sample(self, pids, first: bool = False) -> None:
        for pid in pids:
            read = self._read(pid)
            if read is None:
                continue
            title, kb, cpu = read
            proc = self.procs.get(pid)
            if proc is None:
                proc = self.procs[pid] = {
                    "titles": set(), "start_title": title if first else "", "cpu0": cpu if first else 0.0,
                    "VmRSS": 0, "RssAnon": 0, "VmHWM": 0,
                }  # fmt: skip
            proc["cpu"] = cpu
            if title:  # Ray retitles a worker when it becomes an actor; an exiting process has none
                proc["titles"].add(title)
            for key, value in kb.items():
                proc[key] = max(proc[key], value)

    def _run(self) -> None:
        cpu_start = time.thread_time()
        pids, scanned = [], 0.0
        while not self._stop.wait(self.interval):
            if time.monotonic() - scanned >= self.rescan:
                pids, scanned = self._descendants(os.getpid()), time.monotonic()
            self._sample(pids)
        self._sample(self._descendants(os.getpid()))
        self.monitor_cpu_s = time.thread_time() - cpu_start

    def __enter__(self):
        self._sample(self._descendants(os.getpid()), first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self) -> float:
        """CPU time the descendants used while watched."""
        return sum(p.get("cpu", 0.0) - p["cpu0"] for p in self.procs.values())

    def cpu_by_title(self, top: int = 8) -> dict[str, float]:
        """CPU seconds used while watched, summed per process title (the last one a process had)."""
        totals: dict[str, float] = {}
        for proc in self.procs.values():
            ray_titles = sorted(t for t in proc["titles"] if t.startswith("ray::") and not t.endswith("IDLE"))
            title = ",".join(ray_titles) or os.path.basename(min(proc["titles"], key=len, default="?").split(" ")[0])
            totals[title] = totals.get(title, 0.0) + proc.get("cpu", 0.0) - proc["cpu0"]
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
        return {title: round(cpu, 2) for title, cpu in ranked}

    def peak(self, match: Callable[[str], bool]) -> dict:
        """Peak memory (MiB) of the largest process of this job whose title ``match`` accepts."""
        procs = [p for p in self.procs.values() if any(map(match, p["titles"])) and not match(p["start_title"])]
        if not procs:
            return {"processes": 0}
        top = max(procs, key=lambda p: p["VmHWM"])
        return {
            "processes": len(procs),
            "title": next(t for t in sorted(top["titles"]) if match(t)),
            "peak_rss_mib": round(top["VmHWM"] / 1024, 1),
            "sampled_rss_mib": round(top["VmRSS"] / 1024, 1),
            "sampled_anon_mib": round(top["RssAnon"] / 1024, 1),
        }


def _cpus_per_actor(ray_cpus: int, actors: int) -> float:
    """1 CPU per actor where that leaves one CPU free, else an equal share of all but one.

    The pool's actors hold their CPUs for the whole job. Ray Data's ListFiles and read tasks
    need 1 CPU each (then the loaders theirs), so a pool holding more than ``ray_cpus - 1``
    waits forever: 2 actors x 0.75 CPU with 0.5 CPU loaders on 2 CPUs hung with ListFiles
    pending. Below 1 CPU Ray still gives an actor OMP_NUM_THREADS=1.
    """
    return min(1.0, max(ray_cpus - 1, 1) / actors) if ray_cpus > 1 else 0.5 / actors


def _pipeline_world(args: argparse.Namespace) -> tuple[str, list, float, bool]:
    """``(manifest, records, seconds, reused)``: the synthetic world, ingested (outside any timing)."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.kernel.manifest import read_manifest
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    config = SynthConfig(
        seed=args.seed,
        num_scenes=args.scenes,
        views_per_scene=args.pipeline_views,
        points_per_scene=args.pipeline_points,
    )
    stamp = os.path.join(args.pipeline_world, "world.json")
    manifest = os.path.join(args.pipeline_world, "ingested", "manifest.parquet")
    if os.path.exists(stamp) and os.path.exists(manifest):
        with open(stamp) as f:
            if json.load(f) == config.model_dump(mode="json"):
                return manifest, read_manifest(manifest), 0.0, True
    start = time.perf_counter()
    raw = os.path.join(args.pipeline_world, "raw")
    write_world(config, raw)
    # Exact synthetic depth: the tests' tight visibility threshold (see tests/conftest.py).
    result = ingest(build_layout("scannet", overrides=["visibility_threshold=0.05"]), raw, os.path.dirname(manifest))
    if result.errors:
        raise RuntimeError(f"ingest failed: {result.errors[:3]}")
    with open(stamp, "w") as f:
        json.dump(config.model_dump(mode="json"), f)
    return manifest, read_manifest(manifest), time.perf_counter() - start, False


def _pipeline_baseline(records, extractor_config, settings, output: str) -> float:
    """The plain in-process loop over the fusion core: load + fuse + write every scene."""
    from openscene_ray.extractors import build_extractor
    from openscene_ray.fusion.job import fuse_scene, load_scene_for_fusion

    start = time.perf_counter()
    extractor = build_extractor(extractor_config.name, **extractor_config.options)
    for record in records:
        scene = load_scene_for_fusion(record)
        fuse_scene(record, scene.xyz, scene.views, extractor, extractor_config, settings, output, "baseline")
    return time.perf_counter() - start


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux ``clear_refs`` 5); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def bench_pipeline(args: argparse.Namespace) -> dict:
    """The fusion job on Ray vs a plain in-process loop over the same scenes (same extractor).

    The world is generated and ingested first (untimed; ``--pipeline-world`` keeps it for
    reruns). The baseline loads and fuses every scene in this process (after an untimed warm-up
    scene). Ray runs ``run_fuse`` on a local Ray with ``--pipeline-ray-cpus`` CPUs: first cold (the
    ``ray.init`` and the first job, timed apart), then steady (Ray up) once per actor-pool size,
    each job into a fresh output. Repeats interleave baseline and Ray runs; medians are reported.

    Peak memory of one actor: the kernel's peak-RSS mark (VmHWM) of the largest actor process,
    read from /proc by :class:`_ProcessMonitor` in this driver (a local Ray's processes are its
    descendants), plus the largest RSS and private (RssAnon) memory it sampled. The monitor also
    sums the CPU time of every Ray process during a steady job; with the driver's own CPU time
    that is ``cpu_s``, against the baseline's process CPU time: a ratio that other load on the
    machine skews far less than wall time.
    """
    import shutil
    import statistics
    import tempfile

    if not args.pipeline_uv_workers:
        # Under `uv run` Ray starts each worker through `uv run` in a copy of the working
        # directory, which builds a fresh copy of the project's venv per session (see the report).
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import pyarrow.parquet as pq
    import ray
    from ray._private import ray_constants
    from ray._private.runtime_env.uv_runtime_env_hook import _get_uv_run_cmdline

    from openscene_ray.fusion.job import (
        ExtractorConfig,
        FuseConfig,
        FusionSettings,
        run_fuse,
    )
    from openscene_ray.kernel.features import read_features, shard_uri

    if not args.pipeline_uv_workers:
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False  # in case Ray was imported before
    uv_workers = bool(ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV and _get_uv_run_cmdline())
    if ray.is_initialized():  # another case's Ray: this case times its own cold start
        ray.shutdown()

    load_before = os.getloadavg()
    scratch = tempfile.mkdtemp(prefix="osr-bench-pipeline-")
    args.pipeline_world = args.pipeline_world or os.path.join(scratch, "world")
    ray_cpus = args.pipeline_ray_cpus or os.cpu_count() or 1
    actor_counts = [int(n) for n in str(args.pipeline_actors).split(",") if n.strip()]
    text = {"dim": args.pipeline_dim, "seed": 0}
    extractor = ExtractorConfig(
        name="label-oracle", options={"label_set": "scannet20", "text_encoder": "synthetic", "text_options": text}
    )
    settings = FusionSettings(views_per_batch=args.views_per_batch)

    def job_config(output: str, actors: int) -> FuseConfig:
        return FuseConfig.model_validate({
            "manifest": manifest, "output": output, "overwrite": True,
            "extractor": extractor.model_dump(), "fusion": settings.model_dump(),
            "resources": {"min_actors": actors, "max_actors": actors,
                          "cpus_per_actor": _cpus_per_actor(ray_cpus, actors),
                          "loader_cpus": args.pipeline_loader_cpus},
            "data": {"progress_bars": False},
        })  # fmt: skip

    baseline_s: list[float] = []
    steady_s: dict[int, list[float]] = {n: [] for n in actor_counts}
    baseline_cpu: list[float] = []
    steady_cpu: dict[int, list[float]] = {n: [] for n in actor_counts}
    cpu_by_title: dict[int, dict[str, float]] = {}
    actor_mem: dict[int, dict] = {}
    loader_mem: dict[int, dict] = {}
    cold: dict = {}
    baseline_peak = None
    try:
        manifest, records, world_s, reused = _pipeline_world(args)
        _pipeline_baseline(records[:1], extractor, settings, os.path.join(scratch, "warm"))  # untimed warm-up
        for repeat in range(max(1, args.pipeline_repeats)):
            reset = _reset_peak_rss()
            cpu_start = time.process_time()
            baseline_s.append(_pipeline_baseline(records, extractor, settings, os.path.join(scratch, f"base{repeat}")))
            baseline_cpu.append(time.process_time() - cpu_start)
            if reset and baseline_peak is None:
                baseline_peak = round(_peak_rss_mib(), 1)
            if not cold:
                start = time.perf_counter()
                ray.init(address="local", num_cpus=ray_cpus, num_gpus=0, include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
                cold["ray_init_s"] = time.perf_counter() - start
                start = time.perf_counter()
                run_fuse(job_config(os.path.join(scratch, "cold"), actor_counts[0]))
                cold["first_job_s"] = time.perf_counter() - start
            for n in actor_counts:
                with _ProcessMonitor() as monitor:
                    start, cpu_start = time.perf_counter(), time.process_time()
                    summary = run_fuse(job_config(os.path.join(scratch, f"ray{n}-{repeat}"), n))
                    steady_s[n].append(time.perf_counter() - start)
                    driver_cpu = time.process_time() - cpu_start
                if not summary.ok or len(summary.done) != len(records):
                    raise RuntimeError(f"the Ray job did not fuse every scene: {summary.as_dict()}")
                # All CPU the job used: Ray's processes plus this driver (less the monitor thread).
                steady_cpu[n].append(monitor.cpu_seconds() + driver_cpu - monitor.monitor_cpu_s)
                cpu_by_title.setdefault(n, {"driver": round(driver_cpu, 2), **monitor.cpu_by_title()})
                actor_mem.setdefault(n, monitor.peak(lambda t: "FuseActor" in t))
                loader_mem.setdefault(n, monitor.peak(lambda t: "load_scene_row" in t and "FuseActor" not in t))

        # Same shards both ways, for every scene; then what was written per fused point.
        ray_out, base_out = os.path.join(scratch, f"ray{actor_counts[0]}-0"), os.path.join(scratch, "base0")
        identical = all(
            np.array_equal(read_features(shard_uri(ray_out, r.scene_id)).features,
                           read_features(shard_uri(base_out, r.scene_id)).features)
            for r in records
        )  # fmt: skip
        seen = int(sum(pq.read_table(os.path.join(ray_out, "index"), columns=["n_seen"]).column(0).to_pylist()))
        shard_bytes = sum(os.path.getsize(shard_uri(ray_out, r.scene_id)) for r in records)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    base = statistics.median(baseline_s)
    out = {
        "case": "pipeline",
        "scenes": len(records),
        "views_per_scene": args.pipeline_views,
        "points_per_scene": args.pipeline_points,
        "extractor": f"label-oracle dim {args.pipeline_dim}",
        "views_per_batch": args.views_per_batch,
        "cpu_count": os.cpu_count(),
        "ray_cpus": ray_cpus,
        "loader_cpus": args.pipeline_loader_cpus,
        "baseline_torch_threads": torch.get_num_threads(),
        "uv_run_workers": uv_workers,
        "world_s": round(world_s, 1),
        "world_reused": reused,
        "repeats": len(baseline_s),
        "baseline_s": round(base, 2),
        "baseline_runs_s": [round(x, 2) for x in baseline_s],
        "baseline_scenes_per_min": round(60 * len(records) / base, 1),
        "baseline_cpu_s": round(statistics.median(baseline_cpu), 2),
        "baseline_peak_rss_mib": baseline_peak,
        "ray_init_s": round(cold["ray_init_s"], 2),
        "cold_first_job_s": round(cold["first_job_s"], 2),
        "cold_actors": actor_counts[0],
        "ratio_cold": round((cold["ray_init_s"] + cold["first_job_s"]) / base, 3),
        "steady": {},
        "outputs_identical": bool(identical),
        "shard_bytes": shard_bytes,
        "seen_points": seen,
        "bytes_per_fused_point": round(shard_bytes / max(seen, 1), 2),
        # uncompressed: fp16 features + int32 point index + uint16 view count
        "raw_bytes_per_fused_point": 2 * args.pipeline_dim + 4 + 2,
    }
    for n in actor_counts:
        seconds = statistics.median(steady_s[n])
        out["steady"][str(n)] = {
            "cpus_per_actor": round(_cpus_per_actor(ray_cpus, n), 3),
            "seconds": round(seconds, 2),
            "runs_s": [round(x, 2) for x in steady_s[n]],
            "ratio": round(seconds / base, 3),
            "overhead_s": round(seconds - base, 2),
            "scenes_per_min": round(60 * len(records) / seconds, 1),
            "cpu_s": round(statistics.median(steady_cpu[n]), 2),
            "cpu_ratio": round(statistics.median(steady_cpu[n]) / statistics.median(baseline_cpu), 3),
            "cpu_s_by_process": cpu_by_title[n],
            "loader_fused_into_actor": "load_scene_row" in actor_mem[n].get("title", ""),
            "actor_memory": actor_mem[n],
            "loader_memory": loader_mem[n],
        }
    out["ratio"] = min(v["ratio"] for v in out["steady"].values())
    out["load_avg_before"] = [round(x, 2) for x in load_before]
    out["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


CASES: dict[str, Callable[[argparse.Namespace], dict]] = {
    "fusion": bench_fusion,
    "distill": bench_distill,
    "pipeline": bench_pipeline,
}
OPTION_GROUPS: list[Callable[[argparse.ArgumentParser], None]] = [
    add_fusion_arguments,
    add_distill_arguments,
    add_pipeline_arguments,
]


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
