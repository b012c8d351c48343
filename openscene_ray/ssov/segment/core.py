"""Any 2D extractor as an open-vocabulary segmenter (pure torch; seed facts §3.1).

Per pixel, the argmax over the vocabulary's text embeddings of ``feature · text`` (pixels whose
feature is exactly zero carry no information and stay void); each vocabulary index present in
the image becomes one class-wise mask, a superpixel, numbered 1..K in ascending vocabulary order
as the original scripts do; a superpixel's embedding is the L2-normalised mean (equivalently, the
normalised sum) of its pixels' features; row 0 (void) is zero.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.kernel.scene import View
from openscene_ray.ssov.store import Superpixels, write_frame, write_scene_marker

__all__ = ["PIXEL_CHUNK", "segment_scene", "superpixels_from_features"]

PIXEL_CHUNK = 65536  # pixels scored against the vocabulary at a time


def _argmax_vocabulary(flat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """int64 ``[P]`` vocabulary index of each pixel feature row, -1 for all-zero rows."""
    out = torch.empty(flat.shape[0], dtype=torch.int64, device=flat.device)
    for start in range(0, flat.shape[0], PIXEL_CHUNK):
        chunk = flat[start : start + PIXEL_CHUNK].float()
        best = (chunk @ text.T).argmax(dim=1)
        best[(chunk != 0).sum(dim=1) == 0] = -1
        out[start : start + PIXEL_CHUNK] = best
    return out


def superpixels_from_features(features: torch.Tensor, text: torch.Tensor) -> Superpixels:
    """One image's superpixels from its per-pixel features ``[H, W, D]`` and the vocabulary's text
    embeddings ``[V, D]`` (any device; the result is numpy)."""
    if features.ndim != 3 or text.ndim != 2 or features.shape[2] != text.shape[1]:
        raise ValueError(f"expected features [H,W,D] and text [V,D], got {tuple(features.shape)} and {tuple(text.shape)}")
    height, width, dim = features.shape
    flat = features.reshape(-1, dim)
    text = text.to(flat.device, torch.float32)
    labels = _argmax_vocabulary(flat, text)
    present = torch.unique(labels[labels >= 0])  # sorted: superpixel k is the k-th present index
    lookup = torch.zeros(text.shape[0] + 1, dtype=torch.int64, device=flat.device)
    lookup[present + 1] = torch.arange(1, present.numel() + 1, device=flat.device)
    ids = lookup[labels + 1]  # -1 (void) -> lookup[0] = 0
    sums = torch.zeros(present.numel() + 1, dim, dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[0], PIXEL_CHUNK):
        sums.index_add_(0, ids[start : start + PIXEL_CHUNK], flat[start : start + PIXEL_CHUNK].float())
    embeddings = F.normalize(sums, dim=1)
    embeddings[0] = 0
    areas = torch.bincount(ids, minlength=present.numel() + 1)[1:]
    return Superpixels(
        ids=ids.reshape(height, width).to(torch.int32).cpu().numpy(),
        categories=present.to(torch.int32).cpu().numpy(),
        areas=areas.cpu().numpy().astype(np.int64),
        embeddings=embeddings.cpu().numpy(),
    )


def segment_scene(
    scene_id: str,
    views: Sequence[View],
    extractor,
    text: torch.Tensor,
    segments: str,
    fingerprint: dict,
    views_per_batch: int = 1,
) -> dict:
    """Segment every view with ``extractor`` against ``text`` and write the scene's frames, then its
    marker; returns the marker document (frames, superpixels per frame, seconds)."""
    start = time.perf_counter()
    frames, total_bytes = [], 0
    for first in range(0, len(views), views_per_batch):
        batch = list(views[first : first + views_per_batch])
        height, width = batch[0].height, batch[0].width
        with torch.no_grad():
            maps = extractor.extract(batch, height, width)
        for view, features in zip(batch, maps):
            sp = superpixels_from_features(features, text)
            total_bytes += write_frame(segments, scene_id, view.frame_id, sp)
            frames.append({"frame_id": view.frame_id, "width": width, "height": height, "superpixels": sp.count})
    document = {"scene_id": scene_id, "frames": frames, "fingerprint": fingerprint, "bytes": total_bytes,
                "seconds": time.perf_counter() - start}  # fmt: skip
    write_scene_marker(segments, scene_id, document)
    return document
