"""3D hierarchical segmentation of the field's features and its transfer to views (3dseg.py, facts §4.5).

A kNN graph joins every point to its ``k`` (16) nearest other points. For each threshold ``t``
(0.01 .. 0.50), the edges whose features lie closer than ``t`` (Euclidean) are kept and the
weakly connected components are the segments of that level: a single-linkage cut, so the levels
nest, coarse segments being unions of finer ones. Segments are numbered by size, largest first;
the ``max_segments`` (200) largest keep their number and every other point gets ``max_segments``
("unassigned").

A view receives the segmentation through its depth: each pixel's surface point takes the mode of
the labels of its ``k`` (5) nearest segmented points (ties: the nearest tied label), or
"unassigned" when the farthest of them lies beyond ``max_distance``.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from openscene_ray.hierarchy.ultrametric import knn_edges

__all__ = ["knn_graph", "neighbour_spacing", "relabel_by_size", "segment_levels", "transfer_labels"]


def knn_graph(xyz: np.ndarray, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (src, dst) from every point to its ``k`` nearest other points."""
    return knn_edges(np.asarray(xyz, dtype=np.float64), k)


def relabel_by_size(labels: np.ndarray, max_segments: int) -> np.ndarray:
    """Component ids renumbered by size (largest 0; ties by first point), capped at ``max_segments``."""
    counts = np.bincount(labels)
    first = np.full(len(counts), len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    order = np.lexsort((first, -counts))  # by size descending, then by first point
    rank = np.empty(len(counts), dtype=np.int64)
    rank[order] = np.arange(len(counts))
    return np.minimum(rank[labels], max_segments).astype(np.uint8)


def segment_levels(
    features: np.ndarray, src: np.ndarray, dst: np.ndarray, thresholds, max_segments: int = 200
) -> np.ndarray:
    """Per-level segment ids uint8 [L, N] of the single-linkage cuts at ``thresholds``."""
    n = len(features)
    f = np.asarray(features, dtype=np.float32)
    distance = np.sqrt(np.maximum(((f[src] - f[dst]) ** 2).sum(axis=1), 0.0)) if len(src) else np.zeros(0)
    out = np.empty((len(thresholds), n), dtype=np.uint8)
    for level, threshold in enumerate(thresholds):
        keep = distance < threshold
        graph = coo_matrix((np.ones(int(keep.sum()), np.int8), (src[keep], dst[keep])), shape=(n, n))
        _, labels = connected_components(graph, directed=True, connection="weak")
        out[level] = relabel_by_size(labels, max_segments)
    return out


def neighbour_spacing(xyz: np.ndarray, k: int) -> float:
    """Median distance of the points to their ``k``-th nearest other point."""
    if len(xyz) <= k:
        return float("inf")
    distance, _ = cKDTree(xyz).query(xyz, k=k + 1)
    return float(np.median(distance[:, -1]))


def _mode(labels: np.ndarray) -> np.ndarray:
    """Most frequent value along the last axis (ties: the first, i.e. nearest, of the tied)."""
    equal = labels[..., :, None] == labels[..., None, :]
    return np.take_along_axis(labels, equal.sum(-1).argmax(-1)[..., None], axis=-1)[..., 0]


def transfer_labels(
    tree: cKDTree,
    levels: np.ndarray,
    query: np.ndarray,
    k: int,
    max_distance: float,
    unassigned: int,
    chunk: int = 16384,
) -> np.ndarray:
    """Labels uint8 [L, Q] of ``query`` points from the segmented points in ``tree`` (``levels`` [L, N])."""
    out = np.full((levels.shape[0], len(query)), unassigned, dtype=np.uint8)
    k = min(k, tree.n)
    for start in range(0, len(query), chunk):
        distance, index = tree.query(query[start : start + chunk], k=k)
        distance, index = distance.reshape(len(distance), k), index.reshape(len(index), k)
        near = distance.max(axis=1) <= max_distance
        if near.any():
            out[:, start : start + chunk][:, near] = _mode(levels[:, index[near]])
    return out
