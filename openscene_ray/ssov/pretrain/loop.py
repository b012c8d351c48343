"""The TMP worker: Res16UNet34C's normalised per-voxel features contrasted with the superpixels'
mask embeddings and the vocabulary's text embeddings (:func:`~openscene_ray.ssov.losses.tmp_loss`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from openscene_ray.models import build_model
from openscene_ray.ssov.losses import tmp_loss
from openscene_ray.ssov.pretrain.config import PretrainConfig
from openscene_ray.ssov.pretrain.data import TmpCollate
from openscene_ray.ssov.training import sgd_optimizer, worker_loop

__all__ = ["LoopSettings", "TmpObjective", "train_loop_per_worker"]


@dataclass(frozen=True)
class LoopSettings:
    """What every worker of TMP pre-training needs (config, text embeddings, phrase groups)."""

    config: PretrainConfig
    text: np.ndarray  # float32 [V, D]: the vocabulary's text embeddings
    same_group: np.ndarray  # bool [V, V]: the dictionary's groups


class TmpObjective:
    """The TMP step: the point features against the paired superpixels' mask embeddings and the
    vocabulary's text embeddings (:func:`tmp_loss`); the text tensors are moved to each device once."""

    def __init__(self, settings: LoopSettings):
        self.config = settings.config
        self.settings = settings
        self._device_tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def collate(self, epoch: int) -> TmpCollate:
        c = self.config
        return TmpCollate(c.grid, c.model.in_channels, c.augment, c.seed, epoch, c.segments, len(self.settings.text))

    def _text(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_tensors:
            self._device_tensors[key] = (torch.from_numpy(self.settings.text).to(device),
                                         torch.from_numpy(self.settings.same_group).to(device))  # fmt: skip
        return self._device_tensors[key]

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        features = model(batch["coords"], batch["feats"], int(batch["num_scenes"]))
        text, same_group = self._text(features.device)
        c = self.config
        return tmp_loss(features, batch["pair_point"], batch["pair_superpixel"], batch["mask_embeddings"],
                        batch["phrases"], text, same_group, c.temperature, c.alpha_image, c.alpha_text)  # fmt: skip


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train entry point; ``loop_config = {"settings": LoopSettings}``."""
    settings: LoopSettings = loop_config["settings"]
    config = settings.config
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    return worker_loop(config, model, sgd_optimizer(model, config), TmpObjective(settings))
