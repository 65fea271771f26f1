"""Deterministic batch order: any step's batch follows from (seed, step), so a resumed run sees the same data."""

from __future__ import annotations

import random


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the items in 1-based ``step``'s batch: a fresh seeded shuffle of range(n) each epoch."""
    if n < 1:
        raise ValueError("cannot draw a batch from an empty set")
    orders: dict[int, list[int]] = {}
    start = (step - 1) * batch_size
    indices = []
    for k in range(start, start + batch_size):
        epoch, position = divmod(k, n)
        if epoch not in orders:
            order = list(range(n))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            orders[epoch] = order
        indices.append(orders[epoch][position])
    return indices
