"""KnnGraph: the k nearest neighbours of every corpus position, O(N*k) memory.

Why a class: every later stage (HDBSCAN, UMAP, benchmarks) needs the same views of the
graph (CSR with duplicates kept, UMAP's self-first arrays, recall against exact) and the
same on-disk format (``knn_graph.npz`` + ``knn_arrays.npz``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from engine.atomic import atomic_output
from engine.errors import EngineError

GRAPH_FILE = "knn_graph.npz"
ARRAYS_FILE = "knn_arrays.npz"


@dataclass
class KnnGraph:
    """``indices`` int32 (N, k) positions, ``distances`` float32 (N, k) Euclidean.

    Rows sorted ascending, self excluded, missing neighbours as index -1 / distance +inf.
    ``meta`` carries how the graph was built (source, index, timings) and is saved with it.
    """

    indices: np.ndarray
    distances: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        self.distances = np.ascontiguousarray(self.distances, dtype=np.float32)
        if self.indices.ndim != 2 or self.indices.shape != self.distances.shape:
            raise EngineError(
                f"KnnGraph: indices {self.indices.shape} and distances {self.distances.shape} must be equal (N, k)"
            )

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def __repr__(self) -> str:
        return f"KnnGraph(n={self.n}, k={self.k}, missing={self.n_missing()})"

    def n_missing(self) -> int:
        """Number of empty neighbour slots (index -1)."""
        return int((self.indices < 0).sum())

    def to_csr(self) -> sp.csr_matrix:
        """N x N float32 CSR of distances; zero distances (duplicates) stay as explicit entries.

        Built from (data, indices, indptr) directly, so scipy never drops the zeros.
        """
        n = self.n
        valid = self.indices >= 0
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(valid.sum(axis=1), out=indptr[1:])
        cols = self.indices[valid]
        data = self.distances[valid]
        if n and cols.size and int(cols.max()) >= n:
            raise EngineError(f"KnnGraph: neighbour index {int(cols.max())} >= N={n}")
        idx_dtype = np.int32 if cols.size < 2**31 else np.int64
        return sp.csr_matrix(
            (data.astype(np.float32), cols.astype(idx_dtype), indptr.astype(idx_dtype)), shape=(n, n)
        )

    def with_self(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, k+1) arrays with each point first at distance 0 (umap-learn's ``precomputed_knn``)."""
        idx = np.empty((self.n, self.k + 1), dtype=np.int32)
        dist = np.empty((self.n, self.k + 1), dtype=np.float32)
        idx[:, 0] = np.arange(self.n, dtype=np.int32)
        dist[:, 0] = 0.0
        idx[:, 1:] = self.indices
        dist[:, 1:] = self.distances
        return idx, dist

    def n_components(self) -> int:
        """Weakly connected components of the directed kNN graph (zero edges count as edges)."""
        from scipy.sparse.csgraph import connected_components

        csr = self.to_csr()
        csr.data = np.ones_like(csr.data)
        return int(connected_components(csr, directed=True, connection="weak")[0])

    def truncate(self, k: int) -> KnnGraph:
        """The first ``k`` neighbours of every row (the graph for a smaller k)."""
        if not 1 <= k <= self.k:
            raise EngineError(f"truncate: k must be in 1..{self.k}, got {k} (parameter k)")
        return KnnGraph(self.indices[:, :k].copy(), self.distances[:, :k].copy(), dict(self.meta))

    def recall_against(self, exact: KnnGraph, rows: np.ndarray | None = None, k: int | None = None) -> float:
        """Mean recall@k of this graph against ``exact`` (ties at the k-th distance count as hits).

        ``rows``: positions of this graph that ``exact``'s rows correspond to (a query sample);
        default all rows. A neighbour is a hit when it is among exact's k ids, or its distance is
        within 1e-5 of exact's k-th distance (an equally near neighbour).
        """
        k = int(k or min(self.k, exact.k))
        if k > self.k or k > exact.k:
            raise EngineError(f"recall_against: k={k} exceeds a graph's k ({self.k}, {exact.k})")
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.shape[0] != exact.n:
            raise EngineError(f"recall_against: {rows.shape[0]} rows but exact graph has {exact.n}")
        mine_i = self.indices[rows, :k].astype(np.int64)
        mine_d = self.distances[rows, :k]
        ex_i = exact.indices[:, :k].astype(np.int64)
        kth = exact.distances[:, k - 1 : k]
        n_all = max(self.n, int(ex_i.max(initial=0)) + 1, int(mine_i.max(initial=0)) + 1)
        r = np.arange(rows.shape[0], dtype=np.int64)[:, None]
        mine_keys = r * n_all + mine_i
        ex_keys = (r * n_all + ex_i)[ex_i >= 0]
        hit = np.isin(mine_keys, ex_keys) | (mine_d <= kth + 1e-5)
        hit &= mine_i >= 0
        denom = np.minimum((ex_i >= 0).sum(axis=1), k).clip(min=1)
        return float(np.mean(np.minimum(hit.sum(axis=1), denom) / denom))

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | os.PathLike[str]) -> tuple[str, str]:
        """Write ``DIR/knn_graph.npz`` (CSR) and ``DIR/knn_arrays.npz`` (indices, distances, meta)."""
        import json

        os.makedirs(directory, exist_ok=True)
        gpath = os.path.join(directory, GRAPH_FILE)
        apath = os.path.join(directory, ARRAYS_FILE)
        with atomic_output(gpath) as tmp:
            sp.save_npz(tmp, self.to_csr(), compressed=False)
        with atomic_output(apath) as tmp:
            np.savez(
                tmp,
                indices=self.indices,
                distances=self.distances,
                meta=np.array(json.dumps(self.meta, default=str)),
            )
        return gpath, apath

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> KnnGraph:
        """Read a graph written by :meth:`save`."""
        import json

        apath = os.path.join(directory, ARRAYS_FILE)
        if not os.path.exists(apath):
            raise EngineError(f"no kNN graph at {apath}; run the graph stage first")
        with np.load(apath, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            return cls(z["indices"], z["distances"], meta)
