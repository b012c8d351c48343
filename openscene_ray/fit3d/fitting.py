"""Stage I's per-scene cores (no Ray): fitting feature Gaussians, fusing features onto points, and
scoring a representation on held-out views.

Gaussians (seed-systems facts §2.2): Adam (eps 1e-15) with 3DGS's per-attribute learning rates and
FiT3D's for ``sem`` and the decoder; the position rate decays exponentially from ``init`` to
``final`` times the cameras' extent (1.1 times the largest distance of a camera centre from their
mean, 3DGS's); one view per iteration, a fresh random order every pass over the views; the SH
degree grows by one every ``sh_increase_every`` iterations; density control as :mod:`.densify`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from openscene_ray.fit3d.densify import DensityStats, densify_and_prune, reset_opacity
from openscene_ray.fit3d.gaussians import FeatureDecoder, GaussianModel
from openscene_ray.fit3d.lift.config import GaussianSettings, PointSettings
from openscene_ray.fit3d.losses import stage1_loss
from openscene_ray.fit3d.representation import GaussianScene, PointScene
from openscene_ray.fit3d.views import TargetView, upsample
from openscene_ray.fusion.core import FusionParams, fuse_views
from openscene_ray.kernel.scene import View

__all__ = ["cameras_extent", "fit_gaussians", "fuse_points", "heldout_quality", "position_lr"]


def cameras_extent(views: Sequence[TargetView]) -> float:
    """3DGS's scene extent: 1.1 times the largest distance of a camera centre from their mean
    (1.0 when all cameras coincide)."""
    centres = np.stack([v.camera.center for v in views])
    radius = float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) * 1.1
    return radius if radius > 0 else 1.0


def position_lr(step: int, settings: GaussianSettings, extent: float) -> float:
    """The exponentially decayed position learning rate at ``step``."""
    t = min(max(step / settings.position_lr_max_steps, 0.0), 1.0)
    log_lr = (1 - t) * math.log(settings.position_lr_init) + t * math.log(settings.position_lr_final)
    return math.exp(log_lr) * extent


def _optimizer(model: GaussianModel, decoder: FeatureDecoder, s: GaussianSettings, extent: float):
    groups = [("xyz", [model.xyz], position_lr(0, s, extent)), ("f_dc", [model.f_dc], s.feature_lr),
              ("f_rest", [model.f_rest], s.feature_rest_lr), ("opacity", [model.opacity], s.opacity_lr),
              ("scaling", [model.scaling], s.scaling_lr), ("rotation", [model.rotation], s.rotation_lr),
              ("sem", [model.sem], s.sem_lr), ("decoder", list(decoder.parameters()), s.decoder_lr)]  # fmt: skip
    return torch.optim.Adam([{"params": p, "lr": lr, "name": n} for n, p, lr in groups], lr=0.0, eps=s.adam_eps)


def _initial_points(xyz: np.ndarray, rgb: np.ndarray, settings: GaussianSettings, seed: int):
    if settings.max_points is None or xyz.shape[0] <= settings.max_points:
        return xyz, rgb
    keep = np.sort(np.random.default_rng(seed).choice(xyz.shape[0], settings.max_points, replace=False))
    return xyz[keep], rgb[keep]


def _density_step(state: dict[str, Any], out, view: TargetView, iteration: int, settings: GaussianSettings) -> None:
    """After a backward pass: statistics, then (at their intervals) densify/prune and opacity reset."""
    d = settings.densify
    if d is None or iteration > d.until_iter:
        return
    model, optimizer = state["model"], state["optimizer"]
    state["stats"].update(out, view.camera.width, view.camera.height)
    if iteration > d.from_iter and iteration % d.interval == 0:
        screen_limit = iteration > d.opacity_reset_every
        state["stats"] = densify_and_prune(model, optimizer, state["stats"], d, state["extent"], screen_limit,
                                           state["generator"])  # fmt: skip
    if iteration % d.opacity_reset_every == 0:
        reset_opacity(model, optimizer)


def _step(state: dict[str, Any], view: TargetView, iteration: int, settings: GaussianSettings) -> dict[str, float]:
    model, decoder, optimizer = state["model"], state["decoder"], state["optimizer"]
    for group in optimizer.param_groups:
        if group["name"] == "xyz":
            group["lr"] = position_lr(iteration, settings, state["extent"])
    if iteration % settings.sh_increase_every == 0:
        model.active_sh_degree = min(model.active_sh_degree + 1, model.sh_degree)
    out, _ = model.render(view.camera, with_rgb=True, backend=settings.backend)
    if settings.densify is not None and out.means2d is not None and out.means2d.requires_grad:
        out.means2d.retain_grad()
    features = decoder(out.image[3:])
    loss, parts = stage1_loss(features, view.target(), out.image[:3], view.image, settings.lambda_dssim,
                              settings.feature_weight)  # fmt: skip
    loss.backward()
    _density_step(state, out, view, iteration, settings)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **parts}


def fit_gaussians(xyz: np.ndarray, rgb: np.ndarray, views: Sequence[TargetView], settings: GaussianSettings,
                  seed: int = 0, device: torch.device | str = "cpu") -> tuple[GaussianScene, list[dict[str, Any]]]:  # fmt: skip
    """Feature Gaussians of one scene fitted to ``views`` (their images and backbone targets);
    returns the scene and a loss history (one entry every ``log_every`` iterations)."""
    torch.manual_seed(seed)
    xyz, rgb = _initial_points(xyz, rgb, settings, seed)
    model = GaussianModel.from_points(xyz, rgb, settings.sh_degree, settings.low_dim, settings.init_opacity).to(device)
    decoder = FeatureDecoder(settings.low_dim, int(views[0].tokens.shape[0])).to(device)
    extent = cameras_extent(views)
    state = {"model": model, "decoder": decoder, "optimizer": _optimizer(model, decoder, settings, extent),
             "stats": DensityStats.zeros(model.num, device), "extent": extent,
             "generator": torch.Generator(device=device).manual_seed(seed)}  # fmt: skip
    rng, order, history, window = np.random.default_rng(seed), [], [], []
    started = time.perf_counter()
    for iteration in range(1, settings.iterations + 1):
        if not order:
            order = list(rng.permutation(len(views)))
        window.append(_step(state, views[order.pop()], iteration, settings))
        if iteration % settings.log_every == 0 or iteration == settings.iterations:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            history.append({"iteration": iteration, **mean, "gaussians": model.num,
                            "seconds": round(time.perf_counter() - started, 2)})  # fmt: skip
            window = []
    model.requires_grad_(False)
    decoder.requires_grad_(False)
    return GaussianScene(model, decoder, settings.min_alpha, settings.backend), history


class _TokenExtractor:
    """The views' precomputed backbone tokens as a fusion extractor (upsampled to the view size)."""

    def __init__(self, tokens: dict[str, torch.Tensor], device):
        self.tokens, self.device = tokens, torch.device(device)
        self.feature_dim = int(next(iter(tokens.values())).shape[0])
        self.name, self.text_model = "backbone-tokens", "none"

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        stacked = torch.stack([self.tokens[v.frame_id] for v in views])
        return upsample(stacked, height, width).permute(0, 2, 3, 1).contiguous()


def fuse_points(xyz: np.ndarray, views: Sequence[View], tokens: dict[str, torch.Tensor], params: FusionParams,
                settings: PointSettings) -> PointScene:  # fmt: skip
    """The backbone's features fused onto the points (the fusion stage's mean over the views that
    see a point), kept for the seen points."""
    device = next(iter(tokens.values())).device
    result = fuse_views(xyz, views, _TokenExtractor(tokens, device), params)
    seen = torch.from_numpy(np.flatnonzero(result.mask))
    return PointScene(torch.from_numpy(np.asarray(xyz, np.float64))[seen], result.features.float(), seen,
                      torch.from_numpy(result.n_views.astype(np.int32))[seen], settings.radius)  # fmt: skip


@torch.no_grad()
def heldout_quality(scene, views: Sequence[TargetView]) -> dict[str, float]:
    """Rendered features against the backbone's own on ``views``, over the rendered mask:
    mean L1 per channel, mean cosine per pixel, and the mask's coverage (NaN without views)."""
    l1, cosine, coverage = [], [], []
    for view in views:
        features, mask = scene.render_features(view.camera)
        target = view.target().to(features.device)
        coverage.append(float(mask.float().mean()))
        if not bool(mask.any()):
            continue
        rendered, wanted = features[:, mask], target[:, mask]
        l1.append(float((rendered - wanted).abs().mean()))
        cosine.append(float(torch.nn.functional.cosine_similarity(rendered, wanted, dim=0).mean()))
    nan = float("nan")
    return {"heldout_l1": float(np.mean(l1)) if l1 else nan, "heldout_cosine": float(np.mean(cosine)) if cosine else nan,
            "heldout_coverage": float(np.mean(coverage)) if coverage else nan, "heldout_views": len(views)}  # fmt: skip
