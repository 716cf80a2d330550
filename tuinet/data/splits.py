"""Seeded, stratified train/validation/test splits, subsets and per-epoch shuffling."""

from __future__ import annotations

from typing import Iterator

import numpy as np


def _allocate(counts: np.ndarray, n_take: int) -> np.ndarray:
    """Split ``n_take`` over groups in proportion to ``counts`` (largest remainder), never above a count."""
    total = counts.sum()
    if total == 0 or n_take <= 0:
        return np.zeros_like(counts)
    n_take = min(n_take, int(total))
    exact = counts * (n_take / total)
    take = np.minimum(np.floor(exact).astype(np.int64), counts)
    short = n_take - int(take.sum())
    order = np.argsort(-(exact - take), kind="stable")
    for i in order:
        if short <= 0:
            break
        if take[i] < counts[i]:
            take[i] += 1
            short -= 1
    return take


def split_indices(n: int, fractions: tuple[float, ...], rng: np.random.Generator,
                  y: np.ndarray | None = None) -> list[np.ndarray]:
    """Cut ``range(n)`` into a remainder plus one part per fraction; stratified by ``y`` when given.

    Returns ``[rest, part_1, part_2, ...]``; each part is shuffled with ``rng``.
    """
    sizes = [int(round(n * f)) for f in fractions]
    if y is None:
        perm = rng.permutation(n)
        parts, start = [], 0
        for size in sizes:
            parts.append(perm[start:start + size])
            start += size
        return [perm[start:]] + parts
    classes, inverse = np.unique(y, return_inverse=True)
    by_class = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    remaining = np.array([len(ix) for ix in by_class], dtype=np.int64)
    used = np.zeros(len(classes), dtype=np.int64)
    parts = []
    for size in sizes:
        take = _allocate(remaining, size)
        parts.append(np.concatenate([ix[u:u + t] for ix, u, t in zip(by_class, used, take)]))
        used += take
        remaining -= take
    rest = np.concatenate([ix[u:] for ix, u in zip(by_class, used)])
    return [rng.permutation(p) for p in [rest] + parts]


def subset_indices(n: int, limit: int, rng: np.random.Generator, y: np.ndarray | None = None) -> np.ndarray:
    """Pick ``limit`` of ``n`` indices at random (stratified by ``y`` when given), sorted."""
    if limit >= n:
        return np.arange(n)
    _, part = split_indices(n, (limit / n,), rng, y)
    return np.sort(part)


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield the index arrays of one epoch: a seeded permutation of ``range(n)`` cut into batches.

    The last batch is smaller when ``batch_size`` does not divide ``n``.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]
