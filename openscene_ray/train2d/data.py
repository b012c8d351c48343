"""Training views for 2D training: small Ray Data rows in, augmented crops out.

A row names one view with a label map: ``scene_id, frame_id, color_uri, label_uri, width,
height`` (the manifest's image size). Images never enter Ray blocks; :class:`ViewCollate` reads
them through the storage layer inside the Train worker and applies LSeg's training augmentation
(PyTorch-Encoding's ``_sync_transform``, which LSeg's datasets use):

1. horizontal flip with probability 0.5;
2. random scale: the long side becomes a random integer in ``[lo, hi] x base_size`` (bilinear for
   the image, nearest for the labels; the short side keeps the aspect ratio, rounded);
3. if a side is shorter than the crop, pad bottom/right (image 0, i.e. normalised -1; labels 255);
4. a random ``crop x crop`` window.

Images are normalised with mean = std = 0.5. Labels outside the label set (and 255) are ignored.
Each view's augmentation is seeded by (seed, epoch, scene, frame): reproducible whatever the
rank, batching or collate thread.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray.data.collate_fn import NumpyBatchCollateFn

from openscene_ray.kernel import images, storage
from openscene_ray.kernel.manifest import SceneRecord
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.models.lseg import normalize_images

__all__ = ["AugmentSettings", "ViewCollate", "augment_view", "read_view", "view_rows"]

ROW_KEYS = ("scene_id", "frame_id", "color_uri", "label_uri", "width", "height")


def view_rows(records: Iterable[SceneRecord], stride: int = 1) -> list[dict[str, Any]]:
    """One row per view with a label map (every ``stride``-th view of each scene)."""
    rows = []
    for record in records:
        for view in record.views[::stride]:
            if view.label_uri is None:
                raise ValueError(
                    f"scene {record.scene_id!r} view {view.frame_id!r}: no label map; 2D training needs "
                    "label maps for every view (e.g. the synthetic world)"
                )
            rows.append({"scene_id": record.scene_id, "frame_id": view.frame_id, "color_uri": view.color_uri,
                         "label_uri": view.label_uri, "width": record.image_width, "height": record.image_height})  # fmt: skip
    return rows


def read_view(row: dict[str, Any], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(color uint8 [H, W, 3], labels uint8 [H, W])`` at the row's size; labels outside
    ``[0, num_classes)`` become 255 (ignored)."""
    width, height = int(row["width"]), int(row["height"])
    color = images.decode_color(storage.read_bytes(str(row["color_uri"])), str(row["color_uri"]))
    label = images.decode_label(storage.read_bytes(str(row["label_uri"])), str(row["label_uri"]))
    color = images.resize_color(color, width, height)
    label = images.resize_nearest(label, width, height).astype(np.int64)
    label[label >= num_classes] = IGNORE_LABEL
    return color, label.astype(np.uint8)


@dataclass(frozen=True)
class AugmentSettings:
    """The augmentation's parameters (``base_size=None``: 2x the image's long side)."""

    crop_size: int
    base_size: int | None
    scale_range: tuple[float, float]


def augment_view(color: np.ndarray, label: np.ndarray, settings: AugmentSettings, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One training crop: ``(image float32 [3, c, c] normalised, labels int64 [c, c])``."""
    height, width = label.shape
    if rng.random() < 0.5:
        color, label = color[:, ::-1], label[:, ::-1]
    base = settings.base_size or 2 * max(height, width)
    low, high = settings.scale_range
    long_side = int(rng.integers(int(base * low), int(base * high) + 1))
    if height > width:
        size = (long_side, int(width * long_side / height + 0.5))
    else:
        size = (int(height * long_side / width + 0.5), long_side)
    image = torch.from_numpy(np.array(color, dtype=np.float32)).permute(2, 0, 1)[None]
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)[0]
    target = torch.from_numpy(np.array(label, dtype=np.float32))[None, None]
    target = F.interpolate(target, size=size, mode="nearest")[0, 0].long()
    crop = settings.crop_size
    pad_h, pad_w = max(crop - size[0], 0), max(crop - size[1], 0)
    image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    target = F.pad(target, (0, pad_w, 0, pad_h), value=IGNORE_LABEL)
    y0 = int(rng.integers(0, image.shape[1] - crop + 1))
    x0 = int(rng.integers(0, image.shape[2] - crop + 1))
    crop_image = image[None, :, y0 : y0 + crop, x0 : x0 + crop] / 255.0
    return normalize_images(crop_image)[0], target[y0 : y0 + crop, x0 : x0 + crop]


def view_rng(seed: int, epoch: int, scene_id: str, frame_id: str) -> np.random.Generator:
    """The augmentation generator of one view in one epoch."""
    return np.random.default_rng([seed, epoch, zlib.crc32(scene_id.encode()), zlib.crc32(frame_id.encode())])


class ViewCollate(NumpyBatchCollateFn):
    """Ray Data collate: a numpy batch of view rows -> ``{"images": [B,3,c,c], "labels": [B,c,c]}``.

    Make a new instance per epoch (the epoch seeds the augmentation). Thread-safe (no state).
    """

    def __init__(self, settings: AugmentSettings, num_classes: int, seed: int, epoch: int):
        self.settings = settings
        self.num_classes = num_classes
        self.seed = seed
        self.epoch = epoch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        crops, targets = [], []
        for i in range(len(batch["scene_id"])):
            row = {key: batch[key][i] for key in ROW_KEYS}
            color, label = read_view(row, self.num_classes)
            rng = view_rng(self.seed, self.epoch, str(row["scene_id"]), str(row["frame_id"]))
            image, target = augment_view(color, label, self.settings, rng)
            crops.append(image)
            targets.append(target)
        return {"images": torch.stack(crops), "labels": torch.stack(targets)}
