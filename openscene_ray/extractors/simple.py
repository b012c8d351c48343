"""Two model-free extractors: ``rgb`` (geometry checks on real data) and ``label-oracle`` (synthetic).

``rgb`` returns the colour image itself as 3 float channels in [0, 1] (value / 255).

``label-oracle`` gives every pixel the text embedding of its ground-truth class (views must carry a
``label`` map; 255 = ignore gets a zero feature), optionally box-blurred and with Gaussian noise
to imitate an imperfect 2D model. Class ``k`` uses the first prompt of the label set that maps to
``k`` (the class name itself for plain label sets).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.extractors.base import register_extractor
from openscene_ray.kernel.images import resize_color, resize_nearest
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.scene import IGNORE_LABEL, View
from openscene_ray.kernel.text import TextSpaceConfig, build_text_encoder

__all__ = ["LabelOracleExtractor", "RGBExtractor"]


class RGBExtractor:
    """Per-pixel RGB in [0, 1]; images of another size are resized bilinearly."""

    name = "rgb"
    feature_dim = 3
    text_model = "none"

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        """``[B, height, width, 3]`` float32 in [0, 1] on ``self.device``."""
        colors = np.stack([resize_color(v.color, width, height) for v in views])
        return torch.from_numpy(colors).to(self.device).float().div_(255.0)


class LabelOracleExtractor:
    """Text embedding of each pixel's ground-truth class, with optional blur and noise.

    Options: ``text``, the text-space config (``{label_set, encoder, options}``, e.g.
    ``{"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": 64, "seed": 0}}``),
    ``noise`` (std of Gaussian noise added per pixel and channel),
    ``blur`` (box-blur radius in pixels), ``seed`` (noise seed; the noise of a view depends only
    on the seed and its ``frame_id``), ``device``.
    """

    name = "label-oracle"

    def __init__(
        self,
        text: dict | TextSpaceConfig | None = None,
        noise: float = 0.0,
        blur: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        if noise < 0 or blur < 0:
            raise ValueError(f"label-oracle: noise and blur must be >= 0, got noise={noise}, blur={blur}")
        text = TextSpaceConfig.model_validate(text or {"encoder": "synthetic", "options": {}})
        labels = get_label_set(text.label_set)
        encoder = build_text_encoder(text.encoder, **text.options)
        prompts = labels.prompts()
        first_prompt: dict[int, int] = {}
        for i, cls in enumerate(labels.prompt_to_class()):
            first_prompt.setdefault(cls, i)
        embeddings = encoder.encode(prompts)[[first_prompt[k] for k in range(labels.num_classes)]]
        self.device = torch.device(device)
        self.num_classes = labels.num_classes
        self.feature_dim = int(embeddings.shape[1])
        # Row num_classes is the zero feature of ignored pixels.
        table = np.concatenate([embeddings, np.zeros((1, self.feature_dim), np.float32)])
        self._table = torch.from_numpy(table).to(self.device)
        self.noise = float(noise)
        self.blur = int(blur)
        self.seed = int(seed)
        self.text_model = text.spec()

    def _view_generator(self, view: View) -> torch.Generator:
        digest = hashlib.sha256(f"{self.seed}\x00{view.frame_id}".encode()).digest()
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        return generator

    def _label_indices(self, view: View, height: int, width: int) -> torch.Tensor:
        if view.label is None:
            raise ValueError(
                f"label-oracle: view {view.frame_id!r} has no label map; this extractor needs ground-truth "
                "label maps (synthetic data only)"
            )
        label = resize_nearest(np.asarray(view.label), width, height).astype(np.int64)
        bad = (label >= self.num_classes) & (label != IGNORE_LABEL)
        if bad.any():
            raise ValueError(
                f"label-oracle: view {view.frame_id!r} has labels {sorted(np.unique(label[bad]).tolist())} "
                f"outside the label set's {self.num_classes} classes (and 255 = ignore)"
            )
        label[label == IGNORE_LABEL] = self.num_classes
        return torch.from_numpy(label).to(self.device)

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        """``[B, height, width, feature_dim]`` float32 on ``self.device``."""
        out = []
        for view in views:
            feat = self._table[self._label_indices(view, height, width)]  # [H, W, C]
            if self.blur:
                k = 2 * self.blur + 1
                chw = feat.permute(2, 0, 1).unsqueeze(0)
                chw = F.avg_pool2d(chw, k, stride=1, padding=self.blur, count_include_pad=False)
                feat = chw.squeeze(0).permute(1, 2, 0)
            if self.noise:
                noise = torch.randn(feat.shape, generator=self._view_generator(view), device=self.device)
                feat = feat + self.noise * noise
            out.append(feat)
        return torch.stack(out).contiguous()


register_extractor("rgb", RGBExtractor)
register_extractor("label-oracle", LabelOracleExtractor)
