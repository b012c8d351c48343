"""Training pairs from one view's masks over the sampled pixels (facts §4.3).

Masks are kept when they hold more than ``min_inside`` (5) and fewer than ``S - min_inside`` of
the ``S`` sampled pixels. Each kept mask gives a group of ``P`` (64) positive pairs (two pixels
inside) and ``P * ratio`` negative pairs (inside, outside). With hierarchical sampling:

- a mask with children adds a group whose positives lie in the mask but in none of its children
  and whose negatives pair those pixels with pixels outside the mask (when at least
  ``2 * min_inside`` such pixels exist);
- a leaf with a parent walks up the inside tree: at each level the negatives pair the current
  set's pixels with the parent's pixels outside the current mask, and those same pairs become
  the positives of the next level up; at the top, the negatives pair the last set with pixels
  outside the top mask. Pixels that differ at a fine level are thus the same at a coarser one.

A parent of mask ``i`` is a direct one: a mask containing ``i`` that contains no other mask
containing ``i``. Pairs are sample indices; groups stack to ``[G, P, 2]`` and ``[G, P*ratio, 2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PairSet", "direct_parents", "kept_masks", "sample_pairs"]


@dataclass(frozen=True)
class PairSet:
    positives: np.ndarray  # int64 [G, P, 2]
    negatives: np.ndarray  # int64 [G, P * ratio, 2]

    @property
    def groups(self) -> int:
        return int(self.positives.shape[0])


def kept_masks(sample_masks: np.ndarray, min_inside: int = 5) -> np.ndarray:
    """bool [M]: masks holding more than ``min_inside`` and fewer than ``S - min_inside`` samples."""
    count = np.asarray(sample_masks, dtype=bool).sum(axis=1)
    return (count > min_inside) & (count < sample_masks.shape[1] - min_inside)


def direct_parents(inside: np.ndarray, child: int) -> np.ndarray:
    """The direct parents of mask ``child`` under ``inside[i, j]`` (i is a child of j)."""
    ancestors = np.flatnonzero(inside[child])
    if len(ancestors) == 0:
        return ancestors
    contains_another = inside[np.ix_(ancestors, ancestors)].any(axis=0)  # ancestor a has a child b among them
    return ancestors[~contains_another]


class _Sampler:
    def __init__(self, masks: np.ndarray, inside: np.ndarray, rng: np.random.Generator, pairs: int, ratio: int,
                 min_inside: int):  # fmt: skip
        self.masks, self.inside, self.rng = masks, inside, rng
        self.pairs, self.ratio, self.min_inside = pairs, ratio, min_inside
        self.positives: list[np.ndarray] = []
        self.negatives: list[np.ndarray] = []

    def draw(self, pool: np.ndarray, count: int) -> np.ndarray:
        return pool[self.rng.integers(0, len(pool), count)]

    def add(self, positives: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Add a group: ``positives`` [P, 2] and negatives drawn from pools ``first`` x ``second``."""
        count = self.pairs * self.ratio
        negatives = np.stack([self.draw(first, count), self.draw(second, count)], axis=1)
        self.positives.append(positives)
        self.negatives.append(negatives)
        return negatives

    def within(self, pool: np.ndarray) -> np.ndarray:
        return np.stack([self.draw(pool, self.pairs), self.draw(pool, self.pairs)], axis=1)

    def flat(self, index: int) -> None:
        inner = np.flatnonzero(self.masks[index])
        self.add(self.within(inner), inner, np.flatnonzero(~self.masks[index]))

    def residual(self, index: int, children: np.ndarray) -> None:
        rest = np.flatnonzero(self.masks[index] & ~self.masks[children].any(axis=0))
        if len(rest) >= 2 * self.min_inside:
            self.add(self.within(rest), rest, np.flatnonzero(~self.masks[index]))

    def walk(self, index: int, last: np.ndarray | None, pool: np.ndarray | None, seen: frozenset) -> None:
        """Walk up from mask ``index``; ``last`` are the previous level's negatives, ``pool`` their
        parent-side pixels (None at the leaf)."""
        parents = [p for p in direct_parents(self.inside, index) if p not in seen]
        if not parents and last is not None:  # the top: its negatives leave the top mask
            self.add(last[: self.pairs], pool, np.flatnonzero(~self.masks[index]))
            return
        for parent in parents:
            between = np.flatnonzero(self.masks[parent] & ~self.masks[index])
            if len(between) == 0:
                continue
            if last is None:
                source = np.flatnonzero(self.masks[index])
                positives = self.within(source)
            else:
                source, positives = pool, last[: self.pairs]
            negatives = self.add(positives, source, between)
            self.walk(int(parent), negatives[: self.pairs], between, seen | {int(parent)})


def sample_pairs(
    sample_masks: np.ndarray,
    inside: np.ndarray,
    rng: np.random.Generator,
    pairs_per_mask: int = 64,
    negative_ratio: int = 1,
    hierarchical: bool = True,
    min_inside: int = 5,
) -> PairSet:
    """Pairs for the kept masks of ``sample_masks`` (bool [M, S]) with ``inside`` (bool [M, M])."""
    sample_masks = np.asarray(sample_masks, dtype=bool)
    keep = kept_masks(sample_masks, min_inside)
    masks, tree = sample_masks[keep], np.asarray(inside, dtype=bool)[np.ix_(keep, keep)]
    sampler = _Sampler(masks, tree, rng, pairs_per_mask, negative_ratio, min_inside)
    for index in range(len(masks)):
        sampler.flat(index)
        if not hierarchical:
            continue
        children = np.flatnonzero(tree[:, index])
        if len(children):
            sampler.residual(index, children)
        elif tree[index].any():
            sampler.walk(index, None, None, frozenset({index}))
    if not sampler.positives:
        empty = np.zeros((0, pairs_per_mask, 2), np.int64)
        return PairSet(empty, np.zeros((0, pairs_per_mask * negative_ratio, 2), np.int64))
    return PairSet(np.stack(sampler.positives).astype(np.int64), np.stack(sampler.negatives).astype(np.int64))
