"""``lseg``: per-pixel LSeg features with the OpenScene extraction recipe (seed-systems facts §1.4).

The recipe, per image of ``H x W`` (the trick behind 49 vs 31 mIoU on ScanNet):

1. normalise with mean = std = 0.5 (pixels in [-1, 1]);
2. ``base = crop = 2 x`` the long side; resize so the long side is ``base`` (bilinear,
   ``align_corners=True``; short side ``int(short * base / long + 0.5)``);
3. pad bottom/right to a ``crop x crop`` square with -1 (normalised black);
4. run the network on the square and on its horizontal flip, flip the second output back and
   **sum** the two (no re-normalisation: norms lie in [0, 2]);
5. the output has stride 2, so ``[0:H, 0:W]`` of it is the image at its original resolution.

Sides of the square must divide by 32 (the network's constraint): the reference's image sizes
(long sides that are multiples of 16) give such squares; for other sizes the square grows to the
next multiple of 32 with more -1 padding, which the crop in step 5 removes again.

Weights (``checkpoint``, a local path or a storage URI): the released ``demo_e200.ckpt``
(PyTorch Lightning, read with the restricted unpickler; configuration ``lseg-vitl16-384``, text
side: its own CLIP ViT-B/32 tower, ``text_model = open_clip:ViT-B-32``) or a ``train-2d`` export
folder (configuration and text encoder read from its ``checkpoint.json``; the shards then record
that text encoder, e.g. ``synthetic:dim=32,seed=0``). ``random_init=True`` with a ``config`` name
builds random weights instead (tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.extractors.base import register_extractor
from openscene_ray.kernel.scene import View
from openscene_ray.kernel.text import build_text_encoder, text_model_spec
from openscene_ray.models.lseg import INPUT_MULTIPLE, LSegNet, build_lseg, normalize_images

__all__ = ["LSegExtractor", "lseg_features", "recipe_input"]


def recipe_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` images -> the recipe's normalised, resized, padded squares ``[B, 3, S, S]``.

    Normalising after the resize and the zero padding equals the recipe's order (normalise, resize,
    pad with -mean/std): the normalisation is affine per channel and bilinear weights sum to 1."""
    height, width = images.shape[1:3]
    x = images.permute(0, 3, 1, 2).float().div(255.0)
    base = 2 * max(height, width)
    if height > width:
        size = (base, int(width * base / height + 0.5))
    else:
        size = (int(height * base / width + 0.5), base)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    side = -(-base // INPUT_MULTIPLE) * INPUT_MULTIPLE
    return normalize_images(F.pad(x, (0, side - size[1], 0, side - size[0]), value=0.0))


@torch.no_grad()
def lseg_features(net: LSegNet, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """The recipe's features ``[B, C, H, W]`` of uint8 ``[B, H, W, 3]`` images (one size)."""
    height, width = images.shape[1:3]
    squares = recipe_input(images)
    out = net(squares)
    if flip:
        out = out + net(squares.flip(-1)).flip(-1)
    return out[:, :, :height, :width]


class LSegExtractor:
    """LSeg features ``[B, H, W, C]`` with the extraction recipe (see the module docstring).

    Options: ``checkpoint`` (export folder or Lightning ``.ckpt``, local or remote), ``config``
    (configuration name: needed for ``random_init``; for a Lightning checkpoint it defaults to
    ``lseg-vitl16-384``), ``random_init`` + ``seed`` (random weights, no text alignment),
    ``device``, ``batch_size`` (images per forward; the flip doubles it), ``flip`` (the recipe's
    flip sum; on by default), ``model_cache`` (local folder for copies of remote checkpoints).
    """

    name = "lseg"

    def __init__(
        self,
        checkpoint: str | None = None,
        config: str | None = None,
        random_init: bool = False,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 2,
        flip: bool = True,
        model_cache: str | None = None,
    ):
        from openscene_ray.models.lseg_checkpoint import load_lseg

        if batch_size < 1:
            raise ValueError(f"lseg: batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        if random_init:
            self.net, self.text_encoder, self.text_encoder_options = _random_net(checkpoint, config, seed)
        elif checkpoint is None:
            raise ValueError("lseg: no checkpoint given. Pass checkpoint=<export folder or .ckpt>, or "
                             "random_init=True with a config name to use random weights explicitly")  # fmt: skip
        else:
            self.net, info = load_lseg(checkpoint, config, cache_dir=model_cache)
            self.text_encoder, self.text_encoder_options = info.text_encoder, info.text_options
        self.net = self.net.to(self.device).eval()
        self.feature_dim = int(self.net.config.out_dim)
        self.text_model = text_model_spec(self.text_encoder, self.text_encoder_options) if self.text_encoder else "none"
        self.batch_size = batch_size
        self.flip = flip

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings ``[K, C]`` of ``prompts`` in the features' text space."""
        if self.net.clip_pretrained is not None:
            return self.net.encode_text(list(prompts)).cpu().numpy()
        if self.text_encoder is None:
            raise ValueError("lseg: a randomly initialised network has no text space")
        return build_text_encoder(self.text_encoder, **self.text_encoder_options).encode(prompts)

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        """``[len(views), height, width, C]`` float32; features are resized only if the images are
        not ``height x width``."""
        out = []
        for start in range(0, len(views), self.batch_size):
            chunk = [np.ascontiguousarray(v.color) for v in views[start : start + self.batch_size]]
            for group in _same_size_runs(chunk):
                feats = lseg_features(self.net, torch.from_numpy(np.stack(group)).to(self.device), self.flip)
                if feats.shape[-2:] != (height, width):
                    feats = F.interpolate(feats, size=(height, width), mode="bilinear", align_corners=False)
                out.append(feats.permute(0, 2, 3, 1).float())
        if not out:
            return torch.zeros((0, height, width, self.feature_dim), device=self.device)
        return torch.cat(out).contiguous()


def _same_size_runs(images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Consecutive runs of images of one size (the recipe batches one size at a time)."""
    runs: list[list[np.ndarray]] = []
    for image in images:
        if runs and runs[-1][0].shape == image.shape:
            runs[-1].append(image)
        else:
            runs.append([image])
    return runs


def _random_net(checkpoint: str | None, config: str | None, seed: int):
    """A randomly initialised network of ``config`` and its (unaligned) text side."""
    if checkpoint is not None or config is None:
        raise ValueError("lseg: random_init=True needs a config name and no checkpoint")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_lseg(config)
    if net.config.clip_arch:
        return net, "open_clip", {"arch": net.config.clip_arch}
    return net, None, {}


register_extractor("lseg", LSegExtractor)
