"""Multi-view 2D->3D feature fusion (OpenScene paper Sec. 3.1), in pure torch.

Every view projects the points with its pose and intrinsics; a point is visible in a view when it
lands inside the image (less a cut bound) in front of the camera and, with depth, when the depth
map agrees with the point's depth within a relative threshold. The fused feature of a point is
the plain mean of the per-pixel features of the views that see it.

Projection runs in float64 (as the reference does), so pixel rounding and the depth test agree
bit for bit with a float64 reference. :func:`fuse_views` works in two passes:

1. Project every view (the visible (point, pixel) pairs are small). Points are kept in a
   space-filling-curve (Morton) order and grouped in blocks; blocks outside a view's frustum
   are culled before the exact projection.
2. Extract the feature maps batch by batch and add each batch's pairs into fp32 sums that exist
   only for the seen points, in Morton order: the pairs of one batch are sorted by point, so the
   rows a batch adds to stay in cache while all its views add to them, and the gathered pixels
   of neighbouring points lie close together in the maps. The mean is divided in place, chunk
   by chunk, into the fp16 output in point order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.kernel.scene import View, pose_problem

__all__ = ["FusionParams", "FusionResult", "Projection", "fuse_views", "project", "visible_points"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionParams:
    """Visibility and batching settings of one fusion run.

    ``visibility_threshold`` None means no depth test (nuScenes): a point inside the image is
    visible iff it is in front of the camera. ``depth_test=False`` ignores depth maps even when
    the views have them (ablation).
    """

    cut_bound: int
    visibility_threshold: float | None
    depth_test: bool = True
    views_per_batch: int = 8
    output_dtype: torch.dtype = torch.float16

    def __post_init__(self):
        if self.cut_bound < 0:
            raise ValueError(f"cut_bound must be >= 0, got {self.cut_bound}")
        if self.visibility_threshold is not None and not self.visibility_threshold > 0:
            raise ValueError(f"visibility_threshold must be > 0 or None, got {self.visibility_threshold}")
        if self.views_per_batch < 1:
            raise ValueError(f"views_per_batch must be >= 1, got {self.views_per_batch}")


@dataclass
class FusionResult:
    """Fused features of the seen points, in point order, plus per-point and per-view counts."""

    features: torch.Tensor  # CPU [M, C] output_dtype, M = mask.sum()
    mask: np.ndarray  # bool [N]: seen by >= 1 view
    n_views: np.ndarray  # uint16 [N]: views that saw each point
    n_views_used: int  # views sent to the extractor
    n_views_no_points: int  # valid views that saw no point
    n_views_invalid: int  # views skipped for invalid poses


@dataclass
class Projection:
    """The points that land inside one view, with their integer pixels and camera depth."""

    index: torch.Tensor  # int64 [K] point indices, ascending
    u: torch.Tensor  # int64 [K] column (rounded half to even)
    v: torch.Tensor  # int64 [K] row
    z: torch.Tensor  # float64 [K] depth along the optical axis (> 0)


def _inside_image(
    coords: torch.Tensor, world_to_cam: np.ndarray, intrinsics: np.ndarray, height: int, width: int, cut: int
) -> Projection:
    """Project ``coords`` (float64 [3, K] world) and keep the columns that land inside the image.

    ``p = R x + t`` (each camera coordinate summed in the fixed order x, y, z, t, so a point's
    pixel never depends on which other points are projected with it), ``u = p0*fx/p2 + cx``,
    ``v = p1*fy/p2 + cy`` rounded half to even; inside iff ``p2 > 0``, ``cut <= u < W-cut``
    and ``cut <= v < H-cut``. ``index`` counts columns of ``coords``.
    """
    r, t = world_to_cam[:3, :3].tolist(), world_to_cam[:3, 3].tolist()
    x, y, z = coords[0], coords[1], coords[2]
    p = [(x * r[i][0]).add_(y * r[i][1]).add_(z * r[i][2]).add_(t[i]) for i in range(3)]
    k = np.asarray(intrinsics, dtype=np.float64)
    u = p[0].mul_(float(k[0, 0])).div_(p[2]).add_(float(k[0, 2])).round_()
    v = p[1].mul_(float(k[1, 1])).div_(p[2]).add_(float(k[1, 2])).round_()
    inside = (p[2] > 0) & (u >= cut) & (u < width - cut) & (v >= cut) & (v < height - cut)
    index = torch.nonzero(inside).squeeze(1)
    return Projection(index, u[index].long(), v[index].long(), p[2][index])


def project(
    xyz: torch.Tensor,
    cam_to_world: np.ndarray,
    intrinsics: np.ndarray,
    height: int,
    width: int,
    cut_bound: int = 0,
) -> Projection:
    """Project world points ``xyz`` (float64 [N,3]) into one pinhole view; keep those inside.

    ``p = inv(cam_to_world) @ [x, 1]``, ``u = p0*fx/p2 + cx``, ``v = p1*fy/p2 + cy``, rounded to the
    nearest pixel with ties to even; inside iff ``p2 > 0``, ``cut <= u < W-cut``, ``cut <= v < H-cut``.
    """
    world_to_cam = np.linalg.inv(np.asarray(cam_to_world, dtype=np.float64))
    return _inside_image(xyz.T, world_to_cam, intrinsics, height, width, cut_bound)


def _depth_agrees(view: View, params: FusionParams, pix: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
    """Which projected points pass the depth test (None when the view or params have none).

    Visible iff ``depth[v,u] > 0`` and ``|depth[v,u] - z| <= thr * depth[v,u]``.
    """
    if view.depth is None or params.visibility_threshold is None or not params.depth_test:
        return None
    depth = view.depth if view.depth.flags.writeable else view.depth.copy()
    d = torch.as_tensor(depth, device=z.device).reshape(-1)[pix].to(torch.float64)
    return (d > 0) & ((d - z).abs() <= params.visibility_threshold * d)


def visible_points(
    xyz: torch.Tensor,
    view: View,
    params: FusionParams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the points ``view`` sees and their flat pixel indices ``v*W + u`` (int64 [K] each).

    With a depth map (and a threshold, and ``depth_test``): visible iff inside, ``depth[v,u] > 0``
    and ``|depth[v,u] - z| <= thr * depth[v,u]``; otherwise visible iff inside (which implies z > 0).
    """
    proj = project(xyz, view.cam_to_world, view.intrinsics, view.height, view.width, params.cut_bound)
    idx, pix = proj.index, proj.v * view.width + proj.u
    keep = _depth_agrees(view, params, pix, proj.z)
    return (idx, pix) if keep is None else (idx[keep], pix[keep])


def _morton_order(xyz: torch.Tensor) -> torch.Tensor:
    """Point indices sorted along a Morton (Z-order) curve over the points' bounding box."""
    if xyz.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=xyz.device)
    finite = torch.nan_to_num(xyz, nan=0.0, posinf=0.0, neginf=0.0)
    low = finite.min(0).values
    span = (finite.max(0).values - low).max().clamp(min=1e-12)
    cells = ((finite - low) * ((1 << 21) - 1) / span).clamp(0, (1 << 21) - 1).long()
    key = torch.zeros(xyz.shape[0], dtype=torch.int64, device=xyz.device)
    for axis in range(3):  # spread 21 bits to every third bit of 63
        c = cells[:, axis]
        for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                            (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):  # fmt: skip
            c = (c | (c << shift)) & mask
        key |= c << axis
    return torch.argsort(key, stable=True)


class _PointBlocks:
    """The points in Morton order, in blocks of ``size`` consecutive points (``blocks`` float64
    [3, n_blocks, size], the last block padded with NaN) with their bounding boxes, for culling."""

    def __init__(self, xyz: torch.Tensor, size: int = 128):
        self.order = _morton_order(xyz)
        self.size, n = size, xyz.shape[0]
        n_blocks = -(-n // size)
        blocks = torch.full((n_blocks * size, 3), float("nan"), dtype=torch.float64, device=xyz.device)
        blocks[:n] = xyz[self.order]
        self.blocks = blocks.T.reshape(3, n_blocks, size)
        low, high = self.blocks.min(2).values, self.blocks.max(2).values
        self.centre, self.half = (low + high) / 2, (high - low) / 2  # [3, n_blocks]; NaN never culls

    def candidates(self, world_to_cam: np.ndarray, intrinsics: np.ndarray, height: int, width: int, cut: int):
        """The blocks (ascending) that may hold points inside the view.

        A block is culled when a whole-pixel-widened frustum plane (``z = 0``, ``u = cut - 1``,
        ``u = W - cut``, likewise v) has the whole box on its outer side: a conservative test,
        the exact one follows on the points left.
        """
        k = np.asarray(intrinsics, dtype=np.float64)
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        planes = np.array([  # camera-frame normals n: a visible point has n . p >= 0
            [0.0, 0.0, 1.0], [fx, 0.0, cx - (cut - 1)], [-fx, 0.0, width - cut - cx],
            [0.0, fy, cy - (cut - 1)], [0.0, -fy, height - cut - cy],
        ])  # fmt: skip
        normal = torch.as_tensor(planes @ world_to_cam[:3, :3], device=self.centre.device)
        offset = torch.as_tensor(planes @ world_to_cam[:3, 3], device=self.centre.device)
        reach = normal.abs() @ self.half
        highest = normal @ self.centre + reach + offset[:, None]
        scale = normal.abs() @ self.centre.abs() + reach + offset.abs()[:, None]
        culled = (highest < -1e-9 * scale).any(0)  # NaN never culls
        return torch.nonzero(~culled).squeeze(1)

    def visible(self, view: View, params: FusionParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Morton positions (ascending) of the points ``view`` sees and their flat pixels."""
        world_to_cam = np.linalg.inv(np.asarray(view.cam_to_world, dtype=np.float64))
        cut = params.cut_bound
        blocks = self.candidates(world_to_cam, view.intrinsics, view.height, view.width, cut)
        coords = self.blocks.index_select(1, blocks).reshape(3, -1)  # NaN padding is never inside
        proj = _inside_image(coords, world_to_cam, view.intrinsics, view.height, view.width, cut)
        block, offset = proj.index.div(self.size, rounding_mode="floor"), proj.index.remainder(self.size)
        positions, pix = blocks[block] * self.size + offset, proj.v * view.width + proj.u
        keep = _depth_agrees(view, params, pix, proj.z)
        return (positions, pix) if keep is None else (positions[keep], pix[keep])


@dataclass
class _Batch:
    """Views of one size sent to the extractor together, with their visible pairs."""

    views: list[View]
    positions: list[torch.Tensor]  # per view: Morton positions of the visible points
    pixels: list[torch.Tensor]  # per view: their flat pixel indices


def _project_views(blocks: _PointBlocks, views: Iterable[View], params: FusionParams):
    """Pass 1: ``(batches, n_no_points, n_invalid)``; views with invalid poses or no visible point
    are skipped; a batch holds up to ``views_per_batch`` views of one size."""
    batches: list[_Batch] = []
    n_no_points = n_invalid = 0
    for view in views:
        problem = pose_problem(view.cam_to_world)
        if problem:
            n_invalid += 1
            log.debug("fusion: skipping view %s: %s", view.frame_id, problem)
            continue
        positions, pix = blocks.visible(view, params)
        if positions.numel() == 0:
            n_no_points += 1
            continue
        last = batches[-1] if batches else None
        if last is None or len(last.views) >= params.views_per_batch or (
            (view.height, view.width) != (last.views[0].height, last.views[0].width)
        ):
            last = _Batch([], [], [])
            batches.append(last)
        last.views.append(view)
        last.positions.append(positions)
        last.pixels.append(pix)
    return batches, n_no_points, n_invalid


# Rows gathered at a time on CPU: small enough for the buffer to stay in cache between the gather
# and the scatter-add.
_CPU_CHUNK_BYTES = 4 << 20


def _chunk_rows(dim: int, device: torch.device) -> int:
    rows = max(1, _CPU_CHUNK_BYTES // (4 * dim))
    return rows if device.type == "cpu" else max(rows, 1 << 16)


def _extract(extractor, batch: _Batch) -> torch.Tensor:
    """The batch's feature maps as ``[B*H*W, C]`` (checked against the batch's shape)."""
    height, width = batch.views[0].height, batch.views[0].width
    feats = extractor.extract(batch.views, height, width)
    if feats.ndim != 4 or tuple(feats.shape[:3]) != (len(batch.views), height, width):
        raise ValueError(
            f"extractor {getattr(extractor, 'name', extractor)!r} returned shape {list(feats.shape)}, "
            f"expected [{len(batch.views)}, {height}, {width}, C]"
        )
    return feats.reshape(-1, feats.shape[3])


def _add_pairs(sums: torch.Tensor, rows: torch.Tensor, flat: torch.Tensor, pixels: torch.Tensor) -> None:
    """``sums[rows[i]] += flat[pixels[i]]`` pair by pair, in cache-sized chunks; maps of another
    dtype (fp16, bf16) or device are converted a chunk at a time."""
    step = _chunk_rows(sums.shape[1], sums.device)
    gathered = torch.empty(min(step, rows.numel()), sums.shape[1], dtype=flat.dtype, device=flat.device)
    for start in range(0, rows.numel(), step):
        part = gathered[: min(step, rows.numel() - start)]
        torch.index_select(flat, 0, pixels[start : start + step], out=part)
        sums.index_add_(0, rows[start : start + step], part.to(device=sums.device, dtype=sums.dtype))


def _add_merged(sums: torch.Tensor, rows: torch.Tensor, flat: torch.Tensor, pixels: torch.Tensor) -> None:
    """The same sums for fp32 maps on the sums' device: per point, the batch's pixels are summed
    first (``embedding_bag``, one fused gather), then added once into the point's row."""
    points, per_point = torch.unique_consecutive(rows, return_counts=True)
    starts = torch.cumsum(per_point, 0) - per_point
    bounds = torch.cat([starts, starts.new_tensor([rows.numel()])]).tolist()
    step = _chunk_rows(sums.shape[1], sums.device)
    for start in range(0, points.numel(), step):
        stop = min(start + step, points.numel())
        first, last = bounds[start], bounds[stop]
        merged = F.embedding_bag(pixels[first:last], flat, starts[start:stop] - first, mode="sum")
        sums.index_add_(0, points[start:stop], merged)


def _accumulate(batches: list[_Batch], extractor, row_of: torch.Tensor, n_rows: int, device: torch.device):
    """Pass 2: extract each batch and add its pairs into fp32 sums ``[n_rows, C]`` (None if no batch)."""
    sums = None
    for batch in batches:
        flat = _extract(extractor, batch)
        if sums is None:
            sums = torch.zeros(n_rows, flat.shape[1], dtype=torch.float32, device=device)
        elif flat.shape[1] != sums.shape[1]:
            raise ValueError(f"feature dimension changed from {sums.shape[1]} to {flat.shape[1]}")
        pixels_per_view = flat.shape[0] // len(batch.views)
        rows = torch.cat([row_of[p] for p in batch.positions])
        pixels = torch.cat([pix + b * pixels_per_view for b, pix in enumerate(batch.pixels)])
        rows, by_row = torch.sort(rows, stable=True)
        pixels = pixels[by_row].to(flat.device)
        add = _add_merged if (flat.dtype, flat.device) == (sums.dtype, sums.device) else _add_pairs
        add(sums, rows, flat, pixels)
    return sums


def _mean_rows(sums: torch.Tensor, counts: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(sums[rows] / counts[rows]).to(dtype)`` as a CPU tensor, divided in place chunk by chunk."""
    out = torch.empty(rows.numel(), sums.shape[1], dtype=dtype)
    step = _chunk_rows(sums.shape[1], sums.device)
    for start in range(0, rows.numel(), step):
        part = rows[start : start + step]
        mean = sums.index_select(0, part).div_(counts[part].unsqueeze(1))
        out[start : start + part.numel()].copy_(mean)
    return out


def _extractor_device(extractor) -> torch.device:
    return torch.device(getattr(extractor, "device", "cpu"))


def fuse_views(
    xyz: np.ndarray,
    views: Iterable[View],
    extractor,
    params: FusionParams,
    device: torch.device | str | None = None,
) -> FusionResult:
    """Fuse the extractor's per-pixel features of ``views`` onto the points ``xyz`` ([N,3] world).

    Views are read once, in order, and projected first; views with invalid poses or that see no
    point are skipped (and counted). Then ``extractor.extract(batch, H, W)`` runs on batches of
    up to ``params.views_per_batch`` consecutive views of the same size, so only one batch of
    feature maps is alive at a time. Sums are fp32 over the seen points and counts int32, on
    ``device`` (default: the extractor's device).
    """
    device = torch.device(device) if device is not None else _extractor_device(extractor)
    xyz_t = torch.as_tensor(np.asarray(xyz, dtype=np.float64), device=device)
    if xyz_t.ndim != 2 or xyz_t.shape[1] != 3:
        raise ValueError(f"xyz must be [N,3], got {list(xyz_t.shape)}")
    n = xyz_t.shape[0]
    blocks = _PointBlocks(xyz_t)
    batches, n_no_points, n_invalid = _project_views(blocks, views, params)

    visible = [p for batch in batches for p in batch.positions]
    counts_morton = torch.bincount(torch.cat(visible), minlength=n) if visible else torch.zeros(n, device=device)
    counts_morton = counts_morton.to(torch.int32)
    seen_morton = counts_morton > 0
    row_of = torch.cumsum(seen_morton, 0) - 1  # Morton position -> row of the seen points' sums
    sums = _accumulate(batches, extractor, row_of, int(seen_morton.sum()), device)

    counts = torch.empty_like(counts_morton)
    counts[blocks.order] = counts_morton
    seen = counts > 0
    if sums is not None:
        position = torch.empty_like(blocks.order)
        position[blocks.order] = torch.arange(n, device=device)
        rows = row_of[position[seen]]  # the seen points' sum rows, in point order
        features = _mean_rows(sums, counts_morton[seen_morton], rows, params.output_dtype)
    else:
        features = torch.zeros(0, int(getattr(extractor, "feature_dim", 0)), dtype=params.output_dtype)
    n_views = counts.clamp(max=np.iinfo(np.uint16).max).cpu().numpy().astype(np.uint16)
    n_used = sum(len(batch.views) for batch in batches)
    return FusionResult(features, seen.cpu().numpy(), n_views, n_used, n_no_points, n_invalid)
