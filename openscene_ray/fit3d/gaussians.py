"""FiT3D's feature Gaussians (seed-systems facts §2.2): 3DGS attributes plus a low-dimensional feature.

Every Gaussian holds a position, spherical-harmonics colour (DC ``[N,1,3]`` plus rest
``[N,(d+1)^2-1,3]`` for SH degree ``d``, 3 in FiT3D), an opacity (stored as a logit, activated by a
sigmoid), scales (stored as logs, activated by exp), a rotation quaternion (normalised on use) and
**``sem``**, a ``[N, 64]`` feature initialised to zeros and rasterised like colour, with no
activation. A scene's Gaussians start from its point cloud: colours from the points' RGB, scales
from the mean squared distance to the 3 nearest neighbours (3DGS's ``distCUDA2``), opacity 0.1, the
identity rotation.

The per-scene decoder (``feat_cnn``) is one ``Conv2d(64 -> D, 3x3, padding 1, no bias)`` that maps the
rendered 64-channel map to the backbone's width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from openscene_ray.fit3d.camera import Camera
from openscene_ray.fit3d.raster import RasterOutput, rasterize

__all__ = ["SH_C0", "FeatureDecoder", "GaussianModel", "eval_sh", "rgb_to_sh"]

# Real spherical-harmonics normalisation constants, bands 0-3 (the 3DGS basis order).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)  # fmt: skip


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """The DC coefficient of colours in [0, 1]."""
    return (rgb - 0.5) / SH_C0


def _sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """``[N, (degree+1)^2]`` basis values at unit directions ``[N, 3]``."""
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                  SH_C2[4] * (xx - yy)]  # fmt: skip
    if degree >= 3:
        basis += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                  SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                  SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]  # fmt: skip
    return torch.stack(basis, dim=-1)


def eval_sh(coefficients: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """RGB ``[N, 3]`` of SH ``coefficients [N, K, 3]`` (first ``(degree+1)^2`` used) at ``dirs``;
    ``max(value + 0.5, 0)`` as 3DGS."""
    basis = _sh_basis(torch.nn.functional.normalize(dirs, dim=-1), degree)
    k = basis.shape[-1]
    return ((coefficients[:, :k] * basis.unsqueeze(-1)).sum(1) + 0.5).clamp(min=0.0)


def nearest_neighbour_scales(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """``log(sqrt(mean squared distance to the k nearest neighbours))`` per point (min 1e-7)."""
    from scipy.spatial import cKDTree

    if xyz.shape[0] < 2:
        return np.full(xyz.shape[0], np.log(1e-2), np.float32)
    k = min(k, xyz.shape[0] - 1)
    dist, _ = cKDTree(xyz).query(xyz, k=k + 1)
    mean_sq = np.maximum((dist[:, 1:] ** 2).mean(1), 1e-7)
    return np.log(np.sqrt(mean_sq)).astype(np.float32)


class GaussianModel(nn.Module):
    """The Gaussians of one scene (see the module docstring); parameters are named as FiT3D's."""

    def __init__(self, num: int, sh_degree: int = 3, feature_dim: int = 64):
        super().__init__()
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
        self.sh_degree = sh_degree
        self.active_sh_degree = 0
        self.xyz = nn.Parameter(torch.zeros(num, 3))
        self.f_dc = nn.Parameter(torch.zeros(num, 1, 3))
        self.f_rest = nn.Parameter(torch.zeros(num, (sh_degree + 1) ** 2 - 1, 3))
        self.opacity = nn.Parameter(torch.zeros(num, 1))  # logit
        self.scaling = nn.Parameter(torch.zeros(num, 3))  # log
        self.rotation = nn.Parameter(torch.zeros(num, 4))  # w, x, y, z
        self.sem = nn.Parameter(torch.zeros(num, feature_dim))

    @classmethod
    def from_points(cls, xyz: np.ndarray, rgb: np.ndarray, sh_degree: int = 3, feature_dim: int = 64,
                    init_opacity: float = 0.1) -> GaussianModel:  # fmt: skip
        """Gaussians at the points (float32 [N,3], uint8 RGB [N,3]) with FiT3D's initial values."""
        model = cls(xyz.shape[0], sh_degree, feature_dim)
        with torch.no_grad():
            model.xyz.copy_(torch.from_numpy(np.asarray(xyz, np.float32)))
            model.f_dc.copy_(rgb_to_sh(torch.from_numpy(np.asarray(rgb, np.float32) / 255.0)).unsqueeze(1))
            model.opacity.fill_(float(np.log(init_opacity / (1 - init_opacity))))
            model.scaling.copy_(torch.from_numpy(nearest_neighbour_scales(np.asarray(xyz, np.float32)))[:, None].expand(-1, 3))
            model.rotation[:, 0] = 1.0
        return model

    @property
    def num(self) -> int:
        return int(self.xyz.shape[0])

    def activated(self) -> dict[str, torch.Tensor]:
        """Opacity ``[N]`` (sigmoid), scales ``[N,3]`` (exp), unit quaternions ``[N,4]``."""
        return {"opacity": torch.sigmoid(self.opacity[:, 0]), "scales": torch.exp(self.scaling),
                "rotation": torch.nn.functional.normalize(self.rotation, dim=-1)}  # fmt: skip

    def colors(self, camera: Camera) -> torch.Tensor:
        """View-dependent RGB ``[N, 3]`` seen from ``camera`` (SH up to the active degree)."""
        centre = torch.as_tensor(camera.center, dtype=self.xyz.dtype, device=self.xyz.device)
        shs = torch.cat([self.f_dc, self.f_rest], dim=1)
        return eval_sh(shs, self.xyz - centre, self.active_sh_degree)

    def render(self, camera: Camera, with_rgb: bool = True, backend: str = "auto") -> tuple[RasterOutput, int]:
        """Rasterise ``[rgb (3), sem]`` (or ``sem`` alone); returns the output and where sem starts."""
        act = self.activated()
        channels = [self.colors(camera), self.sem] if with_rgb else [self.sem]
        out = rasterize(self.xyz, act["rotation"], act["scales"], act["opacity"], torch.cat(channels, dim=1),
                        camera, backend=backend)  # fmt: skip
        return out, 3 if with_rgb else 0


class FeatureDecoder(nn.Sequential):
    """FiT3D's ``feat_cnn``: ``Conv2d(low_dim -> D, 3, padding=1, bias=False)`` (state key ``0.weight``)."""

    def __init__(self, low_dim: int, out_dim: int):
        super().__init__(nn.Conv2d(low_dim, out_dim, kernel_size=3, padding=1, bias=False))

    def forward(self, rendered: torch.Tensor) -> torch.Tensor:
        """``[64, H, W]`` or ``[B, 64, H, W]`` -> the same with ``D`` channels."""
        if rendered.ndim == 3:
            return super().forward(rendered[None])[0]
        return super().forward(rendered)
