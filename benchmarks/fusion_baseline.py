"""The fusion benchmark's inputs and its baseline.

- :func:`synthetic_views`: one room of the project's synthetic world, ray-cast into posed views
  with exact depth at any image size.
- :class:`MapBank`: a zero-cost extractor over a bank of random feature maps made before timing.
- :func:`original_loop_fusion`: the original OpenScene fusion loop, written here from the
  paper's formulas: per view, project and test every point into a ``[3, N]`` mapping (row,
  column, visibility id), gather the fp16 ``[C, H, W]`` feature map at all N points, and add
  the gathered rows and a counter over all N points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from openscene_ray.fusion import FusionParams
from openscene_ray.kernel.scene import View, pose_problem
from openscene_ray.synth import (
    SynthConfig,
    camera_poses,
    generate_scene,
    render_view,
    scannet_intrinsics,
)

__all__ = ["MapBank", "original_loop_fusion", "point_to_image_mapping", "synthetic_views"]


def synthetic_views(
    n_points: int, n_views: int, width: int, height: int, seed: int = 0
) -> tuple[np.ndarray, list[View]]:
    """``(xyz float32 [N,3], views)``: room 0 of a synthetic world and views around it with exact
    depth; the ScanNet intrinsics scaled to ``width`` x ``height``."""
    config = SynthConfig(seed=seed, num_scenes=1, views_per_scene=n_views, points_per_scene=n_points)
    scene = generate_scene(config, 0)
    k = scannet_intrinsics()
    k[0, 0] *= width / 320
    k[1, 1] *= height / 240
    k[0, 2], k[1, 2] = (width - 1) / 2, (height - 1) / 2
    poses = camera_poses(scene, n_views, np.random.default_rng([seed, 0, 2]), config.camera_height)
    views = []
    for i, pose in enumerate(poses):
        color, depth, _ = render_view(scene, k, pose, width, height)
        views.append(View(str(i), color, depth, k, pose))
    return scene.xyz, views


class MapBank:
    """Zero-cost extractor: a batch of B views gets the bank's first B maps (a slice, no copy).

    The values are fp16 numbers, so fp32 and fp16 copies of the bank hold the same maps;
    ``map_of`` records which map each view got, for the baseline.
    """

    name = "map-bank"
    text_model = "none"

    def __init__(self, n_maps: int, height: int, width: int, dim: int, dtype: torch.dtype, seed: int, device):
        generator = torch.Generator().manual_seed(seed)
        bank = torch.randn((n_maps, height, width, dim), generator=generator).half()
        self.bank = bank.to(device=device, dtype=dtype)
        self.feature_dim = dim
        self.device = torch.device(device)
        self.map_of: dict[str, int] = {}

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        for i, view in enumerate(views):
            self.map_of[view.frame_id] = i
        return self.bank[: len(views)]

    def reference_maps(self) -> torch.Tensor:
        """The bank as the reference holds feature maps: fp16 ``[n, C, H, W]`` on the CPU."""
        return self.bank.permute(0, 3, 1, 2).to(device="cpu", dtype=torch.float16).contiguous()


def point_to_image_mapping(
    xyz_h: np.ndarray, view: View, cut_bound: int, threshold: float | None, depth_test: bool = True
) -> np.ndarray:
    """``[3, N]`` int64 for homogeneous points ``xyz_h`` ([4, N] float64): the row, the column and
    the visibility id (1: visible, else 0 and row = column = 0) of every point in ``view``."""
    p = np.linalg.inv(np.asarray(view.cam_to_world, dtype=np.float64)) @ xyz_h
    k = view.intrinsics
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(p[0] * k[0, 0] / p[2] + k[0, 2])
        v = np.round(p[1] * k[1, 1] / p[2] + k[1, 2])
    width, height = view.width, view.height
    visible = (p[2] > 0) & (u >= cut_bound) & (u < width - cut_bound) & (v >= cut_bound) & (v < height - cut_bound)
    if view.depth is not None and threshold is not None and depth_test:
        d = view.depth[v[visible].astype(np.int64), u[visible].astype(np.int64)].astype(np.float64)
        visible[visible] = (d > 0) & (np.abs(d - p[2][visible]) <= threshold * d)
    mapping = np.zeros((3, xyz_h.shape[1]), dtype=np.int64)
    mapping[0][visible], mapping[1][visible], mapping[2][visible] = v[visible], u[visible], 1
    return mapping


def original_loop_fusion(
    xyz: np.ndarray, views: Sequence[View], maps: torch.Tensor, map_of: dict[str, int], params: FusionParams
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``(fp32 mean [M, C] of the seen points, mask [N], view counts [N])`` by the original loop.

    ``maps`` are fp16 ``[n, C, H, W]``; view ``f`` uses ``maps[map_of[f]]``. Views with invalid
    poses are skipped, like views whose mapping has no visible point.
    """
    n = xyz.shape[0]
    xyz_h = np.concatenate([np.asarray(xyz, dtype=np.float64), np.ones((n, 1))], axis=1).T
    sums = torch.zeros(n, maps.shape[1], dtype=torch.float32)
    counter = torch.zeros(n, dtype=torch.int32)
    for view in views:
        if pose_problem(view.cam_to_world):
            continue
        mapping = torch.from_numpy(
            point_to_image_mapping(xyz_h, view, params.cut_bound, params.visibility_threshold, params.depth_test)
        )
        mask = mapping[2] == 1
        if not mask.any():
            continue
        feat_2d = maps[map_of[view.frame_id]]
        feat_2d_3d = feat_2d[:, mapping[0], mapping[1]].permute(1, 0)  # [N, C] fp16, all points
        counter[mask] += 1
        sums[mask] += feat_2d_3d[mask]
    seen = counter > 0
    mean = sums[seen] / counter[seen].unsqueeze(1)
    return mean, seen.numpy(), counter.numpy()
