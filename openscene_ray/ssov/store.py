"""The segments store: SSOV's per-image superpixels, written by ``openscene-ray segment``.

SSOV's 2D step writes, per camera image, a superpixel id map, the list of its superpixels and
their mask embeddings, plus the vocabulary's text embeddings once (seed facts §3.1). The same
content, without pickles (PNG + JSON + ``.npy`` read with ``allow_pickle=False``), every object
written atomically::

    <segments>/vocabulary.json                      phrases, dictionary, text model, source
    <segments>/text_embedding.npy                   float32 [V, D], L2-normalised rows
    <segments>/scenes/<scene_id>/<frame_id>.png     uint8 (uint16 above 255 ids): 0 = void, 1..K
    <segments>/scenes/<scene_id>/<frame_id>.json    [{"id": k, "category_id": v, "area": pixels}]
    <segments>/scenes/<scene_id>/<frame_id>.npy     float16 [K+1, D]: row 0 zeros, row k = the
                                                    L2-normalised mean pixel embedding of id k
    <segments>/scenes/<scene_id>/scene.json         the scene's frames (written last: complete)
    <segments>/index/<run>.<scene>.parquet, runs/<run>.json   per-run rows and summary

Entry ``k - 1`` of the JSON list describes id ``k`` (as the original scripts write it).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import OpenSceneError
from openscene_ray.kernel.npy import encode_npy, load_npy

__all__ = [
    "SegmentsError",
    "Superpixels",
    "Vocabulary",
    "decode_id_map",
    "decode_npy",
    "decode_superpixels",
    "encode_npy",
    "frame_uri",
    "read_frame",
    "read_scene_marker",
    "read_vocabulary",
    "scene_marker_uri",
    "write_frame",
    "write_scene_marker",
    "write_vocabulary",
]


class SegmentsError(OpenSceneError, ValueError):
    """A superpixel file is missing or malformed; the message names the file."""


@dataclass
class Superpixels:
    """One image's class-wise masks ("superpixels")."""

    ids: np.ndarray  # int32 [H, W]: 0 = void, k = superpixel k (1..K)
    categories: np.ndarray  # int32 [K]: the vocabulary index of superpixel k at k - 1
    areas: np.ndarray  # int64 [K]: pixels of each superpixel
    embeddings: np.ndarray | None  # float32 [K+1, D]: row 0 zeros; None when not read

    @property
    def count(self) -> int:
        return int(self.categories.shape[0])


@dataclass
class Vocabulary:
    """The segments' vocabulary: phrases, their text embeddings and ``vocabulary.json``."""

    phrases: tuple[str, ...]
    embeddings: np.ndarray  # float32 [V, D]
    metadata: dict[str, Any]


def decode_npy(data: bytes, source: str) -> np.ndarray:
    """A ``.npy`` array (never a pickle); errors name ``source``."""
    try:
        return load_npy(data)
    except ValueError as exc:
        raise SegmentsError(f"{source}: {exc}") from None


def frame_uri(segments: str, scene_id: str, frame_id: str, suffix: str) -> str:
    """``<segments>/scenes/<scene_id>/<frame_id>.<suffix>``; an error for a frame id that cannot name a file."""
    if not frame_id or "/" in frame_id or frame_id.startswith("."):
        raise SegmentsError(f"scene {scene_id!r}: frame id {frame_id!r} cannot name a file")
    return storage.join(segments, "scenes", scene_id, f"{frame_id}.{suffix}")


def scene_marker_uri(segments: str, scene_id: str) -> str:
    """``<segments>/scenes/<scene_id>/scene.json``: the scene's completion marker."""
    return storage.join(segments, "scenes", scene_id, "scene.json")


def _png(ids: np.ndarray) -> bytes:
    dtype = np.uint8 if int(ids.max(initial=0)) <= 255 else np.uint16
    buffer = io.BytesIO()
    Image.fromarray(ids.astype(dtype)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_frame(segments: str, scene_id: str, frame_id: str, sp: Superpixels) -> int:
    """Write one image's three files; returns the bytes written."""
    info = [{"id": k + 1, "category_id": int(c), "area": int(a)} for k, (c, a) in enumerate(zip(sp.categories, sp.areas))]
    parts = {
        "png": _png(sp.ids),
        "json": json.dumps(info).encode(),
        "npy": encode_npy(np.asarray(sp.embeddings, np.float16)),
    }
    for suffix, data in parts.items():
        storage.write_bytes(frame_uri(segments, scene_id, frame_id, suffix), data)
    return sum(len(d) for d in parts.values())


def _read(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except storage.ObjectNotFound:
        raise SegmentsError(f"{uri}: missing") from None


def decode_id_map(data: bytes, source: str) -> np.ndarray:
    """int32 ``[H, W]`` from a single-channel PNG (8 or 16 bit)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
        raise SegmentsError(f"{source}: not a readable image ({exc})") from None
    ids = np.asarray(image)
    if ids.ndim != 2:
        raise SegmentsError(f"{source}: expected a single-channel id map, got mode {image.mode}")
    return ids.astype(np.int32)


def _parse_info(data: bytes, source: str) -> list[dict]:
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegmentsError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(info, list) or not all(isinstance(e, dict) for e in info):
        raise SegmentsError(f"{source}: expected a list of superpixel objects")
    return info


def decode_superpixels(
    png: bytes, info_json: bytes, embeddings: np.ndarray | None, vocabulary_size: int, names: tuple[str, str, str]
) -> Superpixels:
    """Check and assemble one image's superpixels (``names``: the PNG, JSON and embedding files).

    Entry ``k - 1`` of the JSON list is id ``k``: a stated ``id`` must agree; ``category_id`` is a
    vocabulary index; a missing ``area`` is counted from the id map. The embeddings need a row per
    id (row 0 = void); extra rows are an error."""
    ids = decode_id_map(png, names[0])
    info = _parse_info(info_json, names[1])
    categories, areas = [], []
    counts = np.bincount(ids.reshape(-1).clip(min=0), minlength=len(info) + 1)
    for k, entry in enumerate(info, start=1):
        if "id" in entry and entry["id"] != k:
            raise SegmentsError(f"{names[1]}: entry {k - 1} has id {entry['id']!r}; entry k-1 must describe id k")
        category = entry.get("category_id")
        if not isinstance(category, int) or not 0 <= category < vocabulary_size:
            raise SegmentsError(f"{names[1]}: entry {k - 1}: category_id {category!r} is not a vocabulary index "
                                f"in [0, {vocabulary_size})")  # fmt: skip
        categories.append(category)
        areas.append(int(entry.get("area", counts[k])))
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > len(info)):
        raise SegmentsError(f"{names[0]}: ids up to {int(ids.max())} but {names[1]} describes {len(info)}")
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(info) + 1:
            raise SegmentsError(f"{names[2]}: expected [{len(info) + 1}, D] mask embeddings (row 0 = void), "
                                f"got {list(embeddings.shape)}")  # fmt: skip
        if not np.isfinite(embeddings).all():
            raise SegmentsError(f"{names[2]}: non-finite mask embeddings")
    return Superpixels(ids, np.asarray(categories, np.int32), np.asarray(areas, np.int64), embeddings)


def read_frame(
    segments: str, scene_id: str, frame_id: str, vocabulary_size: int, with_embeddings: bool = True
) -> Superpixels:
    """One image's superpixels from the store (errors name the file)."""
    uris = tuple(frame_uri(segments, scene_id, frame_id, s) for s in ("png", "json", "npy"))
    embeddings = decode_npy(_read(uris[2]), uris[2]) if with_embeddings else None
    return decode_superpixels(_read(uris[0]), _read(uris[1]), embeddings, vocabulary_size, uris)


def write_vocabulary(segments: str, phrases: list[str], embeddings: np.ndarray, metadata: dict[str, Any]) -> None:
    """The run's vocabulary: phrases and their text embeddings (once per store)."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape[0] != len(phrases):
        raise ValueError(f"{len(phrases)} phrases but {embeddings.shape[0]} text embeddings")
    storage.write_bytes(storage.join(segments, "text_embedding.npy"), encode_npy(embeddings))
    document = dict(metadata, phrases=list(phrases), dim=int(embeddings.shape[1]))
    storage.write_bytes(storage.join(segments, "vocabulary.json"), json.dumps(document, indent=2).encode())


def read_vocabulary(segments: str) -> Vocabulary:
    """The vocabulary written by :func:`write_vocabulary`; errors name the file."""
    uri = storage.join(segments, "vocabulary.json")
    try:
        document = json.loads(_read(uri).decode("utf-8"))
        phrases = tuple(str(p) for p in document["phrases"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SegmentsError(f"{uri}: not a vocabulary document ({exc})") from None
    emb_uri = storage.join(segments, "text_embedding.npy")
    embeddings = decode_npy(_read(emb_uri), emb_uri).astype(np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(phrases):
        raise SegmentsError(f"{emb_uri}: {list(embeddings.shape)} embeddings for {len(phrases)} phrases")
    return Vocabulary(phrases, embeddings, document)


def write_scene_marker(segments: str, scene_id: str, document: dict[str, Any]) -> None:
    """The scene's summary, written after all its frames: the scene is complete when it exists."""
    storage.write_bytes(scene_marker_uri(segments, scene_id), json.dumps(document, indent=2).encode())


def read_scene_marker(segments: str, scene_id: str) -> dict[str, Any] | None:
    """The scene's summary, or None when the scene is not (completely) segmented."""
    uri = scene_marker_uri(segments, scene_id)
    try:
        return json.loads(storage.read_bytes(uri).decode("utf-8"))
    except storage.ObjectNotFound:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegmentsError(f"{uri}: not valid JSON ({exc})") from None
