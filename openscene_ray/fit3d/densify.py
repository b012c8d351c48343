"""3DGS's adaptive density control for the feature Gaussians (used by Stage I as FiT3D does).

Statistics per Gaussian, gathered after every backward pass while densification runs: the summed
norm of the view-space position gradient (in NDC units, as 3DGS measures it: pixel gradients times
half the image size), the number of views that drew it, and its largest screen radius. Every
``interval`` iterations:

* **clone** Gaussians whose mean gradient reaches the threshold and whose largest scale is at most
  ``percent_dense`` of the scene extent (same parameters);
* **split** the large ones into 2 samples drawn from the Gaussian, scales divided by 1.6;
* **prune** Gaussians with opacity below ``min_opacity`` and, after the first opacity reset, those
  wider than ``max_screen_size`` pixels or 0.1 of the extent.

Every ``opacity_reset_every`` iterations opacities are clamped to at most 0.01. New and reset
parameters start with fresh Adam moments; removed rows leave the optimizer with their parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openscene_ray.fit3d.gaussians import GaussianModel
from openscene_ray.fit3d.raster import RasterOutput, quat_to_rotmat

__all__ = ["PARAM_NAMES", "DensityStats", "densify_and_prune", "reset_opacity"]

PARAM_NAMES = ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation", "sem")
SPLIT = 2


@dataclass
class DensityStats:
    grad_sum: torch.Tensor  # [N]
    count: torch.Tensor  # [N]
    max_radii: torch.Tensor  # [N]

    @classmethod
    def zeros(cls, num: int, device) -> DensityStats:
        return cls(*(torch.zeros(num, device=device) for _ in range(3)))

    def update(self, out: RasterOutput, width: int, height: int) -> None:
        """Add one rendered view (its ``means2d`` must have had ``retain_grad()``)."""
        if out.means2d is None or out.means2d.grad is None:
            return
        visible = out.radii > 0
        scale = torch.tensor([0.5 * width, 0.5 * height], device=out.means2d.device)
        norm = (out.means2d.grad * scale).norm(dim=-1)
        self.grad_sum[visible] += norm[visible]
        self.count[visible] += 1
        self.max_radii[visible] = torch.maximum(self.max_radii[visible], out.radii[visible].float())


def _swap(model: GaussianModel, optimizer: torch.optim.Optimizer, rows, extra: dict[str, torch.Tensor] | None) -> None:
    """Keep ``rows`` (bool mask) of every Gaussian parameter and append ``extra`` rows, in the model
    and in its Adam state."""
    for group in optimizer.param_groups:
        name = group.get("name")
        if name not in PARAM_NAMES:
            continue
        old = group["params"][0]
        data = old.data[rows]
        added = None if extra is None else extra[name].detach()
        new = nn.Parameter(data if added is None else torch.cat([data, added]))
        state = optimizer.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                kept = state[key][rows]
                state[key] = kept if added is None else torch.cat([kept, torch.zeros_like(added)])
            optimizer.state[new] = state
        group["params"][0] = new
        setattr(model, name, new)


def _rows(model: GaussianModel, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: getattr(model, name).data[mask] for name in PARAM_NAMES}


def _split_rows(model: GaussianModel, mask: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    rows = {name: value.repeat(SPLIT, *([1] * (value.ndim - 1))) for name, value in _rows(model, mask).items()}
    stds = torch.exp(rows["scaling"])
    samples = torch.randn(stds.shape, generator=generator, device=stds.device) * stds
    rotation = quat_to_rotmat(rows["rotation"])
    rows["xyz"] = (rotation @ samples.unsqueeze(-1)).squeeze(-1) + rows["xyz"]
    rows["scaling"] = torch.log(stds / (0.8 * SPLIT))
    return rows


@torch.no_grad()
def densify_and_prune(model, optimizer, stats: DensityStats, settings, extent: float, screen_limit: bool,
                      generator: torch.Generator) -> DensityStats:  # fmt: skip
    """One density-control step (module docstring); returns fresh statistics for the new set."""
    grads = torch.nan_to_num(stats.grad_sum / stats.count, nan=0.0)
    large = torch.exp(model.scaling.data).max(dim=1).values > settings.percent_dense * extent
    hot = grads >= settings.grad_threshold
    if settings.max_gaussians is not None:
        room = max(0, settings.max_gaussians - model.num)
        hot &= torch.cumsum(hot.long() * torch.where(large, SPLIT - 1, 1), 0) <= room
    clone, split = hot & ~large, hot & large
    new = [_rows(model, clone), _split_rows(model, split, generator)]
    extra = {name: torch.cat([part[name] for part in new]) for name in PARAM_NAMES}
    prune = torch.sigmoid(model.opacity.data[:, 0]) < settings.min_opacity
    prune |= split
    if screen_limit:
        prune |= stats.max_radii > settings.max_screen_size
        prune |= torch.exp(model.scaling.data).max(dim=1).values > 0.1 * extent
    _swap(model, optimizer, ~prune, extra)
    if model.num == 0:
        raise RuntimeError("density control pruned every Gaussian; lower densify.min_opacity")
    return DensityStats.zeros(model.num, model.xyz.device)


@torch.no_grad()
def reset_opacity(model: GaussianModel, optimizer: torch.optim.Optimizer) -> None:
    """Opacities to at most 0.01, with fresh Adam moments for them."""
    capped = torch.minimum(torch.sigmoid(model.opacity.data), torch.full_like(model.opacity.data, 0.01))
    model.opacity.data.copy_(torch.log(capped / (1 - capped)))
    for group in optimizer.param_groups:
        if group.get("name") == "opacity":
            state = optimizer.state.get(group["params"][0])
            if state:
                state["exp_avg"].zero_()
                state["exp_avg_sq"].zero_()
