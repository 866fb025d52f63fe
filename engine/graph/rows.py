"""Row helpers shared by every kNN source (Milvus search, exact brute force, the index benchmark).

Why one module: mapping Milvus ids back to corpus positions and the final per-row order (self and
unknown hits dropped, ties broken by position) must be identical everywhere, or graphs from
different sources differ in ways recall cannot explain.
"""

from __future__ import annotations

import numpy as np


def id_positions(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted_ids, order)`` for :func:`map_ids_to_positions` (ids need not be 0..N-1)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    order = np.argsort(ids, kind="stable")
    return ids[order], order


def map_ids_to_positions(
    hit_ids: np.ndarray, sorted_ids: np.ndarray, order: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Milvus ids -> corpus positions (int64), -1 for ids not in the corpus or missing hits.

    Ids are any int64 (negative ones too: hashes, external keys), so a missing hit is told by
    ``valid`` (e.g. ``np.isfinite(scores)``: :meth:`MilvusStore.search` leaves NaN there), never by
    the id value. Positions, not ids, use -1 as "none".
    """
    n = sorted_ids.shape[0]
    pos = np.searchsorted(sorted_ids, hit_ids)
    pos_c = np.minimum(pos, max(n - 1, 0))
    found = (pos < n) & (sorted_ids[pos_c] == hit_ids) if n else np.zeros_like(hit_ids, bool)
    if valid is not None:
        found &= valid
    out = np.where(found, order[pos_c], -1)
    return out.astype(np.int64)


def finish_rows(
    cand: np.ndarray, dist: np.ndarray, self_pos: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop self and unknown candidates, sort each row by (distance, position), keep k."""
    bad = (cand < 0) | (cand == self_pos[:, None]) | ~np.isfinite(dist)
    dist = np.where(bad, np.inf, dist).astype(np.float32)
    cand = np.where(bad, -1, cand)
    # Stable two-key sort: by position first, then stably by distance (ties -> lower position).
    o1 = np.argsort(cand, axis=1, kind="stable")
    cand = np.take_along_axis(cand, o1, axis=1)
    dist = np.take_along_axis(dist, o1, axis=1)
    o2 = np.argsort(dist, axis=1, kind="stable")
    cand = np.take_along_axis(cand, o2, axis=1)[:, :k]
    dist = np.take_along_axis(dist, o2, axis=1)[:, :k]
    if cand.shape[1] < k:
        pad = k - cand.shape[1]
        cand = np.pad(cand, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    cand[~np.isfinite(dist)] = -1
    return cand.astype(np.int32), dist
