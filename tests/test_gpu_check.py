"""The GPU check runs here: on the CPU its GPU parts are skipped with the reason, and ``--smoke``
proves each part's code path at toy sizes."""

import json

import pytest

from benchmarks.gpu_check import CHECKS, main, run_checks


def test_without_cuda_every_gpu_part_is_skipped_with_its_reason(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the parts run instead")
    out = tmp_path / "report.json"
    assert main(["--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["checks"]["devices"]["status"] == "ok" and report["checks"]["devices"]["cuda_available"] is False
    for name in set(CHECKS) - {"devices"}:
        assert report["checks"][name]["status"] == "skipped" and "no CUDA device" in report["checks"][name]["reason"]


def test_smoke_runs_the_cpu_code_paths():
    report = run_checks(["spconv_parity", "fusion", "train_step"], smoke=True)
    checks = report["checks"]
    assert all(c["status"] == "ok" for c in checks.values()), checks
    assert checks["spconv_parity"]["parity"] and checks["fusion"]["mask_identical"]
    assert checks["train_step"]["fp32_step_s"] > 0


@pytest.mark.slow
def test_smoke_runs_the_model_and_ray_paths():
    import ray

    if ray.is_initialized():  # the check starts its own Ray, as on a bare GPU machine
        ray.shutdown()
    report = run_checks(["openseg", "ddp", "lseg"], smoke=True)
    checks = report["checks"]
    assert all(c["status"] == "ok" for c in checks.values()), checks
    # one gloo worker: Ray Train set up the process group, DDP averaged the known gradient exactly
    # (2 (world + 1) = 4 on every weight), and a direct all-reduce returned the sum of 1..world
    ddp = checks["ddp"]
    assert ddp["backend"] == ddp["expected_backend"] == "gloo" and ddp["world_size"] == 1
    assert ddp["ddp"] == "DistributedDataParallel" and ddp["grad_expected"] == 4.0 and ddp["grad_max_error"] == 0.0
    assert ddp["all_reduce_sum"] == ddp["all_reduce_expected"] == 1.0
    assert checks["openseg"]["images_per_s"] > 0
    # lseg-tiny through the extraction recipe: 32-d features at each image's own resolution
    assert checks["lseg"]["features_40x30"] == [1, 32, 30, 40] and checks["lseg"]["features_48x32"] == [1, 32, 32, 48]
    assert checks["lseg"]["images_per_s_40x30"] > 0
