"""The ultrametric (minimax-path) similarity of UFF's ultrametric contrastive loss (facts §4.4).

Per training step, over the sampled pixels: a graph joins each pixel to its ``k`` (10) nearest
pixels in the image (the original's nearest rays; the same thing for a pinhole camera); an edge
is ``1 - f_i·f_j`` long, plus ``penalty`` (10) when the two pixels differ in membership of any
mask. The single-linkage tree of that graph is its minimum spanning tree merged in increasing
edge order (scipy's ``minimum_spanning_tree``, then a union-find over the sorted MST edges, which
builds the merge tree). For a pair (a, b), their lowest common ancestor in the merge tree is the
MST edge that first joined them, the weakest link of the path between them; its ``f_i·f_j`` is
the pair's ultrametric similarity (1 for a == b). Only those selected edges carry gradient.

A graph that falls apart into components is joined by one edge between consecutive components
(with its true length), so every pair has a path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

__all__ = ["MergeTree", "knn_edges", "merge_tree", "ultrametric_similarity"]

_OFFSET = 1.0  # added to every length: scipy drops zero-weight edges, and a constant keeps the MST


@dataclass(frozen=True)
class MergeTree:
    """Single-linkage merge tree of ``n`` leaves: internal node ``n + k`` merges by MST edge ``k``
    (``edges[k]``, in increasing length); ``parent`` int64 [2n - 1] (the root is its own parent)."""

    n: int
    edges: np.ndarray  # int64 [n - 1, 2]
    lengths: np.ndarray  # float64 [n - 1]
    parent: np.ndarray

    def lca(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Lowest common ancestors of node pairs (vectorised binary lifting)."""
        up = [self.parent]
        while len(up) < max(1, int(np.ceil(np.log2(len(self.parent) + 1)))):
            up.append(up[-1][up[-1]])
        depth = _depths(up)
        a, b = np.asarray(a, np.int64).copy(), np.asarray(b, np.int64).copy()
        swap = depth[a] < depth[b]
        a[swap], b[swap] = b[swap], a[swap]
        gap = depth[a] - depth[b]
        for j, table in enumerate(up):
            move = ((gap >> j) & 1).astype(bool)
            a[move] = table[a[move]]
        for table in reversed(up):
            differ = table[a] != table[b]
            a[differ], b[differ] = table[a[differ]], table[b[differ]]
        return np.where(a == b, a, self.parent[a])


def _depths(up: list[np.ndarray]) -> np.ndarray:
    """Depth of every node (the root's is 0) from its binary-lifting tables ``up[j]`` (2^j steps up)."""
    count = len(up[0])
    is_root = up[0] == np.arange(count)
    node, depth = np.arange(count), np.zeros(count, dtype=np.int64)
    for j in range(len(up) - 1, -1, -1):
        nxt = up[j][node]
        move = ~is_root[nxt]  # the jump stays below the root
        node[move], depth[move] = nxt[move], depth[move] + (1 << j)
    return depth + ~is_root[node]  # the last step, onto the root


def knn_edges(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (src, dst) from each point to its ``k`` nearest other points."""
    n = len(points)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, neighbours = cKDTree(points).query(points, k=k + 1)
    src = np.repeat(np.arange(n), k + 1).reshape(n, k + 1)
    not_self = neighbours != np.arange(n)[:, None]
    keep = np.cumsum(not_self, axis=1) <= k  # the first k neighbours that are not the point itself
    keep &= not_self
    return src[keep].astype(np.int64), neighbours[keep].astype(np.int64)


def _joined_components(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extra edges chaining the graph's connected components (empty when it is connected)."""
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    count, label = connected_components(graph, directed=False)
    if count <= 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.array([np.flatnonzero(label == c)[0] for c in range(count)], dtype=np.int64)
    return first[:-1], first[1:]


def _merge_parents(n: int, edges: np.ndarray) -> np.ndarray:
    """Merge-tree parents for MST ``edges`` taken in order: a union-find (path halving) whose
    set ``r`` remembers its current tree node; edge ``k`` makes node ``n + k`` their parent."""
    parent = list(range(2 * n - 1))
    uf = list(range(n))
    node = list(range(n))
    for k, (i, j) in enumerate(edges.tolist()):
        roots = []
        for x in (i, j):
            while uf[x] != x:
                uf[x] = uf[uf[x]]
                x = uf[x]
            roots.append(x)
        ri, rj = roots
        parent[node[ri]] = parent[node[rj]] = n + k
        uf[rj] = ri
        node[ri] = n + k
    return np.asarray(parent, dtype=np.int64)


def merge_tree(n: int, src: np.ndarray, dst: np.ndarray, lengths: np.ndarray) -> MergeTree:
    """The single-linkage merge tree of a connected graph (edges ``src``-``dst`` of ``lengths``)."""
    keep = src != dst
    low, high = np.minimum(src, dst)[keep], np.maximum(src, dst)[keep]
    pairs, first = np.unique(np.stack([low, high], axis=1), axis=0, return_index=True)
    weight = np.asarray(lengths, np.float64)[keep][first]
    graph = coo_matrix((weight + _OFFSET, (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    tree = minimum_spanning_tree(graph).tocoo()
    if tree.nnz != n - 1:
        raise ValueError(f"the graph over {n} nodes is not connected ({tree.nnz} MST edges)")
    order = np.lexsort((tree.col, tree.row, tree.data))
    edges = np.stack([tree.row[order], tree.col[order]], axis=1).astype(np.int64)
    parent = _merge_parents(n, edges)
    return MergeTree(n, edges, tree.data[order] - _OFFSET, parent)


@torch.no_grad()
def _edge_similarity(features: torch.Tensor, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``f_src · f_dst`` (float64, no gradient); kNN edges (``k`` per source, in source order) as one
    batched product, which is much faster on CPU than gathering both ends."""
    n, device = features.shape[0], features.device
    if len(src) and len(src) % n == 0 and np.array_equal(src, np.repeat(np.arange(n), len(src) // n)):
        nbr = torch.as_tensor(dst.reshape(n, -1), device=device)
        return torch.bmm(features[nbr], features[:, :, None]).reshape(-1).double().cpu().numpy()
    s, d = torch.as_tensor(src, device=device), torch.as_tensor(dst, device=device)
    return (features[s] * features[d]).sum(-1).double().cpu().numpy()


def ultrametric_similarity(
    features: torch.Tensor,
    pixels: np.ndarray,
    masks: np.ndarray,
    pairs: np.ndarray,
    neighbours: int = 10,
    penalty: float = 10.0,
) -> torch.Tensor:
    """Ultrametric similarity of ``pairs`` (int [..., 2] sample indices) under unit ``features`` [S, C].

    ``pixels`` float [S, 2] image positions of the samples; ``masks`` bool [K, S] their mask
    memberships. Returns a tensor of ``pairs.shape[:-1]``; gradient reaches only the MST edges
    selected as the pairs' weakest links.
    """
    n = features.shape[0]
    src, dst = knn_edges(np.asarray(pixels, np.float64), neighbours)
    extra_src, extra_dst = _joined_components(n, src, dst)
    length = 1.0 - np.concatenate(
        [_edge_similarity(features, src, dst), _edge_similarity(features, extra_src, extra_dst)]
    )
    src, dst = np.concatenate([src, extra_src]), np.concatenate([dst, extra_dst])
    if len(masks):
        signature = np.packbits(np.asarray(masks, dtype=bool), axis=0)  # mask memberships, 8 per byte
        length = length + penalty * (signature[:, src] != signature[:, dst]).any(axis=0)
    tree = merge_tree(n, src, dst, length)
    flat = np.asarray(pairs, np.int64).reshape(-1, 2)
    node = tree.lca(flat[:, 0], flat[:, 1])
    edge = tree.edges[np.clip(node - n, 0, n - 2)]
    e = torch.as_tensor(edge, device=features.device)
    similarity = (features[e[:, 0]] * features[e[:, 1]]).sum(-1)
    same = torch.as_tensor(flat[:, 0] == flat[:, 1], device=features.device)
    similarity = torch.where(same, torch.ones_like(similarity), similarity)
    return similarity.reshape(pairs.shape[:-1])
