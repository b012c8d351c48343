"""``openseg``: per-pixel OpenSeg features (768-d, CLIP ViT-L/14@336px text space).

The model is a TensorFlow 2 SavedModel (a local folder or a storage URI such as ``s3://``, copied
once per node into the model cache). Each image is JPEG-encoded and passed to
``signatures['serving_default'](inp_image_bytes=<scalar string>, inp_text_emb=<zeros>)``. OpenSeg
resizes it so its long side is 640 and pads bottom/right to 640x640; of the outputs
``ppixel_ave_feat`` [1,640,640,C] and ``image_info`` [[H,W],[640,640],[sy,sx],[0,0]] we keep the
valid region ``[:H*sy, :W*sx]`` (floored after a 1e-3 tolerance, so float error never drops a row)
and resize it (nearest, pixel centres) to the requested size.

Tiling (``tile=True``, off by default as in the reference): an image whose long side exceeds
``tile_size`` is cut into tiles of at most ``tile_size`` pixels per side that overlap by at least
``tile_overlap`` pixels and are spread evenly (1920x1280 with overlap 0 gives the community
recipe's six 640x640 patches). Each tile runs at OpenSeg's native scale; its features are blended
into the full-resolution canvas with weights that ramp linearly across each overlap (they sum to 1
there), the canvas is divided by the weight sum and resized (nearest) to the requested size. The
canvas is only evaluated at the pixels that the nearest resize samples, so a 1920x1280x768 canvas
is never materialised.

Import order: importing torchvision or open_clip after tensorflow aborts the process. This module
imports torchvision first and tensorflow only when an extractor is built, so any process that
imports it can still load open_clip later. TF GPU memory growth is enabled before the first op.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision  # noqa: F401  (must be loaded before tensorflow, see the module docstring)

from openscene_ray.extractors.base import register_extractor
from openscene_ray.kernel import storage
from openscene_ray.kernel.clip import model_cache_dir
from openscene_ray.kernel.images import encode_jpeg
from openscene_ray.kernel.model_specs import model_spec
from openscene_ray.kernel.scene import View
from openscene_ray.kernel.text import text_model_spec

__all__ = ["OpenSegExtractor", "axis_tiles", "tile_grid"]

log = logging.getLogger(__name__)
OPENSEG_TEXT_DIM = model_spec("openseg").feature_dim


def axis_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, size)`` of evenly spread tiles covering ``[0, length)`` with at least ``overlap``."""
    if length <= tile:
        return [(0, length)]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile_size), got {overlap} for tile_size {tile}")
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = np.round(np.linspace(0, length - tile, count)).astype(int)
    return [(int(s), tile) for s in starts]


def tile_grid(height: int, width: int, tile: int = 640, overlap: int = 0) -> list[tuple[int, int, int, int]]:
    """Tiles ``(y0, x0, h, w)`` of a ``height x width`` image, row by row."""
    return [(y, x, h, w) for y, h in axis_tiles(height, tile, overlap) for x, w in axis_tiles(width, tile, overlap)]


def _ramp(tiles: list[tuple[int, int]], k: int) -> np.ndarray:
    """Blending weight along one axis for tile ``k``: linear ramps across the overlaps."""
    start, size = tiles[k]
    i = np.arange(size) + 0.5
    weight = np.ones(size)
    if k > 0:
        left = tiles[k - 1][0] + tiles[k - 1][1] - start
        if left > 0:
            weight = np.minimum(weight, i / left)
    if k + 1 < len(tiles):
        right = start + size - tiles[k + 1][0]
        if right > 0:
            weight = np.minimum(weight, (size - i) / right)
    return weight.astype(np.float32)


def _centres(out_size: int, in_size: int) -> np.ndarray:
    """Nearest source index of each output pixel (pixel-centre sampling)."""
    return np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(np.int64), in_size - 1)


def _tensorflow():
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # TF already initialised its devices in this process
            log.warning("openseg: cannot enable TF memory growth on %s: %s", gpu.name, exc)
    return tf


class OpenSegExtractor:
    """OpenSeg SavedModel adapter; see the module docstring for options and the tiling scheme."""

    name = "openseg"

    def __init__(
        self,
        saved_model: str,
        device: str = "cpu",
        tile: bool = False,
        tile_size: int = 640,
        tile_overlap: int = 64,
        jpeg_quality: int = 95,
        model_cache: str | None = None,
    ):
        if not 0 <= tile_overlap < tile_size:
            raise ValueError(f"openseg: tile_overlap must be in [0, tile_size), got {tile_overlap}, {tile_size}")
        self._tf = tf = _tensorflow()
        local = storage.local_copy(saved_model, model_cache_dir(model_cache))
        self._model = tf.saved_model.load(local)
        try:
            self._serve = self._model.signatures["serving_default"]
        except KeyError:
            raise ValueError(f"openseg: {saved_model} has no 'serving_default' signature") from None
        inputs = self._serve.structured_input_signature[1]
        outputs = self._serve.structured_outputs
        missing = {"inp_image_bytes", "inp_text_emb"} - set(inputs)
        missing |= {"ppixel_ave_feat", "image_info"} - set(outputs)
        if missing:
            raise ValueError(f"openseg: {saved_model} lacks {sorted(missing)} in its serving signature")
        text_shape = inputs["inp_text_emb"].shape
        dims = [1, 1, OPENSEG_TEXT_DIM] if text_shape.rank is None else [d or 1 for d in text_shape.as_list()]
        if text_shape.rank and text_shape[-1] is None:
            dims[-1] = OPENSEG_TEXT_DIM
        self._text_emb = tf.zeros(dims, tf.float32)
        feat_dim = outputs["ppixel_ave_feat"].shape[-1]
        self.feature_dim = int(feat_dim) if feat_dim is not None else OPENSEG_TEXT_DIM
        self.text_encoder_options = {"arch": model_spec("openseg").text_arch}
        self.text_model = text_model_spec("open_clip", self.text_encoder_options)
        self.device = torch.device(device)
        self.tile = tile
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.jpeg_quality = jpeg_quality
        self.model_calls = 0

    def run(self, color: np.ndarray) -> torch.Tensor:
        """The valid-region features ``[h, w, C]`` of one uint8 image, on ``self.device``."""
        data = encode_jpeg(np.ascontiguousarray(color), quality=self.jpeg_quality)
        out = self._serve(inp_image_bytes=self._tf.constant(data), inp_text_emb=self._text_emb)
        self.model_calls += 1
        info = out["image_info"].numpy()
        feat = out["ppixel_ave_feat"]
        crop_h = math.floor(float(info[0, 0]) * float(info[2, 0]) + 1e-3)
        crop_w = math.floor(float(info[0, 1]) * float(info[2, 1]) + 1e-3)
        if not (0 < crop_h <= feat.shape[1] and 0 < crop_w <= feat.shape[2]):
            raise ValueError(f"openseg: image_info {info.tolist()} gives an invalid crop {crop_h}x{crop_w}")
        return torch.from_numpy(feat[0, :crop_h, :crop_w].numpy()).to(self.device, torch.float32)

    def _single(self, color: np.ndarray, height: int, width: int) -> torch.Tensor:
        feat = self.run(color)
        rows = torch.from_numpy(_centres(height, feat.shape[0])).to(self.device)
        cols = torch.from_numpy(_centres(width, feat.shape[1])).to(self.device)
        return feat[rows][:, cols]

    def _tiled(self, color: np.ndarray, height: int, width: int) -> torch.Tensor:
        img_h, img_w = color.shape[:2]
        tiles_y = axis_tiles(img_h, self.tile_size, self.tile_overlap)
        tiles_x = axis_tiles(img_w, self.tile_size, self.tile_overlap)
        src_rows, src_cols = _centres(height, img_h), _centres(width, img_w)
        acc = torch.zeros((height, width, self.feature_dim), device=self.device)
        weight_sum = torch.zeros((height, width, 1), device=self.device)
        for ty, (y0, th) in enumerate(tiles_y):
            sel_r = np.flatnonzero((src_rows >= y0) & (src_rows < y0 + th))
            for tx, (x0, tw) in enumerate(tiles_x):
                sel_c = np.flatnonzero((src_cols >= x0) & (src_cols < x0 + tw))
                if sel_r.size == 0 or sel_c.size == 0:
                    continue
                feat = self.run(color[y0 : y0 + th, x0 : x0 + tw])
                local_r, local_c = src_rows[sel_r] - y0, src_cols[sel_c] - x0
                fr = np.minimum(((local_r + 0.5) * feat.shape[0] / th).astype(np.int64), feat.shape[0] - 1)
                fc = np.minimum(((local_c + 0.5) * feat.shape[1] / tw).astype(np.int64), feat.shape[1] - 1)
                w = np.outer(_ramp(tiles_y, ty)[local_r], _ramp(tiles_x, tx)[local_c])
                w = torch.from_numpy(w).to(self.device)[..., None]
                r = torch.from_numpy(sel_r).to(self.device)[:, None]
                c = torch.from_numpy(sel_c).to(self.device)[None, :]
                fr_t = torch.from_numpy(fr).to(self.device)
                fc_t = torch.from_numpy(fc).to(self.device)
                acc[r, c] += w * feat[fr_t][:, fc_t]
                weight_sum[r, c] += w
        return acc / weight_sum

    def extract(self, views: Sequence[View], height: int, width: int) -> torch.Tensor:
        out = torch.empty((len(views), height, width, self.feature_dim), device=self.device)
        for i, view in enumerate(views):
            tiled = self.tile and max(view.color.shape[:2]) > self.tile_size
            out[i] = self._tiled(view.color, height, width) if tiled else self._single(view.color, height, width)
        return out


register_extractor("openseg", OpenSegExtractor)
