"""``clip-dense``: per-pixel features of an open_clip ViT in its joint text space (MaskCLIP).

MaskCLIP (Zhou et al., ECCV 2022; the ViT backbone of its reference implementation) keeps every
layer of the image encoder except the query-key attention of the last block: there each token only
takes its own value embedding through the attention's output projection. With ``y = ln_1(x)``:

    x = x + out_proj(v_proj(y))      # value path, no softmax(q k^T) mixing
    x = x + mlp(ln_2(x))             # the residual and the MLP are kept
    f = normalize(ln_post(x) @ proj) # the global embedding's own norm and projection, per patch

so a patch feature is what the class-token path would produce if that patch were the query and
attended only to itself. Patch features are reshaped to the patch grid and upsampled bilinearly to
the requested size (so pixels between patch centres have norm slightly below 1).

Input: each image is resized (bicubic, antialiased) to ``input_size`` (default: the model's square
input, e.g. 224 for ViT-B-32, 336 for ViT-L-14-336) and normalised with the model's mean/std. Any
other ``input_size`` (H, W), multiples of the patch size, keeps more detail or the aspect ratio;
the positional embeddings are then interpolated bicubically to the new patch grid, as MaskCLIP
does. The matching text encoder is ``build_text_encoder("open_clip", **text_encoder_options)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from openscene_ray.extractors.base import register_extractor
from openscene_ray.kernel.clip import load_clip_model, resolve_clip_weights
from openscene_ray.kernel.scene import View
from openscene_ray.kernel.text import text_model_spec

__all__ = ["ClipDenseExtractor"]


class ClipDenseExtractor:
    """Dense MaskCLIP features ``[B, H, W, embed_dim]`` of an open_clip ViT (see the module doc)."""

    name = "clip-dense"

    def __init__(
        self,
        arch: str = "ViT-B-32",
        checkpoint: str | None = None,
        random_init: bool = False,
        device: str = "cpu",
        seed: int = 0,
        quick_gelu: bool | None = None,
        input_size: tuple[int, int] | None = None,
        batch_size: int = 8,
        model_cache: str | None = None,
    ):
        weights = resolve_clip_weights(arch, checkpoint, random_init, seed, quick_gelu, model_cache)
        self.device = torch.device(device)
        self.model = load_clip_model(weights, self.device)
        self.visual = _check_supported(self.model.visual, arch)
        self.feature_dim = int(self.visual.proj.shape[1])
        self.text_model = text_model_spec("open_clip", {"arch": arch})
        self.text_encoder_options = {
            "arch": arch, "checkpoint": checkpoint, "random_init": random_init, "seed": seed, "quick_gelu": quick_gelu,
        }  # fmt: skip
        self.patch_size = tuple(self.visual.patch_size)
        self.native_grid = tuple(self.visual.grid_size)
        size = tuple(input_size) if input_size is not None else tuple(self.visual.image_size)
        if len(size) != 2 or any(s <= 0 or s % p for s, p in zip(size, self.patch_size)):
            raise ValueError(
                f"clip-dense {arch}: input_size {size} must be positive multiples of the patch size {self.patch_size}"
            )
        self.input_size = size
        cfg = getattr(self.visual, "preprocess_cfg", None) or {}
        self._mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN), device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD), device=self.device).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self._pos = self._positional_embedding(size[0] // self.patch_size[0], size[1] // self.patch_size[1])

    def _positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        pos = self.visual.positional_embedding
        if (grid_h, grid_w) == self.native_grid:
            return pos
        gh0, gw0 = self.native_grid
        grid = pos[1:].reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)
        return torch.cat([pos[:1], grid], dim=0)

    def preprocess(self, colors: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` images (any sizes) to a normalised ``[B, 3, *input_size]`` batch."""
        batch = []
        for color in colors:
            image = torch.from_numpy(np.ascontiguousarray(color)).to(self.device)
            image = image.permute(2, 0, 1)[None].float() / 255.0
            image = F.interpolate(image, size=self.input_size, mode="bicubic", align_corners=False, antialias=True)
            batch.append(image.clamp_(0.0, 1.0))
        return (torch.cat(batch) - self._mean) / self._std

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm MaskCLIP features ``[B, grid_h, grid_w, embed_dim]`` of a preprocessed batch."""
        visual = self.visual
        dtype = visual.conv1.weight.dtype
        x = visual.conv1(images.to(dtype))
        batch, width, grid_h, grid_w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(dtype).view(1, 1, width).expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1) + self._pos.to(dtype)
        x = visual.ln_pre(x)
        blocks = visual.transformer.resblocks
        batch_first = visual.transformer.batch_first
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        last = blocks[-1]
        x = x + last.ls_1(_value_path(last.attn, last.ln_1(x)))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        features = visual.ln_post(x[:, 1:]) @ visual.proj
        features = F.normalize(features.float(), dim=-1)
        return features.reshape(batch, grid_h, grid_w, -1)

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        out = []
        for start in range(0, len(views), self.batch_size):
            chunk = views[start : start + self.batch_size]
            grid = self.patch_features(self.preprocess([v.color for v in chunk]))
            with torch.no_grad():
                up = F.interpolate(grid.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
            out.append(up.permute(0, 2, 3, 1))
        if not out:
            return torch.zeros((0, height, width, self.feature_dim), device=self.device)
        return torch.cat(out).contiguous()


def _value_path(attn: torch.nn.MultiheadAttention, y: torch.Tensor) -> torch.Tensor:
    """``out_proj(v_proj(y))`` of a packed or separate-weight ``nn.MultiheadAttention``."""
    dim = attn.embed_dim
    if attn.in_proj_weight is not None:
        weight = attn.in_proj_weight[2 * dim :]
    else:
        weight = attn.v_proj_weight
    bias = attn.in_proj_bias[2 * dim :] if attn.in_proj_bias is not None else None
    return attn.out_proj(F.linear(y, weight, bias))


def _check_supported(visual, arch: str):
    ok = (
        isinstance(visual, VisionTransformer)
        and getattr(visual, "attn_pool", None) is None
        and visual.proj is not None
        and all(isinstance(b, ResidualAttentionBlock) for b in visual.transformer.resblocks)
        and isinstance(visual.transformer.resblocks[-1].attn, torch.nn.MultiheadAttention)
    )
    if not ok:
        raise NotImplementedError(
            f"clip-dense supports open_clip ViTs with standard attention blocks, a class token and a "
            f"projection (e.g. ViT-B-32, ViT-B-16, ViT-L-14-336); {arch} is not one"
        )
    return visual


register_extractor("clip-dense", ClipDenseExtractor)
