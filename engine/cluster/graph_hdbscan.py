"""HDBSCAN* on a sparse kNN graph in O(N*k) memory: ``cluster_graph`` and ``GraphHDBSCAN``.

CPU path (``backend="cpu"``): core distances read from the kNN rows (``core``), Borůvka MST of
the mutual-reachability graph with a numba union-find (``mst``), then condensed tree, EOM/leaf
selection, probabilities and GLOSH scores (``tree``). Chosen over fast_hdbscan's and hdbscan's
sparse paths by measurement (``benchmarks/bench_cluster.py``): it never symmetrises or sorts the
edge list, so its extra memory is O(N), and disconnected graphs and zero distances are handled.
``backend="cuml"`` runs cuML HDBSCAN on the raw vectors; ``"auto"`` picks cuML only when it
imports and a CUDA GPU is present, else the CPU path. The result says which one ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

from engine import hardware
from engine.cluster.core import core_distances
from engine.cluster.edges import EdgeArrays, as_edge_arrays
from engine.cluster.gpu import CUML_MODULE, cluster_cuml
from engine.cluster.mst import minimum_spanning_tree
from engine.cluster.tree import hierarchy_from_mst
from engine.errors import EngineError

BACKENDS = ("auto", "cpu", "cuml")
METHODS = ("eom", "leaf")


@dataclass
class ClusterResult:
    """Per-position outputs of the cluster stage plus what produced them."""

    labels: np.ndarray
    probabilities: np.ndarray
    outlier_scores: np.ndarray
    backend: str
    n_clusters: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    n_components: int | None = None
    # cluster space "embedding" only: layers (engine.cluster.layers.ClusterLayers), the node
    # embedding, which documents --assign-noise labelled, and the noise share before that.
    layers: Any = None
    embedding: np.ndarray | None = None
    assigned: np.ndarray | None = None
    noise_before: float | None = None
    # consensus of several runs only: per document, the share of runs agreeing with its cluster
    stability: np.ndarray | None = None
    detail: str = ""  # one line for the run summary (set by engine.stages.cluster)

    @property
    def noise_fraction(self) -> float:
        return float((self.labels < 0).mean()) if self.labels.size else 0.0


def validate_params(
    min_cluster_size: Any,
    min_samples: Any,
    cluster_selection_method: Any,
    cluster_selection_epsilon: Any,
    backend: Any,
) -> int:
    """Raise EngineError naming the bad parameter; return the effective min_samples."""
    if (
        isinstance(min_cluster_size, bool)
        or not isinstance(min_cluster_size, Integral)
        or min_cluster_size < 2
    ):
        raise EngineError(f"min_cluster_size must be an integer >= 2, got {min_cluster_size!r}")
    if min_samples is None:
        min_samples = min_cluster_size
    if isinstance(min_samples, bool) or not isinstance(min_samples, Integral) or min_samples < 1:
        raise EngineError(f"min_samples must be an integer >= 1 or None, got {min_samples!r}")
    if cluster_selection_method not in METHODS:
        raise EngineError(
            f"cluster_selection_method must be 'eom' or 'leaf', got {cluster_selection_method!r}"
        )
    if (
        isinstance(cluster_selection_epsilon, bool)
        or not isinstance(cluster_selection_epsilon, Real)
        or not np.isfinite(cluster_selection_epsilon)
        or cluster_selection_epsilon < 0
    ):
        raise EngineError(
            f"cluster_selection_epsilon must be a finite number >= 0, got {cluster_selection_epsilon!r}"
        )
    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return int(min_samples)


def _cluster_cpu(
    edges: EdgeArrays,
    min_cluster_size: int,
    min_samples: int,
    method: str,
    epsilon: float,
) -> ClusterResult:
    n = edges.n
    t0 = time.perf_counter()
    # hdbscan clips min_samples to N - 1 on tiny inputs; do the same so small corpora still cluster
    ms = max(1, min(min_samples, n - 1))
    if ms > edges.max_degree:
        raise EngineError(
            f"min_samples={min_samples} needs at least that many neighbours per point, "
            f"but the graph has k={edges.max_degree}; build the graph with k >= {min_samples} (3x is better)"
        )
    core = core_distances(edges, ms)
    t1 = time.perf_counter()
    mst, n_components = minimum_spanning_tree(edges, core)
    t2 = time.perf_counter()
    h = hierarchy_from_mst(mst, min_cluster_size, method, epsilon)
    t3 = time.perf_counter()
    labels = h.labels
    return ClusterResult(
        labels=labels,
        probabilities=h.probabilities,
        outlier_scores=h.outlier_scores,
        backend="cpu",
        n_clusters=int(labels.max()) + 1 if labels.size else 0,
        seconds=t3 - t0,
        timings={"core": t1 - t0, "mst": t2 - t1, "tree": t3 - t2},
        n_components=n_components,
    )


def cluster_graph(
    graph: Any,
    min_cluster_size: int = 5,
    min_samples: int | None = None,
    cluster_selection_method: str = "eom",
    cluster_selection_epsilon: float = 0.0,
    backend: str = "auto",
    vectors: np.ndarray | None = None,
) -> ClusterResult:
    """HDBSCAN* of a kNN graph (KnnGraph, scipy sparse distances, or (indices, distances)).

    ``min_samples`` follows the ``hdbscan`` library: the core distance is the distance to the
    ``min_samples``-th nearest other point (default: ``min_cluster_size``). ``vectors`` are only
    needed by the cuML backend.
    """
    ms = validate_params(
        min_cluster_size, min_samples, cluster_selection_method, cluster_selection_epsilon, backend
    )
    use_cuml = backend == "cuml" or (
        backend == "auto" and vectors is not None and hardware.cuml_usable(CUML_MODULE)
    )
    if use_cuml:
        if vectors is None:
            raise EngineError("backend='cuml' needs vectors= (cuML HDBSCAN clusters the raw vectors)")
        t0 = time.perf_counter()
        labels, probs, scores = cluster_cuml(
            vectors, min_cluster_size, ms, cluster_selection_method, cluster_selection_epsilon
        )
        return ClusterResult(
            labels,
            probs,
            scores,
            "cuml",
            int(labels.max()) + 1 if labels.size else 0,
            time.perf_counter() - t0,
        )
    edges = as_edge_arrays(graph)
    if vectors is not None and len(vectors) != edges.n:
        raise EngineError(f"vectors has {len(vectors)} rows but the graph has {edges.n} points")
    if edges.n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return ClusterResult(np.zeros(0, dtype=np.int64), empty, empty, "cpu", 0, 0.0)
    return _cluster_cpu(
        edges, min_cluster_size, ms, cluster_selection_method, float(cluster_selection_epsilon)
    )


class GraphHDBSCAN:
    """scikit-learn style HDBSCAN* on a precomputed kNN graph; ``fit(graph, vectors=None)``."""

    def __init__(
        self,
        min_cluster_size: int = 5,
        min_samples: int | None = None,
        cluster_selection_method: str = "eom",
        cluster_selection_epsilon: float = 0.0,
        backend: str = "auto",
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.backend = backend

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "cluster_selection_method": self.cluster_selection_method,
            "cluster_selection_epsilon": self.cluster_selection_epsilon,
            "backend": self.backend,
        }

    def set_params(self, **params: Any) -> GraphHDBSCAN:
        for key, value in params.items():
            if key not in self.get_params():
                raise EngineError(f"GraphHDBSCAN has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def fit(self, graph: Any, vectors: np.ndarray | None = None) -> GraphHDBSCAN:
        result = cluster_graph(graph, vectors=vectors, **self.get_params())
        self.result_ = result
        self.labels_ = result.labels
        self.probabilities_ = result.probabilities
        self.outlier_scores_ = result.outlier_scores
        self.backend_ = result.backend
        self.n_clusters_ = result.n_clusters
        return self

    def fit_predict(self, graph: Any, vectors: np.ndarray | None = None) -> np.ndarray:
        return self.fit(graph, vectors=vectors).labels_
