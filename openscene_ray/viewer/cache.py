"""Small caches shared by every page of one viewer: scenes (per feature source) and embeddings.

:class:`LRU` is thread-safe and loads each key once: pages asking for the same scene at the same
time wait for one load. A scene is kept as its display subsample only (points, colours, labels and
float16 features of the drawn points, with each feature's inverse norm), so a cached 1M-point
Matterport region costs what its drawn 200k points cost, and a query is one pass of small BLAS
products over them (:func:`cosines`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from openscene_ray.query.scene import SceneFeatures

__all__ = ["LRU", "SCORE_ROWS", "DisplayScene", "cosines", "row_norms", "subsample_scene"]

V = TypeVar("V")


class LRU(Generic[V]):
    """At most ``size`` values, least recently used evicted first; :meth:`get` loads a missing key
    once (other threads asking for it wait); a failed load is not cached."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"cache size must be >= 1, got {size}")
        self.size = size
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.loads = 0  # how many times a factory ran (tests, logs)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def get(self, key: Hashable, factory: Callable[[], V]) -> V:
        while True:
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    return self._values[key]
                gate = self._loading.get(key)
                if gate is None:
                    gate = self._loading[key] = threading.Lock()
                    gate.acquire()
                    break
            with gate:  # another thread is loading this key: wait, then look again
                pass
        try:
            value = factory()
            with self._lock:
                self.loads += 1
                self._values[key] = value
                self._values.move_to_end(key)
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._loading.pop(key, None)
            gate.release()


SCORE_ROWS = 2048  # rows converted from fp16 at a time: a small reused buffer, no large allocations


def row_norms(features: np.ndarray) -> np.ndarray:
    """float32 ``[M]`` L2 norms of the rows of a (fp16) feature table, in chunks."""
    import torch

    table = torch.from_numpy(np.ascontiguousarray(features))
    norms = torch.empty(len(table))
    buffer = torch.empty((min(SCORE_ROWS, max(len(table), 1)), table.shape[1]))
    for start in range(0, len(table), SCORE_ROWS):
        n = min(SCORE_ROWS, len(table) - start)
        buffer[:n].copy_(table[start : start + n])
        torch.linalg.vector_norm(buffer[:n], dim=1, out=norms[start : start + n])
    return norms.numpy()


def cosines(features: np.ndarray, inverse_norms: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float32 ``[Q, M]`` cosines of fp16 rows (scaled by their precomputed inverse norms; 0 for a
    zero row) to unit queries. Converts :data:`SCORE_ROWS` rows at a time into one reused float32
    buffer and multiplies with BLAS: the same values as
    :func:`~openscene_ray.query.database.cosine_scores` (to float32 rounding) at a fraction of
    its time, which allocates a float32 copy of every chunk."""
    import torch

    table = torch.from_numpy(np.ascontiguousarray(features))
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
    if table.ndim != 2 or q.ndim != 2 or table.shape[1] != q.shape[1]:
        raise ValueError(f"features [M,C] and queries [Q,C] disagree: {tuple(table.shape)} vs {tuple(q.shape)}")
    out = torch.empty((len(table), len(q)))
    buffer = torch.empty((min(SCORE_ROWS, max(len(table), 1)), table.shape[1]))
    for start in range(0, len(table), SCORE_ROWS):
        n = min(SCORE_ROWS, len(table) - start)
        buffer[:n].copy_(table[start : start + n])
        torch.mm(buffer[:n], q.T, out=out[start : start + n])
    out *= torch.from_numpy(inverse_norms)[:, None]
    return out.T.contiguous().numpy()


@dataclass
class DisplayScene:
    """The drawn points of a scene with their features: ``index`` rows of the full scene."""

    features: SceneFeatures  # the drawn points only, features as float16
    index: np.ndarray  # int64 [M] rows in the scene's points file
    n_points: int  # points in the scene
    inverse_norms: np.ndarray  # float32 [M]: 1 / |feature| (0 for a zero feature)

    @property
    def scene_id(self) -> str:
        return self.features.scene_id

    @property
    def xyz(self) -> np.ndarray:
        return self.features.xyz

    @property
    def rgb(self) -> np.ndarray:
        return self.features.rgb

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """float32 ``[Q, M]`` cosines of the drawn points to unit query embeddings (NaN: no feature),
        the values of :meth:`SceneFeatures.scores <openscene_ray.query.scene.SceneFeatures.scores>`."""
        scores = cosines(self.features.features, self.inverse_norms, queries)
        scores[:, ~self.features.mask] = np.nan
        return scores


def subsample_scene(scene: SceneFeatures, index: np.ndarray) -> DisplayScene:
    """Keep the rows ``index`` of a loaded scene (copies, so the full arrays can be freed), with
    float16 features and their inverse norms."""
    features = np.ascontiguousarray(scene.features[index], dtype=np.float16)
    norms = row_norms(features)
    inverse = np.where(norms > 1e-6, 1.0 / np.maximum(norms, 1e-6), 0.0).astype(np.float32)
    kept = SceneFeatures(
        scene.scene_id, scene.xyz[index].astype(np.float32), scene.rgb[index].astype(np.uint8),
        scene.labels[index], features, scene.mask[index], scene.source, scene.text_model,
    )  # fmt: skip
    return DisplayScene(kept, np.asarray(index, np.int64), len(scene.xyz), inverse)
