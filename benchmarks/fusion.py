"""``fusion``: :func:`openscene_ray.fusion.fuse_views` against the original OpenScene loop.

Both run on one room of the synthetic world (exact depth, ScanNet thresholds: cut 10, relative
depth 0.25) with the same zero-cost extractor (a bank of random maps made before timing) and
must give the same mask; the fp16 features must be the fp16 rounding of the original loop's
mean to within half an fp16 step.

Roofline: the machine's bandwidth is measured in the same run (a large tensor copy, read and
write bytes counted, same thread count) and set against two traffic models of the fusion:

- per pair (the issue's count): every visible (point, view) pair reads its feature-map row
  (C x map bytes) and reads and writes its point's fp32 sum row (8C): 9.2 kB at C=768 fp32;
- streaming (the least a fusion that holds one batch of maps can move): the map row of every
  pair, one fp32 read and write per (point, batch) that sees the point, and the mean (read the
  sums, write fp16) once per seen point.

``roofline_fraction`` = (model bytes / bandwidth) / fuse_views time (``_streaming``: the second model;
``_cpu_time``: against CPU time, where other processes share the cores).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from benchmarks.fusion_baseline import MapBank, original_loop_fusion, synthetic_views
from benchmarks.harness import timed
from openscene_ray.fusion import FusionParams, FusionResult, fuse_views, visible_points
from openscene_ray.kernel.scene import pose_problem

__all__ = ["add_arguments", "copy_bandwidth_gbs", "run", "traffic"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fusion")
    group.add_argument("--points", type=int, default=200_000)
    group.add_argument("--views", type=int, default=100)
    group.add_argument("--width", type=int, default=320)
    group.add_argument("--height", type=int, default=240)
    group.add_argument("--dim", type=int, default=768)
    group.add_argument("--views-per-batch", type=int, default=8)
    group.add_argument("--map-dtype", choices=sorted(DTYPES), default="float32", help="the extractor's map dtype")
    group.add_argument("--fusion-repeats", type=int, default=3, help="fuse_views runs; the fastest counts")
    group.add_argument("--growth", action="store_true", help="also time 1/4 and 1/2 of the points and of the views")
    group.add_argument("--skip-naive", action="store_true", help="time only fuse_views (not the original loop)")


def _figure(value: float) -> float:
    """``value`` to 4 significant digits (times and fractions span several orders of magnitude)."""
    return float(f"{value:.4g}")


def copy_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Read + write bytes per second of the best of ``repeats`` copies of a large fp32 tensor."""
    source = torch.ones(megabytes << 18)
    target = torch.empty_like(source)
    best = min(timed(lambda: target.copy_(source))[1] for _ in range(repeats))
    return 2 * source.numel() * 4 / best / 1e9


def _batches(xyz: np.ndarray, views, params: FusionParams) -> list[list[torch.Tensor]]:
    """The visible point indices of every view, grouped as fuse_views batches them."""
    xyz_t = torch.as_tensor(np.asarray(xyz, dtype=np.float64))
    batches: list[list[torch.Tensor]] = []
    size = None
    for view in views:
        if pose_problem(view.cam_to_world):
            continue
        index, _ = visible_points(xyz_t, view, params)
        if index.numel() == 0:
            continue
        if not batches or len(batches[-1]) >= params.views_per_batch or size != (view.height, view.width):
            batches.append([])
            size = (view.height, view.width)
        batches[-1].append(index)
    return batches


def traffic(xyz: np.ndarray, views, params: FusionParams, dim: int, map_bytes: int) -> dict:
    """Visible pairs, (point, batch) pairs and seen points, and the bytes of both traffic models."""
    batches = _batches(xyz, views, params)
    pairs = sum(index.numel() for batch in batches for index in batch)
    point_batches = sum(torch.unique(torch.cat(batch)).numel() for batch in batches)
    seen = torch.unique(torch.cat([i for batch in batches for i in batch])).numel() if batches else 0
    out_bytes = params.output_dtype.itemsize
    return {
        "visible_pairs": pairs,
        "point_batches": point_batches,
        "seen_points": seen,
        "per_pair_bytes": pairs * dim * (map_bytes + 8),
        "streaming_bytes": pairs * dim * map_bytes + point_batches * dim * 8 + seen * dim * (4 + out_bytes),
    }


def _fp16_steps(features: torch.Tensor, mean: torch.Tensor, rows: int = 1 << 14) -> tuple[float, float]:
    """How far the fp16 ``features`` are from the fp32 ``mean``: the largest distance in fp16 steps
    at the mean (0.5: correctly rounded), and the largest absolute excess over half a step (fp32
    summation noise, large relative to the step only where the mean is a sum that cancelled)."""
    steps = excess = 0.0
    for start in range(0, mean.shape[0], rows):
        exact = mean[start : start + rows].abs()
        lower = exact.half()
        lower = torch.where(lower.float() > exact, torch.nextafter(lower, torch.zeros_like(lower)), lower)
        step = torch.nextafter(lower, torch.full_like(lower, float("inf"))).float() - lower.float()
        error = (features[start : start + rows].float() - mean[start : start + rows]).abs()
        steps = max(steps, float((error / step).max()))
        excess = max(excess, float((error - step / 2).max()))
    return steps, excess


def _compare(fast: FusionResult, mean: torch.Tensor, seen: np.ndarray, counts: np.ndarray) -> dict:
    same_mask = bool(np.array_equal(fast.mask, seen) and np.array_equal(fast.n_views, counts.astype(np.uint16)))
    if not same_mask:
        return {"mask_identical": False}
    original = mean.to(fast.features.dtype)
    differing = int((fast.features != original).sum())
    steps, excess = _fp16_steps(fast.features, mean)
    return {
        "mask_identical": True,
        "max_abs_diff": float((fast.features.float() - original.float()).abs().max()) if differing else 0.0,
        "features_equal_fp16": differing == 0,
        "fp16_values_differing": differing,
        "fp16_values": fast.features.numel(),
        "max_fp16_steps_from_original_mean": round(steps, 4),
        "max_excess_over_half_step": float(f"{max(excess, 0.0):.3g}"),
    }


def _fastest(xyz, views, extractor, params, device, repeats: int) -> tuple[FusionResult, float, float]:
    runs = [timed(lambda: fuse_views(xyz, views, extractor, params, device=device), device) for _ in range(repeats)]
    return min(runs, key=lambda r: r[1])


def _time_size(xyz, views, bank: MapBank, params, args, bandwidth: float, with_original: bool) -> dict:
    """fuse_views (and the original loop) on one problem size: times, rates, roofline fractions."""
    device = torch.device(args.device)
    fast, fast_s, fast_cpu = _fastest(xyz, views, bank, params, device, max(1, args.fusion_repeats))
    model = traffic(xyz, views, params, args.dim, bank.bank.element_size())
    point_views = xyz.shape[0] * len(views)
    out = {
        "points": int(xyz.shape[0]),
        "views": len(views),
        "seen_fraction": round(float(fast.mask.mean()), 4),
        **model,
        "fast_s": _figure(fast_s),
        "fast_cpu_s": _figure(fast_cpu),
        "fast_point_views_per_s": round(point_views / fast_s),
        "roofline_fraction": _figure(model["per_pair_bytes"] / bandwidth / 1e9 / fast_s),
        "roofline_fraction_streaming": _figure(model["streaming_bytes"] / bandwidth / 1e9 / fast_s),
        # the same against CPU time: less skewed where other processes share the cores
        "roofline_fraction_cpu_time": _figure(model["per_pair_bytes"] / bandwidth / 1e9 / fast_cpu),
    }
    if with_original:
        maps = bank.reference_maps()
        (mean, seen, counts), original_s, original_cpu = timed(
            lambda: original_loop_fusion(xyz, views, maps, bank.map_of, params)
        )
        out.update(
            original_s=_figure(original_s),
            original_cpu_s=_figure(original_cpu),
            original_point_views_per_s=round(point_views / original_s),
            original_roofline_fraction=_figure(model["per_pair_bytes"] / bandwidth / 1e9 / original_s),
            speedup=_figure(original_s / fast_s),
            speedup_cpu_time=_figure(original_cpu / fast_cpu),
            **_compare(fast, mean, seen, counts),
        )
    return out


def run(args: argparse.Namespace) -> dict:
    """fuse_views vs the original loop at the given size; with ``--growth`` also at smaller sizes."""
    device = torch.device(args.device)
    xyz, views = synthetic_views(args.points, args.views, args.width, args.height, args.seed)
    bank = MapBank(args.views_per_batch, args.height, args.width, args.dim, DTYPES[args.map_dtype], args.seed, device)
    params = FusionParams(cut_bound=10, visibility_threshold=0.25, views_per_batch=args.views_per_batch)
    fuse_views(xyz[:1000], views[:2], bank, params, device=device)  # warm-up
    bandwidth = copy_bandwidth_gbs()
    head = {
        "image": f"{args.width}x{args.height}",
        "dim": args.dim,
        "views_per_batch": args.views_per_batch,
        "map_dtype": args.map_dtype,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "copy_gbs": round(bandwidth, 2),
    }
    out = head | _time_size(xyz, views, bank, params, args, bandwidth, not args.skip_naive)
    if args.growth:
        sizes = {"points": [(xyz[: len(xyz) // d], views) for d in (4, 2)], "views": [(xyz, views[::d]) for d in (4, 2)]}
        main = _growth_row(out)
        out["growth"] = {
            axis: [_growth_row(_time_size(p, v, bank, params, args, bandwidth, not args.skip_naive)) for p, v in cases]
            + [main]
            for axis, cases in sizes.items()
        }
    return out


def _growth_row(figures: dict) -> dict:
    keys = ("points", "views", "visible_pairs", "fast_s", "fast_cpu_s", "roofline_fraction", "original_s",
            "original_cpu_s", "speedup")  # fmt: skip
    return {k: figures[k] for k in keys if k in figures}
