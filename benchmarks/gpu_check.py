"""``make gpu-check``: what a GPU machine does with this system, in one run (≤ 8 minutes).

It checks and times, each part on its own so that one failure never hides the others:

- ``devices``: torch, CUDA, spconv and the GPUs;
- ``spconv_parity``: spconv's CUDA convolutions against the CPU Native path, same weights and input;
- ``train_step``: a MinkUNet18A training step at ScanNet size (150k points, 0.02 m voxels, C=768),
  fp32 and with AMP, with the peak GPU memory;
- ``fusion``: the fusion core at 200k points × 100 views (C=768) on CUDA against the CPU;
- ``openseg``: the OpenSeg adapter on a stand-in SavedModel (TF memory growth on), images/s;
- ``lseg``: the real-size LSeg network (ViT-L/16, random weights), images/s at the extraction
  recipe's sizes for 320×240 and 640×512 images;
- ``ddp``: a one-GPU NCCL DDP step through Ray Train.

Without CUDA every GPU part is skipped with the reason. ``--smoke`` runs every part on the CPU at
toy sizes instead: it proves the code paths (the tests run it) and times nothing meaningful.
Prints the JSON and writes it to ``--output`` (default ``benchmarks/results/gpu-check-<date>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKS", "main", "run_checks"]

FULL = {"points": 150_000, "voxel": 0.02, "dim": 768, "fusion_points": 200_000, "fusion_views": 100,
        "images": 20, "lseg": "lseg-vitl16-384", "lseg_images": ((320, 240), (640, 512))}  # fmt: skip
SMOKE = {"points": 3_000, "voxel": 0.1, "dim": 16, "fusion_points": 2_000, "fusion_views": 4,
         "images": 2, "lseg": "lseg-tiny", "lseg_images": ((40, 30), (48, 32))}  # fmt: skip


class Skipped(Exception):
    """A part that cannot run here (the reason is reported)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def check_devices(device: torch.device, size: dict) -> dict[str, Any]:
    """Versions and the visible GPUs."""
    import spconv

    out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "spconv": getattr(spconv, "__version__", "unknown"), "gpus": []}  # fmt: skip
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                            "capability": f"{props.major}.{props.minor}"})  # fmt: skip
    return out


def _room(points: int, voxel: float, seed: int = 0):
    """Voxelised points of a synthetic room: ``(coords int32 [V, 4], feats [V, 1])``."""
    from openscene_ray.models.transforms import voxel_input
    from openscene_ray.models.voxelize import batch_voxels
    from openscene_ray.synth import SynthConfig, generate_scene

    scene = generate_scene(SynthConfig(seed=seed, num_scenes=1, views_per_scene=1, points_per_scene=points), 0)
    sample = voxel_input(scene.xyz, scene.rgb, voxel, 1)
    return torch.from_numpy(batch_voxels([sample.voxel_coords])), torch.from_numpy(sample.feats)


def check_spconv_parity(device: torch.device, size: dict) -> dict[str, Any]:
    """The same MinkUNet (eval mode) on the device's default algorithm and on the CPU Native path."""
    from openscene_ray.models import MinkUNetConfig, build_model

    coords, feats = _room(size["points"], size["voxel"])
    torch.manual_seed(0)
    model = build_model(MinkUNetConfig(out_channels=32)).eval()
    with torch.no_grad():
        cpu = model(coords, feats, 1)
        model_dev = model.to(device)
        out, seconds = _timed(lambda: model_dev(coords.to(device), feats.to(device), 1), device)
    diff = (out.cpu() - cpu).abs().max().item()
    scale = cpu.abs().max().item()
    return {"voxels": int(coords.shape[0]), "max_abs_diff": diff, "relative": diff / max(scale, 1e-12),
            "parity": diff <= 1e-3 * max(scale, 1.0), "forward_s": round(seconds, 4)}  # fmt: skip


def _train_step_seconds(model, coords, feats, target, amp: bool, device: torch.device, steps: int = 3) -> float:
    from openscene_ray.models import cosine_distill_loss

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    times = []
    for _ in range(steps):
        def step():
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                pred = model(coords, feats, 1)
            loss = cosine_distill_loss(pred.float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        times.append(_timed(step, device)[1])
    return min(times[1:] or times)  # the first step includes spconv's kernel selection


def check_train_step(device: torch.device, size: dict) -> dict[str, Any]:
    """MinkUNet18A training steps at ScanNet size, fp32 and AMP (AMP only on CUDA)."""
    from openscene_ray.models import MinkUNetConfig, build_model

    coords, feats = _room(size["points"], size["voxel"])
    coords, feats = coords.to(device), feats.to(device)
    target = torch.randn(coords.shape[0], size["dim"], device=device)
    out: dict[str, Any] = {"voxels": int(coords.shape[0]), "points": size["points"], "dim": size["dim"]}
    for amp in (False, True) if device.type == "cuda" else (False,):
        torch.manual_seed(0)
        model = build_model(MinkUNetConfig(out_channels=size["dim"])).to(device).train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        key = "amp" if amp else "fp32"
        out[f"{key}_step_s"] = round(_train_step_seconds(model, coords, feats, target, amp, device), 4)
        if device.type == "cuda":
            out[f"{key}_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def check_fusion(device: torch.device, size: dict) -> dict[str, Any]:
    """The fusion core with the maps on ``device`` against the CPU (same maps, same mask)."""
    from benchmarks.fusion_baseline import MapBank, synthetic_views
    from openscene_ray.fusion import FusionParams, fuse_views

    xyz, views = synthetic_views(size["fusion_points"], size["fusion_views"], 320, 240)
    params = FusionParams(cut_bound=10, visibility_threshold=0.25, views_per_batch=8)
    results, seconds = {}, {}
    for where in dict.fromkeys([torch.device("cpu"), device]):
        bank = MapBank(params.views_per_batch, 240, 320, size["dim"], torch.float16, 0, where)
        results[where.type], seconds[where.type] = _timed(lambda: fuse_views(xyz, views, bank, params), where)
    cpu, dev = results["cpu"], results[device.type]
    return {"points": len(xyz), "views": len(views), "cpu_s": round(seconds["cpu"], 3),
            f"{device.type}_s": round(seconds[device.type], 3), "mask_identical": bool(np.array_equal(cpu.mask, dev.mask)),
            "max_abs_diff": float((cpu.features.float() - dev.features.float()).abs().max())}  # fmt: skip


def check_openseg(device: torch.device, size: dict) -> dict[str, Any]:
    """The OpenSeg adapter on the stand-in SavedModel, on TensorFlow's GPU when it sees one."""
    import torchvision  # noqa: F401  (before tensorflow: the other order aborts the process)

    import tensorflow as tf

    from benchmarks.openseg_stand_in import write_stand_in
    from openscene_ray.extractors import build_extractor
    from openscene_ray.kernel.scene import View

    gpus = tf.config.list_physical_devices("GPU")
    if device.type == "cuda" and not gpus:
        raise Skipped("TensorFlow sees no GPU (install tensorflow[and-cuda] matching the driver)")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    with tempfile.TemporaryDirectory() as folder:
        extractor = build_extractor("openseg", saved_model=write_stand_in(os.path.join(folder, "m")), device=str(device))
        color = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        view = View("0", color, None, np.eye(3), np.eye(4))
        extractor.extract([view], 240, 320)  # warm-up
        _, seconds = _timed(lambda: [extractor.extract([view], 240, 320) for _ in range(size["images"])], device)
    return {"tf_gpus": len(gpus), "images_per_s": round(size["images"] / seconds, 2)}


def check_lseg(device: torch.device, size: dict) -> dict[str, Any]:
    """The LSeg network through the extraction recipe (2 × the long side, padded square, flip sum),
    random weights: images/s and the feature map's shape at each image size."""
    from openscene_ray.extractors.lseg import lseg_features
    from openscene_ray.models.lseg import build_lseg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_lseg(size["lseg"]).to(device).eval()
    out: dict[str, Any] = {"config": size["lseg"]}
    for w, h in size["lseg_images"]:
        images = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, device=device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            features = lseg_features(net, images)  # warm-up
            _, seconds = _timed(lambda batch=images: [lseg_features(net, batch) for _ in range(size["images"])], device)
        out[f"features_{w}x{h}"] = list(features.shape)
        out[f"images_per_s_{w}x{h}"] = round(size["images"] / seconds, 2)  # each image: two passes (the flip)
    return out


def _ddp_loop(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = ray.train.torch.prepare_model(torch.nn.Linear(8, 8))  # moves it to the worker's device
    device = ray.train.torch.get_device()
    # prepare_model wraps in DDP only when world_size > 1; wrap it here so one worker still runs DDP's
    # gradient all-reduce through the process group Ray Train set up
    wrapped_by_ray = isinstance(model, DistributedDataParallel)
    if not wrapped_by_ray:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    # rank r feeds 4 rows of (r + 1): its own dL/dW and dL/db are 4 (r + 1) everywhere, so DDP's
    # averaged gradient is 4 * mean(r + 1) = 2 (world + 1), which only the all-reduce produces
    model(torch.full((4, 8), rank + 1.0, device=device)).sum().backward()
    expected = 2.0 * (world + 1)
    grad_error = max(float((p.grad - expected).abs().max()) for p in model.parameters())
    ranks = torch.tensor([rank + 1.0], device=device)
    dist.all_reduce(ranks)  # a direct collective on the worker's device: the sum of 1..world
    return {"backend": dist.get_backend(), "world_size": world, "device": str(device), "ddp": type(model).__name__,
            "wrapped_by_ray": wrapped_by_ray, "grad_expected": expected, "grad_max_error": grad_error,
            "all_reduce_sum": float(ranks.item()), "all_reduce_expected": world * (world + 1) / 2}  # fmt: skip


def check_ddp(device: torch.device, size: dict) -> dict[str, Any]:
    """One DDP step on one worker through Ray Train (NCCL on CUDA, gloo on the CPU): the process
    group's backend, a DDP-averaged gradient with a known value and a direct all-reduce."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = device.type == "cuda"
    backend = "nccl" if use_gpu else "gloo"
    with tempfile.TemporaryDirectory() as folder:
        ray.init(address="local", num_cpus=2, num_gpus=1 if use_gpu else 0, include_dashboard=False)
        try:
            trainer = TorchTrainer(_ddp_loop, scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu),
                                   torch_config=TorchConfig(backend=backend),
                                   run_config=RunConfig(name="gpu-check", storage_path=folder))  # fmt: skip
            result, seconds = _timed(trainer.fit, torch.device("cpu"))
        finally:
            ray.shutdown()
    return {"expected_backend": backend, **(result.return_value or {}), "fit_s": round(seconds, 1)}


CHECKS: dict[str, Callable[[torch.device, dict], dict[str, Any]]] = {
    "devices": check_devices, "spconv_parity": check_spconv_parity, "train_step": check_train_step,
    "fusion": check_fusion, "openseg": check_openseg, "lseg": check_lseg, "ddp": check_ddp,
}  # fmt: skip


def run_checks(names: list[str], smoke: bool) -> dict[str, Any]:
    """Every named check's result, or its skip reason or error; never raises."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda and not smoke else "cpu")
    size = SMOKE if smoke else FULL
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "smoke": smoke, "device": str(device), "checks": {}}
    for name in names:
        started = time.perf_counter()
        try:
            if name != "devices" and device.type != "cuda" and not smoke:
                raise Skipped("no CUDA device: run on a GPU machine (or --smoke for the CPU code paths)")
            entry = {"status": "ok", **CHECKS[name](device, size)}
        except Skipped as reason:
            entry = {"status": "skipped", "reason": str(reason)}
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
            entry = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        entry["seconds"] = round(time.perf_counter() - started, 2)
        report["checks"][name] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the JSON report and write it to ``--output``; exit 1 on any error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes (a test)")
    parser.add_argument("--only", action="append", choices=sorted(CHECKS), help="run only these checks")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/gpu-check-<date>.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    report = run_checks(args.only or list(CHECKS), args.smoke)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    output = args.output or os.path.join("benchmarks", "results", f"gpu-check-{report['date']}.json")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        f.write(text + "\n")
    return int(any(c["status"] == "error" for c in report["checks"].values()))


if __name__ == "__main__":
    raise SystemExit(main())
