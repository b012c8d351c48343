"""Stage II's samples (no Ray): view rows, their deterministic split into rounds and ranks, and one
sample's image, rendered target and mask, flipped together.

A row names one view of a lifted scene: ``scene_id, frame_id, color_uri, width, height,
intrinsics[9], cam_to_world[16], lifted_uri``. Images never travel in rows; workers read them
through the storage layer. The epoch's order is a permutation seeded by ``(seed, epoch)``; round
``r`` of ``R`` takes its ``r``-th slice, padded by wrapping to a multiple of the world size (as
PyTorch's DistributedSampler pads) so that every rank runs the same number of steps, and rank
``k`` takes every ``world``-th sample from the ``k``-th. A rerun, a resumed run and a restarted
worker group therefore train on the same samples in the same order.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from openscene_ray.fit3d.camera import Camera
from openscene_ray.fit3d.representation import load_representation
from openscene_ray.kernel import images, storage
from openscene_ray.kernel.manifest import SceneRecord

__all__ = ["Sample", "SceneCache", "flip_sample", "load_sample", "round_samples", "view_rows"]


def view_rows(records: Iterable[SceneRecord], lifted_uri, stride: int = 1) -> list[dict[str, Any]]:
    """One row per view (every ``stride``-th) of ``records``; ``lifted_uri(scene_id)`` names the scene's file."""
    return [
        {"scene_id": r.scene_id, "frame_id": v.frame_id, "color_uri": v.color_uri, "width": r.image_width,
         "height": r.image_height, "intrinsics": list(v.intrinsics), "cam_to_world": list(v.cam_to_world),
         "lifted_uri": lifted_uri(r.scene_id)}
        for r in records
        for v in r.views[::stride]
    ]


def round_samples(count: int, seed: int, epoch: int, round_index: int, rounds: int, rank: int, world: int) -> list[int]:
    """This rank's sample positions in round ``round_index`` of ``epoch`` (module docstring)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    chunk = list(order[round_index * count // rounds : (round_index + 1) * count // rounds])
    if not chunk:
        return []
    padded = chunk + [chunk[i % len(chunk)] for i in range(-len(chunk) % world)]
    return [int(i) for i in padded[rank::world]]


class SceneCache:
    """The last few lifted scenes, loaded on ``device`` (least recently used evicted)."""

    def __init__(self, size: int, device, min_alpha: float | None, backend: str):
        self.size, self.device, self.min_alpha, self.backend = size, device, min_alpha, backend
        self._scenes: OrderedDict[str, Any] = OrderedDict()

    def get(self, uri: str):
        if uri in self._scenes:
            self._scenes.move_to_end(uri)
            return self._scenes[uri]
        scene, _ = load_representation(uri, self.device, self.min_alpha, self.backend)
        self._scenes[uri] = scene
        while len(self._scenes) > self.size:
            self._scenes.popitem(last=False)
        return scene


@dataclass
class Sample:
    """One training view: the image, its rendered target and mask (flipped together or not)."""

    image: torch.Tensor  # uint8 [H, W, 3]
    target: torch.Tensor  # float [D, h, w] at the render size
    mask: torch.Tensor  # float [h, w] in {0, 1}
    flipped: bool


def flip_sample(sample: Sample) -> Sample:
    """The horizontally flipped sample: image, target and mask flipped together."""
    return Sample(sample.image.flip(1), sample.target.flip(-1), sample.mask.flip(-1), not sample.flipped)


def sample_rng(seed: int, epoch: int, scene_id: str, frame_id: str) -> np.random.Generator:
    """The generator of one view's flip in one epoch."""
    return np.random.default_rng([seed, epoch, zlib.crc32(scene_id.encode()), zlib.crc32(frame_id.encode())])


def read_color(row: dict[str, Any]) -> np.ndarray:
    """The row's colour image, uint8 ``[height, width, 3]`` (resized to the manifest's size)."""
    uri = str(row["color_uri"])
    color = images.decode_color(storage.read_bytes(uri), uri)
    return images.resize_color(color, int(row["width"]), int(row["height"]))


@torch.no_grad()
def load_sample(row: dict[str, Any], cache: SceneCache, render_scale: float, flip: bool) -> Sample:
    """Read the view, render its target under no-grad at the view's camera, flip if asked."""
    width, height = int(row["width"]), int(row["height"])
    camera = Camera.from_view(np.reshape(row["cam_to_world"], (4, 4)), np.reshape(row["intrinsics"], (3, 3)),
                              width, height, render_scale)  # fmt: skip
    target, mask = cache.get(str(row["lifted_uri"])).render_features(camera)
    sample = Sample(torch.from_numpy(read_color(row)), target.float(), mask.float(), False)
    return flip_sample(sample) if flip else sample
