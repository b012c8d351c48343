"""The benchmark harness and every case, at tiny sizes: figures present, finite and positive."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks.cli import build_parser, main
from benchmarks.harness import ProcessSampler, run_case


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def _positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_sampler_sees_a_child_process():
    code = "import time; block = bytearray(64 << 20)\nwhile time.process_time() < 0.5: pass"  # CPU, however busy
    with ProcessSampler(interval=0.05, rescan=0.05) as sampler:
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait()
    assert child.pid in sampler.procs
    assert sampler.cpu_seconds() > 0.3
    largest = sampler.peak(lambda title: "bytearray" in title)
    assert largest["processes"] == 1 and largest["peak_rss_mib"] >= 64
    assert sampler.summary()["processes"] >= 1


def test_fusion_case(capsys):
    argv = ["fusion", "--threads", "1", "--points", "3000", "--views", "8", "--width", "64", "--height", "48",
            "--dim", "16", "--views-per-batch", "3", "--fusion-repeats", "1", "--growth"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["case"] == "fusion" and out["points"] == 3000 and out["views"] == 8
    assert out["mask_identical"] and out["max_excess_over_half_step"] <= 1e-6
    assert _positive(out["copy_gbs"], out["fast_s"], out["original_s"], out["speedup"], out["roofline_fraction"])
    assert _positive(out["visible_pairs"], out["point_batches"], out["streaming_bytes"], out["per_pair_bytes"])
    assert out["point_batches"] <= out["visible_pairs"] and out["seen_points"] <= out["point_batches"]
    assert [r["points"] for r in out["growth"]["points"]] == [750, 1500, 3000]
    assert [r["views"] for r in out["growth"]["views"]] == [2, 4, 8]
    assert all(_positive(r["fast_s"], r["original_s"]) for axis in out["growth"].values() for r in axis)
    assert _positive(out["harness"]["wall_s"], out["harness"]["peak_rss_mib"])


def test_fusion_case_half_maps_without_baseline():
    args = _args("fusion", "--points", "2000", "--views", "4", "--width", "48", "--height", "32", "--dim", "8",
                 "--map-dtype", "float16", "--fusion-repeats", "1", "--skip-naive")  # fmt: skip
    from benchmarks import fusion

    out = run_case("fusion", fusion.run, args)
    assert out["map_dtype"] == "float16" and "original_s" not in out and _positive(out["fast_s"])
    assert out["per_pair_bytes"] == out["visible_pairs"] * 8 * (2 + 8)


def test_old_command_line_still_parses():
    args = _args("all", "--device", "cpu", "--seed", "1", "--threads", "1", "--points", "10", "--views", "2",
                 "--skip-naive", "--distill-workers", "1", "--scenes", "3", "--pipeline-actors", "1,2",
                 "--pipeline-uv-workers", "--pipeline-world", "/tmp/w")  # fmt: skip
    assert args.skip_naive and args.pipeline_uv_workers and args.scenes == 3 and args.distill_workers == "1"


@pytest.mark.slow
def test_pipeline_case():
    from benchmarks import pipeline

    args = _args("pipeline", "--scenes", "2", "--pipeline-views", "4", "--pipeline-points", "2000",
                 "--pipeline-actors", "1", "--pipeline-ray-cpus", "2")  # fmt: skip
    out = run_case("pipeline", pipeline.run, args)
    steady = out["steady"]["1"]
    assert out["scenes"] == 2 and out["outputs_identical"]
    assert _positive(out["baseline_s"], out["ratio"], steady["seconds"], steady["cpu_s"], out["bytes_per_fused_point"])
    assert steady["actor_memory"]["processes"] >= 1 and _positive(steady["actor_memory"]["peak_rss_mib"])


@pytest.mark.slow
def test_distill_case():
    from benchmarks import distill

    args = _args("distill", "--distill-scenes", "2", "--distill-points", "2000", "--distill-dim", "8",
                 "--distill-epochs", "2", "--distill-workers", "1")  # fmt: skip
    out = run_case("distill", distill.run, args)
    run = out["runs"]["1"]
    assert out["scenes"] == 2 and out["scaling_efficiency"] == {"1": 1.0}
    assert _positive(run["voxels_per_s"], run["voxels_per_step"], *run["worker_peak_rss_mb"])
