"""FiT3D's losses (seed-systems facts §2.2–2.3): Stage I's feature + RGB objective and Stage II's masked L1.

* Stage I: ``L1(decoded features, target) + (1 - lambda) * L1(rgb) + lambda * (1 - SSIM(rgb))``
  with ``lambda = 0.2`` (3DGS's D-SSIM weight) and feature weight 1.
* Stage II: ``sum(|out - target| * mask) / (sum(mask) * D)``.

SSIM is the 3DGS one: an 11x11 Gaussian window (sigma 1.5) per channel, ``C1 = 0.01^2``,
``C2 = 0.03^2``, zero padding, averaged over every pixel and channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_l1", "ssim", "stage1_loss"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _window(channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two images ``[C, H, W]`` (or ``[B, C, H, W]``) in [0, 1]."""
    a4, b4 = (a[None], b[None]) if a.ndim == 3 else (a, b)
    channels = a4.shape[1]
    window = _window(channels, a4.device, a4.dtype)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=SSIM_WINDOW // 2, groups=channels)

    mu_a, mu_b = blur(a4), blur(b4)
    var_a = blur(a4 * a4) - mu_a**2
    var_b = blur(b4 * b4) - mu_b**2
    cov = blur(a4 * b4) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).mean()


def stage1_loss(features, target, rgb, image, lambda_dssim: float = 0.2, feature_weight: float = 1.0):
    """``(total, parts)``: Stage I's loss of decoded ``features [D,H,W]`` against ``target`` and of
    the rendered ``rgb [3,H,W]`` against ``image``; ``parts`` holds the three terms as floats."""
    feature_l1 = (features - target).abs().mean()
    rgb_l1 = (rgb - image).abs().mean()
    dssim = 1.0 - ssim(rgb, image)
    total = feature_weight * feature_l1 + (1.0 - lambda_dssim) * rgb_l1 + lambda_dssim * dssim
    parts = {"feature_l1": feature_l1, "rgb_l1": rgb_l1, "dssim": dssim}
    return total, {k: float(v.detach()) for k, v in parts.items()}


def masked_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Stage II's loss: ``sum(|output - target| * mask) / (sum(mask) * D)`` for ``[B, D, h, w]``
    features and a ``[B, 1, h, w]`` (or ``[B, h, w]``) mask; zero (with a gradient) when the mask is empty."""
    if mask.ndim == output.ndim - 1:
        mask = mask.unsqueeze(1)
    mask = mask.to(output.dtype)
    total = ((output - target).abs() * mask).sum()
    weight = mask.sum() * output.shape[1]
    return total / weight.clamp(min=1e-12) if float(weight) > 0 else total * 0.0
