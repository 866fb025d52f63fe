"""Turn a kNN graph (KnnGraph, scipy sparse matrix or (indices, distances) arrays) into flat edge arrays.

The cluster stage never symmetrises the graph: the MST and the core distances read the
stored (directed) edges as they are, so zero distances (duplicate documents) survive and
no second, transposed copy of the graph is ever built (scipy's ``G.maximum(G.T)`` would
also drop explicit zeros).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from engine.errors import EngineError


@dataclass(frozen=True)
class EdgeArrays:
    """A graph as CSR-like arrays: row ``i`` owns ``indices[indptr[i]:indptr[i+1]]``.

    ``indices`` is int32 with -1 for a missing neighbour; ``distances`` is float32 (+inf when missing).
    ``rows_sorted`` says each row is ascending by distance (true for a KnnGraph), which lets the
    core distance be read in O(1).
    """

    indptr: np.ndarray
    indices: np.ndarray
    distances: np.ndarray
    n: int
    rows_sorted: bool

    @property
    def max_degree(self) -> int:
        return int(np.diff(self.indptr).max()) if self.n else 0


def _check_values(distances: np.ndarray, what: str) -> None:
    if distances.size and np.isnan(distances).any():
        raise EngineError(f"graph: {what} contains NaN distances")
    if distances.size and (distances < 0).any():
        raise EngineError(f"graph: {what} contains negative distances")


def from_knn_arrays(indices: np.ndarray, distances: np.ndarray) -> EdgeArrays:
    """(N, k) neighbour positions and distances, ascending per row, self excluded, -1/+inf missing."""
    indices = np.asarray(indices)
    distances = np.asarray(distances)
    if indices.ndim != 2 or indices.shape != distances.shape:
        raise EngineError(
            f"graph: indices {indices.shape} and distances {distances.shape} must be two (N, k) arrays"
        )
    n, k = indices.shape
    if k == 0:
        raise EngineError("graph: k=0 neighbours per point; the cluster stage needs k >= min_samples")
    idx = np.ascontiguousarray(indices, dtype=np.int32).reshape(-1)
    dist = np.ascontiguousarray(distances, dtype=np.float32).reshape(-1)
    if idx.size and (idx.max() >= n or idx.min() < -1):
        raise EngineError(f"graph: neighbour indices must lie in [-1, {n - 1}] (positions, not ids)")
    _check_values(dist, "distances")
    # A -1 entry must read as +inf whatever the caller stored there.
    missing = idx < 0
    if missing.any():
        dist = dist.copy()
        dist[missing] = np.inf
    square = dist.reshape(n, k)
    rows_sorted = bool(k < 2 or (square[:, 1:] >= square[:, :-1]).all())
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return EdgeArrays(indptr, idx, dist, n, rows_sorted)


def from_sparse(graph: sp.spmatrix | sp.sparray) -> EdgeArrays:
    """A square sparse distance matrix; stored entries (explicit zeros included) are edges."""
    if graph.shape[0] != graph.shape[1]:
        raise EngineError(f"graph: sparse matrix must be square, got shape {graph.shape}")
    csr = graph.tocsr()  # tocsr keeps explicit zeros; we never call eliminate_zeros
    indptr = np.asarray(csr.indptr, dtype=np.int64)
    indices = np.asarray(csr.indices, dtype=np.int32)
    dist = np.asarray(csr.data, dtype=np.float32)
    if not np.isfinite(dist).all():
        if np.isnan(dist).any():
            raise EngineError("graph: sparse matrix contains NaN distances")
    _check_values(dist, "sparse matrix")
    return EdgeArrays(indptr, indices, dist, int(csr.shape[0]), rows_sorted=False)


def as_edge_arrays(graph: Any) -> EdgeArrays:
    """Accept a KnnGraph (anything with ``.indices``/``.distances``), a sparse matrix or a tuple."""
    if isinstance(graph, EdgeArrays):
        return graph
    if sp.issparse(graph):
        return from_sparse(graph)
    if hasattr(graph, "indices") and hasattr(graph, "distances"):
        return from_knn_arrays(graph.indices, graph.distances)
    if isinstance(graph, tuple) and len(graph) == 2:
        return from_knn_arrays(graph[0], graph[1])
    raise EngineError(
        f"graph: expected a KnnGraph, a scipy sparse matrix or (indices, distances), got {type(graph).__name__}"
    )
