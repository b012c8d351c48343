"""The per-scene feature field: a learnable multiresolution hash-grid encoding + a small MLP, pure torch.

This is UFF's feature branch (facts §4.1) without the NeRF around it: the scene's geometry is
known (its points and depth maps), so the field is queried at surface points directly, where the
original volume-renders it along rays with detached densities. Like the original: a hash-grid
encoding of the position (``levels`` x ``features_per_level``), an MLP of ``hidden_layers`` x
``hidden`` ReLU units without biases to ``feature_dim`` (128), then ``Linear(feature_dim, 256)``
(``seg_proj``); the contrasted feature is the L2-normalised 256-d output, and its pre-normalisation
norm feeds the ``(‖f‖ - 1)²`` regulariser.

The encoding (Instant-NGP): level ``l`` has resolution ``floor(base * b^l)`` with ``b`` spreading
``base .. max_resolution`` over the levels; a level whose ``(res + 1)³`` grid fits the table is
indexed densely, finer ones by the spatial hash ``x ⊕ 2654435761·y ⊕ 805459861·z mod T``. Each
point trilinearly interpolates its cell's 8 corner vectors. Positions are first mapped into the
unit cube by the scene's bounding box (:class:`PositionNormaliser`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["FeatureField", "HashGridEncoding", "PositionNormaliser", "build_field"]

_PRIMES = (1, 2654435761, 805459861)


class PositionNormaliser:
    """Maps world positions into [0, 1]³ by the bounding box of ``xyz`` (aspect kept, 5% margin)."""

    def __init__(self, xyz: np.ndarray):
        xyz = np.asarray(xyz, dtype=np.float64)
        low, high = xyz.min(axis=0), xyz.max(axis=0)
        self.center = (low + high) / 2
        self.scale = float(max((high - low).max(), 1e-6) * 1.05)

    def __call__(self, xyz: np.ndarray) -> np.ndarray:
        unit = (np.asarray(xyz, dtype=np.float64) - self.center) / self.scale + 0.5
        return np.clip(unit, 0.0, 1.0).astype(np.float32)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding of points in [0, 1]³ to ``levels * features_per_level`` values."""

    def __init__(self, levels=16, features_per_level=4, log2_table_size=17, base_resolution=16, max_resolution=512,
                 sparse: bool = False):  # fmt: skip
        super().__init__()
        self.sparse = sparse  # sparse table gradients (for torch.optim.SparseAdam)
        self.levels, self.features = levels, features_per_level
        self.table_size = 2**log2_table_size
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        resolution = [int(math.floor(base_resolution * growth**level)) for level in range(levels)]
        self.register_buffer("resolution", torch.tensor(resolution, dtype=torch.int64), persistent=False)
        dense = [(r + 1) ** 3 <= self.table_size for r in resolution]
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        table = torch.empty(levels * self.table_size, features_per_level).uniform_(-1e-4, 1e-4)
        self.table = nn.Parameter(table)

    @property
    def output_dim(self) -> int:
        return self.levels * self.features

    def _axis_terms(self, cell: torch.Tensor) -> list[torch.Tensor]:
        """Per axis, the two corner coordinates' index terms [N, L, 2] (dense or hashed per level)."""
        stride = self.resolution + 1  # [L]
        dense_factor = torch.stack([torch.ones_like(stride), stride, stride * stride])  # [3, L]
        terms = []
        for axis in range(3):
            coordinate = cell[:, :, axis, None] + torch.tensor([0, 1], device=cell.device)  # [N, L, 2]
            dense = coordinate * dense_factor[axis][None, :, None]
            hashed = coordinate * _PRIMES[axis]
            terms.append(torch.where(self.dense[None, :, None], dense, hashed))
        return terms

    def forward(self, unit_xyz: torch.Tensor) -> torch.Tensor:
        n = unit_xyz.shape[0]
        scaled = unit_xyz.clamp(0.0, 1.0 - 1e-6)[:, None, :] * self.resolution[None, :, None].to(unit_xyz.dtype)
        cell = torch.floor(scaled)
        frac = scaled - cell  # [N, L, 3]
        x, y, z = self._axis_terms(cell.long())
        dense = self.dense[None, :, None, None, None]
        summed = x[..., :, None, None] + y[..., None, :, None] + z[..., None, None, :]
        xored = x[..., :, None, None] ^ y[..., None, :, None] ^ z[..., None, None, :]
        index = torch.where(dense, summed, xored) % self.table_size  # [N, L, 2, 2, 2]
        index = index + (torch.arange(self.levels, device=unit_xyz.device) * self.table_size)[None, :, None, None, None]
        w = torch.stack([1 - frac, frac], dim=-1)  # [N, L, 3, 2]
        weight = w[:, :, 0, :, None, None] * w[:, :, 1, None, :, None] * w[:, :, 2, None, None, :]
        values = nn.functional.embedding(index.reshape(n, self.levels, 8), self.table, sparse=self.sparse)
        return (values * weight.reshape(n, self.levels, 8, 1)).sum(2).reshape(n, self.output_dim)


class FeatureField(nn.Module):
    """Hash grid → bias-free ReLU MLP → ``feature_dim`` → ``Linear(feature_dim, output_dim)``."""

    def __init__(self, encoding: HashGridEncoding, hidden=128, hidden_layers=2, feature_dim=128, output_dim=256,
                 negative_slope: float = 0.0):  # fmt: skip
        super().__init__()
        self.encoding = encoding
        layers: list[nn.Module] = []
        width = encoding.output_dim
        for _ in range(hidden_layers):
            activation = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
            layers += [nn.Linear(width, hidden, bias=False), activation]
            width = hidden
        layers.append(nn.Linear(width, feature_dim, bias=False))
        self.mlp = nn.Sequential(*layers)
        self.seg_proj = nn.Linear(feature_dim, output_dim)

    def forward(self, unit_xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised features [N, output_dim], pre-normalisation norms [N])."""
        raw = self.seg_proj(self.mlp(self.encoding(unit_xyz)))
        norm = raw.norm(dim=-1)
        return raw / norm.clamp_min(1e-12)[:, None], norm

    @torch.no_grad()
    def features(self, unit_xyz: np.ndarray, device: torch.device, chunk: int = 65536) -> np.ndarray:
        """Normalised features float32 [N, output_dim] of many points, in chunks."""
        out = []
        for start in range(0, len(unit_xyz), chunk):
            batch = torch.as_tensor(unit_xyz[start : start + chunk], device=device)
            out.append(self(batch)[0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.seg_proj.out_features), np.float32)


def build_field(config, seed: int) -> FeatureField:
    """The field described by a :class:`~openscene_ray.hierarchy.config.FieldConfig`, seeded."""
    torch.manual_seed(seed)
    encoding = HashGridEncoding(
        config.levels, config.features_per_level, config.log2_table_size, config.base_resolution,
        config.max_resolution, config.sparse_table,
    )
    return FeatureField(
        encoding, config.hidden, config.hidden_layers, config.feature_dim, config.output_dim, config.negative_slope
    )
