"""Rasterising 3D Gaussians (3DGS, Kerbl et al. 2023): a pure-torch CPU reference and gsplat on CUDA.

The reference follows the 3DGS equations and runs anywhere torch runs (autograd included):

1. **EWA projection.** A Gaussian with mean ``x``, rotation ``q`` and scales ``s`` has the world
   covariance ``S = R(q) diag(s)^2 R(q)^T``. In the camera frame, ``t = W x + w`` and
   ``S' = W S W^T``; the perspective projection's Jacobian at ``t`` (with ``t_x/t_z``, ``t_y/t_z``
   clamped to 1.3 times the field of view, as 3DGS does) gives the image covariance
   ``S2 = J S' J^T + 0.3 I`` (the low-pass dilation) and the mean ``(fx t_x/t_z + cx, fy t_y/t_z + cy)``
   in pixels, pixel centres at integer coordinates (:mod:`.camera`). Gaussians with ``t_z`` at or
   below ``near`` are dropped; each covers the pixels within 3 standard deviations (radius
   ``ceil(3 sqrt(lambda_max))``).
2. **Sorting by depth.** Every (Gaussian, covered pixel) pair is sorted by pixel, then by the
   Gaussian's ``t_z``.
3. **Front-to-back alpha compositing.** ``alpha = min(0.99, o * exp(-d^T S2^-1 d / 2))``; pairs with
   ``alpha < 1/255`` are skipped; ``C = sum_i c_i alpha_i T_i`` with ``T_i = prod_{j<i} (1 - alpha_j)``,
   and a pixel stops at the Gaussian that would bring its transmittance below 1e-4 (3DGS's early
   termination). The background is black.

``backend="gsplat"`` calls ``gsplat.rasterization`` (its CUDA kernels; "classic" mode, the same 0.3
dilation, pixel centres shifted by 0.5 to its convention). gsplat's own torch reference still needs
its CUDA extension (``rasterize_to_indices_in_range``) and nerfacc, so it does not run on CPU;
``backend="auto"`` picks gsplat on CUDA tensors when it imports, the torch reference otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openscene_ray.fit3d.camera import Camera

__all__ = ["MAX_PAIRS", "Projected", "RasterOutput", "project_gaussians", "quat_to_rotmat", "rasterize"]

EPS2D = 0.3  # 3DGS's low-pass dilation of the image covariance (pixels^2)
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4  # early termination: a pixel stops before its transmittance falls below this
FOV_CLAMP = 1.3
MAX_PAIRS = 60_000_000  # (Gaussian, pixel) pairs one torch rasterisation may hold


@dataclass
class Projected:
    """The Gaussians that survive projection (``index`` into the inputs) in image space."""

    index: torch.Tensor  # int64 [M]
    means2d: torch.Tensor  # [M, 2] pixels (u, v)
    conics: torch.Tensor  # [M, 3] (a, b, c) of the inverse image covariance [[a, b], [b, c]]
    depths: torch.Tensor  # [M] camera z
    radii: torch.Tensor  # int64 [M] pixels


@dataclass
class RasterOutput:
    image: torch.Tensor  # [C, H, W]
    alpha: torch.Tensor  # [H, W] accumulated opacity
    means2d: torch.Tensor | None = None  # [N, 2] (torch backend: for densification statistics)
    radii: torch.Tensor | None = None  # int64 [N]; 0 for Gaussians that were not drawn


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[N, 3, 3]`` of quaternions ``[N, 4]`` (w, x, y, z; normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)  # fmt: skip


def _jacobian(t: torch.Tensor, k: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[M, 2, 3]`` Jacobians of the pinhole projection at camera points ``t`` (clamped as 3DGS)."""
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    tan_x, tan_y = 0.5 * width / fx.abs(), 0.5 * height / fy.abs()
    x_pos, x_neg = (width - cx) / fx.abs() + 0.3 * tan_x, cx / fx.abs() + 0.3 * tan_x
    y_pos, y_neg = (height - cy) / fy.abs() + 0.3 * tan_y, cy / fy.abs() + 0.3 * tan_y
    if fx < 0:  # a horizontally flipped camera: the image's right side is the camera's left
        x_pos, x_neg = x_neg, x_pos
    z = t[:, 2]
    tx = z * (t[:, 0] / z).clamp(-x_neg, x_pos)
    ty = z * (t[:, 1] / z).clamp(-y_neg, y_pos)
    zero = torch.zeros_like(z)
    row0 = torch.stack([fx / z, zero, -fx * tx / (z * z)], dim=-1)
    row1 = torch.stack([zero, fy / z, -fy * ty / (z * z)], dim=-1)
    return torch.stack([row0, row1], dim=1)


def project_gaussians(means, quats, scales, camera: Camera, near: float = 0.01, opacities=None) -> Projected:
    """EWA projection of ``N`` Gaussians into ``camera`` (step 1 of the module docstring).

    With ``opacities`` the radius shrinks to where ``o * exp(-r^2 / 2 lambda_max)`` reaches 1/255
    (never past 3 standard deviations): beyond it no pixel's alpha reaches 1/255, so the image
    is the same and the pairs are fewer."""
    w2c, k = camera.tensors(means.device)
    w2c, k = w2c.to(means.dtype), k.to(means.dtype)
    t_all = means @ w2c[:3, :3].T + w2c[:3, 3]
    index = torch.nonzero(t_all[:, 2] > near).squeeze(1)
    t = t_all[index]
    rot = quat_to_rotmat(quats[index])
    m = rot * scales[index].unsqueeze(1)  # R diag(s)
    cov_cam = w2c[:3, :3] @ (m @ m.transpose(1, 2)) @ w2c[:3, :3].T
    jac = _jacobian(t, k, camera.width, camera.height)
    cov2d = jac @ cov_cam @ jac.transpose(1, 2)
    a, b, c = cov2d[:, 0, 0] + EPS2D, cov2d[:, 0, 1], cov2d[:, 1, 1] + EPS2D
    det = a * c - b * b
    valid = det > 0
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - det).clamp(min=0.1))
    extent = torch.full_like(lam, 3.0)
    if opacities is not None:
        opacity = opacities.detach()[index]
        extent = torch.sqrt(2.0 * torch.log((opacity / ALPHA_MIN).clamp(min=1.0))).clamp(max=3.0)
    radii = torch.ceil(extent * torch.sqrt(lam)).long()
    u = k[0, 0] * t[:, 0] / t[:, 2] + k[0, 2]
    v = k[1, 1] * t[:, 1] / t[:, 2] + k[1, 2]
    means2d = torch.stack([u, v], dim=-1)
    rd = radii.to(means.dtype)
    on_image = (u + rd >= -0.5) & (u - rd <= camera.width - 0.5) & (v + rd >= -0.5) & (v - rd <= camera.height - 0.5)
    keep = valid & on_image & (radii > 0)
    return Projected(index[keep], means2d[keep], conics[keep], t[keep, 2], radii[keep])


def _pairs(proj: Projected, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gaussian, pixel)`` index pairs: every pixel inside each Gaussian's bounding square."""
    centre = torch.round(proj.means2d.detach()).long()
    x0 = (centre[:, 0] - proj.radii).clamp(0, width - 1)
    x1 = (centre[:, 0] + proj.radii).clamp(0, width - 1)
    y0 = (centre[:, 1] - proj.radii).clamp(0, height - 1)
    y1 = (centre[:, 1] + proj.radii).clamp(0, height - 1)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    counts = bw * bh
    total = int(counts.sum())
    if total > MAX_PAIRS:
        raise ValueError(f"rasterisation needs {total} Gaussian-pixel pairs (> {MAX_PAIRS}); render smaller "
                         "images or fewer/smaller Gaussians, or use the gsplat backend on a GPU")  # fmt: skip
    gaussian = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=counts.device) - first[gaussian]
    px = x0[gaussian] + local % bw[gaussian]
    py = y0[gaussian] + local // bw[gaussian]
    return gaussian, py * width + px


def _composite(proj: Projected, colors: torch.Tensor, opacities: torch.Tensor, width: int, height: int):
    """Steps 2 and 3: ``(image [C, H*W], alpha [H*W])`` of the projected Gaussians."""
    gaussian, pixel = _pairs(proj, width, height)
    px = (pixel % width).to(colors.dtype)
    py = torch.div(pixel, width, rounding_mode="floor").to(colors.dtype)
    d = torch.stack([px, py], dim=-1) - proj.means2d[gaussian]
    con = proj.conics[gaussian]
    power = -0.5 * (con[:, 0] * d[:, 0] ** 2 + con[:, 2] * d[:, 1] ** 2) - con[:, 1] * d[:, 0] * d[:, 1]
    alpha = (opacities[gaussian] * torch.exp(power)).clamp(max=ALPHA_MAX)
    keep = (power <= 0) & (alpha >= ALPHA_MIN)
    gaussian, pixel, alpha = gaussian[keep], pixel[keep], alpha[keep]
    depth_rank = torch.empty_like(proj.radii)
    depth_rank[torch.argsort(proj.depths.detach(), stable=True)] = torch.arange(proj.radii.numel(), device=pixel.device)
    order = torch.argsort(pixel * max(1, proj.radii.numel()) + depth_rank[gaussian])
    gaussian, pixel, alpha = gaussian[order], pixel[order], alpha[order]
    # Exclusive cumulative log-transmittance within each pixel's run (float64: exact enough over
    # the whole image's pairs).
    log_keep = torch.log1p(-alpha.double())
    inclusive = torch.cumsum(log_keep, 0)
    starts = torch.ones_like(pixel, dtype=torch.bool)
    starts[1:] = pixel[1:] != pixel[:-1]
    run = torch.cumsum(starts.long(), 0) - 1
    before_run = (inclusive - log_keep)[starts][run]
    transmittance = torch.exp(inclusive - log_keep - before_run).to(alpha.dtype)
    after = transmittance * (1 - alpha)
    weight = torch.where(after >= T_MIN, alpha * transmittance, torch.zeros_like(alpha))
    # image = W @ colors with the sparse pixel-by-Gaussian weight matrix W: no [pairs, C] product
    weights = torch.sparse_coo_tensor(torch.stack([pixel, gaussian]), weight, (width * height, colors.shape[0]),
                                      check_invariants=False)  # fmt: skip
    image = torch.sparse.mm(weights, colors).T
    acc = torch.zeros(width * height, dtype=colors.dtype, device=colors.device).index_add(0, pixel, weight)
    return image, acc


def _rasterize_torch(means, quats, scales, opacities, colors, camera: Camera, near: float) -> RasterOutput:
    proj = project_gaussians(means, quats, scales, camera, near, opacities)
    width, height = camera.width, camera.height
    if proj.index.numel() == 0:
        image = colors.new_zeros(colors.shape[1], height, width) + 0 * colors.sum()
        return RasterOutput(image, colors.new_zeros(height, width), None, torch.zeros_like(means[:, 0], dtype=torch.long))
    image, acc = _composite(proj, colors[proj.index], opacities[proj.index], width, height)
    radii = torch.zeros(means.shape[0], dtype=torch.long, device=means.device)
    radii[proj.index] = proj.radii
    means2d = torch.zeros(means.shape[0], 2, dtype=means.dtype, device=means.device).index_put((proj.index,), proj.means2d)
    return RasterOutput(image.reshape(-1, height, width), acc.reshape(height, width), means2d, radii)


def _rasterize_gsplat(means, quats, scales, opacities, colors, camera: Camera, near: float) -> RasterOutput:
    import gsplat

    w2c, k = camera.tensors(means.device)
    k = k.clone()
    k[0, 2] += 0.5  # gsplat's pixel centres sit at +0.5
    k[1, 2] += 0.5
    rendered, alphas, meta = gsplat.rasterization(
        means, torch.nn.functional.normalize(quats, dim=-1), scales, opacities, colors, w2c[None], k[None],
        camera.width, camera.height, near_plane=near, eps2d=EPS2D, packed=False, rasterize_mode="classic",
    )  # fmt: skip
    radii = meta["radii"][0]
    radii = radii.max(-1).values if radii.ndim == 2 else radii
    means2d = meta.get("means2d")
    return RasterOutput(rendered[0].permute(2, 0, 1), alphas[0, ..., 0], None if means2d is None else means2d[0],
                        radii.long())  # fmt: skip


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize(means, quats, scales, opacities, colors, camera: Camera, near: float = 0.01,
              backend: str = "auto") -> RasterOutput:  # fmt: skip
    """Render ``colors`` ``[N, C]`` (any channels) of Gaussians ``means [N,3]``, ``quats [N,4]``
    (w, x, y, z), ``scales [N,3]`` and ``opacities [N]`` (both activated) into ``camera``.

    ``backend``: ``torch`` (the reference), ``gsplat`` (CUDA) or ``auto`` (module docstring)."""
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"unknown rasteriser backend {backend!r}; use auto, torch or gsplat")
    if backend == "auto":
        backend = "gsplat" if means.is_cuda and _gsplat_available() else "torch"
    if backend == "gsplat":
        if not means.is_cuda:
            raise ValueError("the gsplat backend needs CUDA tensors; use backend=torch on CPU")
        return _rasterize_gsplat(means, quats, scales, opacities, colors, camera, near)
    return _rasterize_torch(means, quats, scales, opacities, colors, camera, near)
