"""``pipeline``: the fusion job on a local Ray against a plain in-process loop over the same scenes.

The synthetic world is generated and ingested first (untimed; ``--pipeline-world`` keeps it for
reruns). The baseline loads and fuses every scene in this process (after an untimed warm-up
scene) with the same label-oracle extractor. Ray runs ``run_fuse`` on a local Ray with
``--pipeline-ray-cpus`` CPUs: first cold (``ray.init`` and the first job, timed apart), then
steady (Ray up) once per actor-pool size, each job into a fresh output. Repeats interleave
baseline and Ray runs; medians are reported.

Peak memory of one actor: the kernel's peak-RSS mark of the largest actor process, plus the
largest RSS and private (RssAnon) memory sampled (:class:`benchmarks.harness.ProcessSampler`;
a local Ray's processes are this driver's descendants). The sampler also sums the CPU time of
every Ray process during a steady job; with the driver's own CPU time that is ``cpu_s``, against
the baseline's process CPU time: a ratio that other load on the machine skews far less than
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from benchmarks.harness import ProcessSampler, peak_rss_mib, reset_peak_rss

__all__ = ["add_arguments", "cpus_per_actor", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline")
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
                       help="keep Ray's `uv run` worker hook on (default: RAY_ENABLE_UV_RUN_RUNTIME_ENV=0)")  # fmt: skip


def cpus_per_actor(ray_cpus: int, actors: int) -> float:
    """1 CPU per actor where that leaves one CPU free, else an equal share of all but one.

    The pool's actors hold their CPUs for the whole job. Ray Data's ListFiles and read tasks
    need 1 CPU each (then the loaders theirs), so a pool holding more than ``ray_cpus - 1``
    waits forever: 2 actors x 0.75 CPU with 0.5 CPU loaders on 2 CPUs hung with ListFiles
    pending. Below 1 CPU Ray still gives an actor OMP_NUM_THREADS=1.
    """
    return min(1.0, max(ray_cpus - 1, 1) / actors) if ray_cpus > 1 else 0.5 / actors


def under_uv_run() -> bool:
    """Whether an ancestor of this process is ``uv run`` (Ray then restarts workers through it)."""
    import psutil

    for parent in psutil.Process().parents():
        try:
            words = [os.path.basename(w) for w in parent.cmdline()[:2]]
        except psutil.Error:
            continue
        if words == ["uv", "run"]:
            return True
    return False


def _world(args: argparse.Namespace, root: str) -> tuple[str, list, float, bool]:
    """``(manifest, records, seconds, reused)``: the synthetic world, ingested (outside any timing)."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.kernel.manifest import read_manifest
    from openscene_ray.synth import SynthConfig, write_world

    config = SynthConfig(seed=args.seed, num_scenes=args.scenes, views_per_scene=args.pipeline_views,
                         points_per_scene=args.pipeline_points)  # fmt: skip
    stamp, manifest = os.path.join(root, "world.json"), os.path.join(root, "ingested", "manifest.parquet")
    if os.path.exists(stamp) and os.path.exists(manifest):
        with open(stamp) as f:
            if json.load(f) == config.model_dump(mode="json"):
                return manifest, read_manifest(manifest), 0.0, True
    start = time.perf_counter()
    write_world(config, os.path.join(root, "raw"))
    # Exact synthetic depth: the tests' tight visibility threshold (see tests/conftest.py).
    layout = build_layout("scannet", overrides=["visibility_threshold=0.05"])
    result = ingest(layout, os.path.join(root, "raw"), os.path.dirname(manifest))
    if result.errors:
        raise RuntimeError(f"ingest failed: {result.errors[:3]}")
    with open(stamp, "w") as f:
        json.dump(config.model_dump(mode="json"), f)
    return manifest, read_manifest(manifest), round(time.perf_counter() - start, 1), False


def _baseline(records, extractor_config, settings, fused: str) -> float:
    """The plain in-process loop over the fusion core: load + fuse + write every scene."""
    from openscene_ray.extractors import build_extractor
    from openscene_ray.fusion.scene import fuse_scene
    from openscene_ray.kernel.manifest import load_scene

    start = time.perf_counter()
    extractor = build_extractor(extractor_config.name, **extractor_config.options)
    for record in records:
        scene = load_scene(record)
        fuse_scene(record, scene.xyz, scene.views, extractor, extractor_config, settings, fused, "baseline")
    return time.perf_counter() - start


class _Runs:
    """What the baseline and the Ray jobs measured, per actor-pool size."""

    def __init__(self, actor_counts: list[int]):
        self.baseline_s: list[float] = []
        self.baseline_cpu: list[float] = []
        self.baseline_peak: float | None = None
        self.steady_s: dict[int, list[float]] = {n: [] for n in actor_counts}
        self.steady_cpu: dict[int, list[float]] = {n: [] for n in actor_counts}
        self.cpu_by_title: dict[int, dict[str, float]] = {}
        self.actor_memory: dict[int, dict] = {}
        self.loader_memory: dict[int, dict] = {}
        self.cold: dict[str, float] = {}


def _steady_job(runs: _Runs, n: int, run_job, n_scenes: int) -> None:
    """One steady Ray job with ``n`` actors, its CPU time summed over every Ray process."""
    with ProcessSampler() as sampler:
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = run_job()
        runs.steady_s[n].append(time.perf_counter() - start)
        driver_cpu = time.process_time() - cpu_start
    if not summary.ok or len(summary.done) != n_scenes:
        raise RuntimeError(f"the Ray job did not fuse every scene: {summary.as_dict()}")
    # All CPU the job used: Ray's processes plus this driver (less the sampler thread).
    runs.steady_cpu[n].append(sampler.cpu_seconds() + driver_cpu - sampler.sampler_cpu_s)
    runs.cpu_by_title.setdefault(n, {"driver": round(driver_cpu, 2), **sampler.cpu_by_title()})
    runs.actor_memory.setdefault(n, sampler.peak(lambda t: "FuseActor" in t))
    runs.loader_memory.setdefault(n, sampler.peak(lambda t: "load_scene_row" in t and "FuseActor" not in t))


def _configs(args: argparse.Namespace, ray_cpus: int):
    """``(extractor config, fusion settings, job config factory)`` for the label-oracle jobs."""
    from openscene_ray.fusion.config import ExtractorConfig, FuseConfig, FusionSettings

    text = {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": args.pipeline_dim, "seed": 0}}
    extractor = ExtractorConfig(name="label-oracle", options={"text": text})
    settings = FusionSettings(views_per_batch=args.views_per_batch)

    def job_config(manifest: str, fused: str, actors: int) -> FuseConfig:
        return FuseConfig.model_validate({
            "manifest": manifest, "fused": fused, "overwrite": True,
            "extractor": extractor.model_dump(), "fusion": settings.model_dump(),
            "resources": {"min_actors": actors, "max_actors": actors,
                          "cpus_per_actor": cpus_per_actor(ray_cpus, actors),
                          "loader_cpus": args.pipeline_loader_cpus},
            "data": {"progress_bars": False},
        })  # fmt: skip

    return extractor, settings, job_config


def _measure(args: argparse.Namespace, scratch: str, ray_cpus: int, actor_counts: list[int]):
    """Generate the world, then interleave baseline and Ray runs; ``(runs, records, world facts)``."""
    import ray

    from openscene_ray.fusion.job import run_fuse

    extractor, settings, job_config = _configs(args, ray_cpus)
    manifest, records, world_s, reused = _world(args, args.pipeline_world or os.path.join(scratch, "world"))
    _baseline(records[:1], extractor, settings, os.path.join(scratch, "warm"))  # untimed warm-up
    runs = _Runs(actor_counts)
    for repeat in range(max(1, args.pipeline_repeats)):
        reset = reset_peak_rss()
        cpu_start = time.process_time()
        runs.baseline_s.append(_baseline(records, extractor, settings, os.path.join(scratch, f"base{repeat}")))
        runs.baseline_cpu.append(time.process_time() - cpu_start)
        if reset and runs.baseline_peak is None:
            runs.baseline_peak = peak_rss_mib()
        if not runs.cold:
            start = time.perf_counter()
            ray.init(address="local", num_cpus=ray_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
            runs.cold["ray_init_s"] = time.perf_counter() - start
            start = time.perf_counter()
            run_fuse(job_config(manifest, os.path.join(scratch, "cold"), actor_counts[0]))
            runs.cold["first_job_s"] = time.perf_counter() - start
        for n in actor_counts:
            fused = os.path.join(scratch, f"ray{n}-{repeat}")
            _steady_job(runs, n, lambda: run_fuse(job_config(manifest, fused, n)), len(records))
    return runs, records, {"world_s": world_s, "world_reused": reused}


def _outputs(scratch: str, records, first_actors: int) -> dict:
    """Same shards from Ray and the baseline, for every scene; then what was written per point."""
    import pyarrow.parquet as pq

    from openscene_ray.kernel.features import index_dir, read_features, shard_uri

    ray_out, base_out = os.path.join(scratch, f"ray{first_actors}-0"), os.path.join(scratch, "base0")
    identical = all(
        np.array_equal(read_features(shard_uri(ray_out, r.scene_id)).features,
                       read_features(shard_uri(base_out, r.scene_id)).features)
        for r in records
    )  # fmt: skip
    seen = int(sum(pq.read_table(index_dir(ray_out), columns=["n_seen"]).column(0).to_pylist()))
    shard_bytes = sum(os.path.getsize(shard_uri(ray_out, r.scene_id)) for r in records)
    return {"outputs_identical": bool(identical), "shard_bytes": shard_bytes, "seen_points": seen,
            "bytes_per_fused_point": round(shard_bytes / max(seen, 1), 2)}  # fmt: skip


def _steady_figures(runs: _Runs, n: int, ray_cpus: int, base: float, n_scenes: int) -> dict:
    seconds, cpu = statistics.median(runs.steady_s[n]), statistics.median(runs.steady_cpu[n])
    return {
        "cpus_per_actor": round(cpus_per_actor(ray_cpus, n), 3),
        "seconds": round(seconds, 2),
        "runs_s": [round(x, 2) for x in runs.steady_s[n]],
        "ratio": round(seconds / base, 3),
        "overhead_s": round(seconds - base, 2),
        "scenes_per_min": round(60 * n_scenes / seconds, 1),
        "cpu_s": round(cpu, 2),
        "cpu_ratio": round(cpu / statistics.median(runs.baseline_cpu), 3),
        "cpu_s_by_process": runs.cpu_by_title[n],
        "loader_fused_into_actor": "load_scene_row" in runs.actor_memory[n].get("title", ""),
        "actor_memory": runs.actor_memory[n],
        "loader_memory": runs.loader_memory[n],
    }


def run(args: argparse.Namespace) -> dict:
    """The fusion job on Ray vs a plain in-process loop over the same scenes (same extractor)."""
    import ray

    if ray.is_initialized():  # another case's Ray: this case times its own cold start
        ray.shutdown()
    load_before = os.getloadavg()
    scratch = tempfile.mkdtemp(prefix="osr-bench-pipeline-")
    ray_cpus = args.pipeline_ray_cpus or os.cpu_count() or 1
    actor_counts = [int(n) for n in str(args.pipeline_actors).split(",") if n.strip()]
    try:
        runs, records, world = _measure(args, scratch, ray_cpus, actor_counts)
        outputs = _outputs(scratch, records, actor_counts[0])
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(runs.baseline_s)
    out = {
        "scenes": len(records), "views_per_scene": args.pipeline_views, "points_per_scene": args.pipeline_points,
        "extractor": f"label-oracle dim {args.pipeline_dim}", "views_per_batch": args.views_per_batch,
        "cpu_count": os.cpu_count(), "ray_cpus": ray_cpus, "loader_cpus": args.pipeline_loader_cpus,
        "baseline_torch_threads": torch.get_num_threads(),
        "uv_run_workers": os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "1") != "0" and under_uv_run(),
        **world, "repeats": len(runs.baseline_s),
        "baseline_s": round(base, 2), "baseline_runs_s": [round(x, 2) for x in runs.baseline_s],
        "baseline_scenes_per_min": round(60 * len(records) / base, 1),
        "baseline_cpu_s": round(statistics.median(runs.baseline_cpu), 2), "baseline_peak_rss_mib": runs.baseline_peak,
        "ray_init_s": round(runs.cold["ray_init_s"], 2), "cold_first_job_s": round(runs.cold["first_job_s"], 2),
        "cold_actors": actor_counts[0],
        "ratio_cold": round((runs.cold["ray_init_s"] + runs.cold["first_job_s"]) / base, 3),
        "steady": {str(n): _steady_figures(runs, n, ray_cpus, base, len(records)) for n in actor_counts},
        **outputs,
        # uncompressed: fp16 features + int32 point index + uint16 view count
        "raw_bytes_per_fused_point": 2 * args.pipeline_dim + 4 + 2,
    }  # fmt: skip
    out["ratio"] = min(v["ratio"] for v in out["steady"].values())
    out["load_avg_before"] = [round(x, 2) for x in load_before]
    out["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out
