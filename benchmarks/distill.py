"""``distill``: MinkUNet18A distillation on Ray Train: voxels/s and peak RSS per worker, per worker count.

Label-oracle features are fused in-process onto a synthetic world; each worker count trains
``--distill-epochs`` epochs (1 scene per step, no validation). A worker's throughput is the
voxels of the timed epochs over its time in the batch loop (loading and voxelising overlap in
the collate thread; checkpoints are outside). Scaling efficiency is
throughput(n workers) / (n * throughput(1 worker)). The Train workers report their own peak
RSS; the harness samples every Ray process of the run as well (``ray_processes``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import numpy as np

from benchmarks.harness import ProcessSampler

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distill")
    group.add_argument("--distill-scenes", type=int, default=4, help="synthetic train scenes")
    group.add_argument("--distill-points", type=int, default=20_000, help="points per scene")
    group.add_argument("--distill-voxel", type=float, default=0.05)
    group.add_argument("--distill-dim", type=int, default=768, help="fused feature dim = network head")
    group.add_argument("--distill-epochs", type=int, default=3, help="the first epoch is warm-up, not timed")
    group.add_argument("--distill-workers", default="1,2", help="comma-separated worker counts")


def _fused_world(args: argparse.Namespace, root: str) -> int:
    """Write, ingest and fuse (label oracle, in this process) the synthetic train scenes; their count."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.extractors import build_extractor
    from openscene_ray.fusion.config import ExtractorConfig, FusionSettings
    from openscene_ray.fusion.scene import fuse_scene
    from openscene_ray.kernel.manifest import load_scene
    from openscene_ray.synth import SynthConfig, write_world

    world = SynthConfig(seed=args.seed, num_scenes=args.distill_scenes, views_per_scene=10,
                        points_per_scene=args.distill_points, val_fraction=0.0)  # fmt: skip
    write_world(world, os.path.join(root, "raw"))
    layout = build_layout("scannet", overrides=["visibility_threshold=0.05"])
    records = ingest(layout, os.path.join(root, "raw"), os.path.join(root, "ingested")).records
    oracle = {"text": {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": args.distill_dim}}}
    extractor = build_extractor("label-oracle", **oracle)
    for record in records:
        scene = load_scene(record)
        fuse_scene(record, scene.xyz, scene.views, extractor, ExtractorConfig(options=oracle),
                   FusionSettings(), os.path.join(root, "fused"), "bench")  # fmt: skip
    return len(records)


def _train(args: argparse.Namespace, root: str, workers: int) -> dict:
    """One Train run with ``workers`` workers: throughput and memory of the timed epochs."""
    from openscene_ray.distill.config import DistillConfig
    from openscene_ray.distill.job import run_distill
    from openscene_ray.kernel.config import load_config

    config = load_config(DistillConfig, base={
        "manifest": os.path.join(root, "ingested", "manifest.parquet"), "fused": os.path.join(root, "fused"),
        "storage_path": os.path.join(root, "runs"), "name": f"workers-{workers}",
        "model": {"out_channels": args.distill_dim}, "voxel_size": args.distill_voxel,
        "epochs": args.distill_epochs, "batch_size": 1, "validate_every": 0, "workers": workers,
        "use_gpu": args.device.startswith("cuda"), "cpus_per_worker": 1, "keep_checkpoints": 1,
        "max_failures": 0, "seed": args.seed,
    })  # fmt: skip
    with ProcessSampler() as sampler:
        timed = run_distill(config).history[1:]
    voxels_per_s = [float(np.mean([h["worker_voxels_per_s"][r] for h in timed])) for r in range(workers)]
    out = {
        "worker_voxels_per_s": [round(v) for v in voxels_per_s],
        "voxels_per_s": round(sum(voxels_per_s)),
        "voxels_per_step": round(sum(h["voxels"] for h in timed) / sum(h["steps"] for h in timed)),
        "worker_peak_rss_mb": [round(max(h["worker_peak_rss_mb"][r] for h in timed)) for r in range(workers)],
        "ray_processes": {"cpu_s_by_process": sampler.cpu_by_title(), "largest": sampler.peak(lambda t: True)},
    }
    if "gpu_peak_mb" in timed[-1]:
        out["gpu_peak_mb_rank0"] = round(max(h["gpu_peak_mb"] for h in timed))
    return out


def run(args: argparse.Namespace) -> dict:
    """Throughput and memory of distillation for each ``--distill-workers`` count."""
    from openscene_ray.kernel.ray_runtime import init_ray

    if args.distill_epochs < 2:
        raise ValueError("--distill-epochs must be at least 2 (the first epoch is warm-up)")
    root = tempfile.mkdtemp(prefix="bench-distill-")
    try:
        scenes = _fused_world(args, root)
        init_ray(None, num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False)
        counts = [w.strip() for w in args.distill_workers.split(",") if w.strip()]
        runs = {w: _train(args, root, int(w)) for w in counts}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {"scenes": scenes, "points": args.distill_points, "voxel_size": args.distill_voxel,
           "dim": args.distill_dim, "device": args.device, "cpu_count": os.cpu_count(), "runs": runs}  # fmt: skip
    if "1" in runs:
        single = runs["1"]["voxels_per_s"]
        out["scaling_efficiency"] = {w: round(r["voxels_per_s"] / (int(w) * single), 3) for w, r in runs.items()}
    return out
