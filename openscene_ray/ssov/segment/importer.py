"""Import the on-disk outputs of the original CAT-Seg / FC-CLIP / SAN superpixel scripts (seed facts
§3.1) into the segments store.

Per camera image the scripts write ``<token>.png`` (uint8 ids, 0 = void), ``<token>.json`` (entry
``k - 1`` describes id ``k``: ``category_id``, and ``id``/``area`` where written) and
``<token>.pt`` (the ``[K+1, D]`` mask embeddings; FC-CLIP saves a pair ``[f_in, f_out]`` whose
element 1 is that tensor); once per run ``text_embedding.pt`` ``[V(+1), D]`` (a trailing extra
row is dropped, as SSOV's trainer does). ``.pt`` files are Python pickles: they are read with
``torch.load(..., weights_only=True)`` only (tensors and plain containers; anything else is
refused). A bad file is that scene's error, naming the file.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch
import yaml

from openscene_ray.kernel import storage
from openscene_ray.kernel.manifest import SceneRecord
from openscene_ray.ssov.segment.config import ImportConfig
from openscene_ray.ssov.store import (
    SegmentsError,
    decode_superpixels,
    write_frame,
    write_scene_marker,
)

__all__ = ["import_scene", "load_pt", "load_text_embedding", "read_token_map", "stem_for"]


def load_pt(uri: str) -> Any:
    """A ``.pt`` object through ``torch.load(weights_only=True)``; errors name the file."""
    try:
        data = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        raise SegmentsError(f"{uri}: missing") from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise SegmentsError(f"{uri}: not loadable with weights_only=True ({type(exc).__name__}: {exc})") from None


def _as_matrix(value: Any, uri: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise SegmentsError(f"{uri}: expected a tensor, got {type(value).__name__}")
    array = value.detach().to(torch.float32).numpy()
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise SegmentsError(f"{uri}: expected a 2-D tensor, got shape {list(array.shape)}")
    return array


def mask_embeddings(uri: str, kind: str) -> np.ndarray:
    """The ``[K+1, D]`` mask embeddings of one image (FC-CLIP: element 1 of the saved pair)."""
    value = load_pt(uri)
    if kind == "fcclip":
        if not isinstance(value, (list, tuple)) or len(value) < 2:
            raise SegmentsError(f"{uri}: FC-CLIP saves a pair [f_in, f_out]; got {type(value).__name__}")
        value = value[1]
    return _as_matrix(value, uri)


def load_text_embedding(config: ImportConfig, vocabulary_size: int) -> np.ndarray:
    """float32 ``[V, D]`` L2-normalised text embeddings of the vocabulary."""
    uri = storage.join(config.root, config.text_embedding)
    array = _as_matrix(load_pt(uri), uri)
    if array.shape[0] == vocabulary_size + 1:
        array = array[:-1]
    if array.shape[0] != vocabulary_size:
        raise SegmentsError(f"{uri}: {array.shape[0]} text embeddings for a {vocabulary_size}-phrase dictionary")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.maximum(norms, 1e-12)).astype(np.float32)


def read_token_map(uri: str | None) -> dict[str, dict[str, str]]:
    """``{scene_id: {frame_id: stem}}`` from a JSON or YAML file (``yaml.safe_load`` reads both)."""
    if uri is None:
        return {}
    try:
        data = yaml.safe_load(storage.read_bytes(uri).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SegmentsError(f"{uri}: not valid JSON/YAML ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SegmentsError(f"{uri}: expected {{scene_id: {{frame_id: file stem}}}}")
    return {str(s): {str(f): str(t) for f, t in frames.items()} for s, frames in data.items()}


def stem_for(config: ImportConfig, token_map: dict[str, dict[str, str]], scene_id: str, frame_id: str) -> str:
    """The image's file stem under ``config.root``."""
    stem = token_map.get(scene_id, {}).get(frame_id)
    return stem if stem is not None else config.names.format(scene_id=scene_id, frame_id=frame_id)


def import_scene(
    record: SceneRecord, config: ImportConfig, vocabulary_size: int, segments: str, fingerprint: dict,
    token_map: dict[str, dict[str, str]],
) -> dict:  # fmt: skip
    """Convert one scene's original outputs into the store; returns the scene's marker document."""
    start = time.perf_counter()
    frames, total = [], 0
    for view in record.views:
        stem = storage.join(config.root, stem_for(config, token_map, record.scene_id, view.frame_id))
        names = (f"{stem}.png", f"{stem}.json", f"{stem}.pt")
        try:
            png, info = storage.read_bytes(names[0]), storage.read_bytes(names[1])
        except storage.ObjectNotFound as exc:
            raise SegmentsError(f"{exc.uri}: missing (view {view.frame_id})") from None
        sp = decode_superpixels(png, info, mask_embeddings(names[2], config.kind), vocabulary_size, names)
        total += write_frame(segments, record.scene_id, view.frame_id, sp)
        height, width = sp.ids.shape
        frames.append({"frame_id": view.frame_id, "width": int(width), "height": int(height),
                       "superpixels": sp.count, "source": stem})  # fmt: skip
    document = {"scene_id": record.scene_id, "frames": frames, "fingerprint": fingerprint, "bytes": total,
                "seconds": time.perf_counter() - start}  # fmt: skip
    write_scene_marker(segments, record.scene_id, document)
    return document
