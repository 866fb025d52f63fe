"""Core distances and mutual-reachability weights read straight from the kNN graph.

Convention (matches the ``hdbscan`` library, whose KD/Ball-tree code queries ``min_samples + 1``
neighbours *including the point itself* and takes the last): the core distance of a point is the
distance to its ``min_samples``-th nearest *other* point, i.e. column ``min_samples - 1`` of a
self-excluded kNN row. (scikit-learn's ``HDBSCAN`` counts the point itself, so its
``min_samples=m`` equals ours ``m - 1``.) A row with fewer than ``min_samples`` stored neighbours
gets +inf: such a point only joins the hierarchy at infinite distance, i.e. it is noise.
"""

from __future__ import annotations

import numba
import numpy as np

from engine.cluster.edges import EdgeArrays


@numba.njit(parallel=True, cache=True)
def _core_sorted(indptr, distances, min_samples):
    n = indptr.shape[0] - 1
    out = np.empty(n, dtype=np.float32)
    for i in numba.prange(n):
        start = indptr[i]
        if indptr[i + 1] - start >= min_samples:
            out[i] = distances[start + min_samples - 1]
        else:
            out[i] = np.inf
    return out


@numba.njit(parallel=True, cache=True)
def _core_unsorted(indptr, indices, distances, min_samples):
    n = indptr.shape[0] - 1
    out = np.empty(n, dtype=np.float32)
    for i in numba.prange(n):
        start = indptr[i]
        end = indptr[i + 1]
        row = np.empty(end - start, dtype=np.float32)
        m = 0
        for p in range(start, end):
            # self-loops (a stored diagonal) are not neighbours
            if indices[p] >= 0 and indices[p] != i:
                row[m] = distances[p]
                m += 1
        if m >= min_samples:
            out[i] = np.sort(row[:m])[min_samples - 1]
        else:
            out[i] = np.inf
    return out


def core_distances(edges: EdgeArrays, min_samples: int) -> np.ndarray:
    """float32 (N,) distance to each point's ``min_samples``-th nearest other point (+inf if unknown)."""
    if min_samples < 1:
        return np.zeros(edges.n, dtype=np.float32)
    if edges.rows_sorted:
        return _core_sorted(edges.indptr, edges.distances, np.int64(min_samples))
    return _core_unsorted(edges.indptr, edges.indices, edges.distances, np.int64(min_samples))


@numba.njit(inline="always")
def mutual_reachability(core_i, core_j, d):
    """HDBSCAN*'s edge weight max(core(i), core(j), d(i, j)) (alpha = 1)."""
    return max(core_i, core_j, d)


@numba.njit(parallel=True, cache=True)
def mutual_reachability_weights(indptr, indices, distances, core):
    """float32 weight per stored edge (+inf for a missing neighbour); used by tests and tools."""
    n = indptr.shape[0] - 1
    out = np.empty(distances.shape[0], dtype=np.float32)
    for i in numba.prange(n):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j < 0:
                out[p] = np.inf
            else:
                out[p] = max(core[i], core[j], distances[p])
    return out
