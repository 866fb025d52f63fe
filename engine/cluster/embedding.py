"""Node embedding of the engine's kNN graph: a few dimensions in which density clustering works.

Density clustering straight on 384/1024-d sentence vectors suffers distance concentration (most
documents end up noise). EVoC (Tutte Institute) embeds the kNN graph into ~4-15 dimensions with a
UMAP-like objective first. We reuse EVoC 0.3.2's own stages, fed with the graph Milvus already built
(no second neighbour search):

    KnnGraph (Euclidean between unit vectors)
      -> EVoC's distance scale: -log2(cosine similarity), self first at 0     (``evoc_knn_arrays``)
      -> fuzzy neighbour graph (UMAP-style weights, symmetrised)              (``fuzzy_graph``)
      -> label-propagation initialisation + node embedding                    (``embed_graph``)

Why EVoC's stages and not umap-learn + fast_hdbscan: measured in ``benchmarks/quality.py`` (same
graph, same vectors) they give the same or better NMI at a fraction of the time, and EVoC's
reproducible mode is deterministic for a seed while still using every numba thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from engine.errors import EngineError

#: EVoC's default neighbourhood for the fuzzy graph (it builds a 15-NN graph itself).
DEFAULT_N_NEIGHBORS = 15
#: EVoC's default epochs.
DEFAULT_N_EPOCHS = 50
#: EVoC's noise_level (its default 0.5; lower clusters more documents). 0.1 measured better on both
#: labelled corpora (benchmarks/quality.py, RESULTS.md section 8): BBC primary NMI 0.646 -> 0.676 and
#: AG News primary noise 33 % -> 15 % (only its coarsest layer then stays under the 25 % noise cap).
DEFAULT_NOISE_LEVEL = 0.1
_MIN_COS = 1e-6  # -log2(1e-6) ~ 20: neighbours at or past orthogonal are "far", never NaN


def default_n_components(n_neighbors: int) -> int:
    """EVoC's rule: min(max(n_neighbors // 4, 4), 15) dimensions."""
    return int(min(max(n_neighbors // 4, 4), 15))


def evoc_knn_arrays(
    indices: np.ndarray, distances: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Engine graph -> EVoC's kNN arrays: (N, m) with self first at distance 0, m = min(n_neighbors, k + 1).

    The engine stores Euclidean distances d between unit vectors, so cos = 1 - d^2 / 2 and EVoC's
    float distance is -log2(cos) (clipped at cos = 1e-6). Missing neighbours keep index -1 (EVoC
    skips them) with the row's largest real distance, so no inf reaches EVoC's bandwidth search.
    """
    idx = np.asarray(indices)
    dist = np.asarray(distances, dtype=np.float32)
    if idx.ndim != 2 or idx.shape != dist.shape:
        raise EngineError(f"graph: indices {idx.shape} and distances {dist.shape} must be (N, k) arrays")
    n, k = idx.shape
    m = max(1, min(int(n_neighbors), k + 1)) - 1
    idx = idx[:, :m].astype(np.int32)
    dist = dist[:, :m]
    valid = (idx >= 0) & np.isfinite(dist)
    cos = np.clip(1.0 - 0.5 * np.square(dist, dtype=np.float32), _MIN_COS, 1.0)
    d = np.maximum(-np.log2(cos), 0.0).astype(np.float32)
    row_max = np.where(valid, d, -np.inf).max(axis=1, initial=-np.inf)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0).astype(np.float32)
    d = np.where(valid, d, row_max[:, None]).astype(np.float32)
    idx = np.where(valid, idx, -1).astype(np.int32)
    out_idx = np.empty((n, m + 1), dtype=np.int32)
    out_dist = np.empty((n, m + 1), dtype=np.float32)
    out_idx[:, 0] = np.arange(n, dtype=np.int32)
    out_dist[:, 0] = 0.0
    out_idx[:, 1:] = idx
    out_dist[:, 1:] = d
    return out_idx, out_dist


def fuzzy_graph(graph, n_neighbors: int = DEFAULT_N_NEIGHBORS) -> sp.csr_matrix:
    """EVoC's symmetric fuzzy neighbour graph (UMAP weights) of a KnnGraph-like object."""
    from evoc.graph_construction import neighbor_graph_matrix

    idx, dist = evoc_knn_arrays(graph.indices, graph.distances, n_neighbors)
    result = neighbor_graph_matrix(float(idx.shape[1]), idx, dist, symmetrize=True)
    return sp.csr_matrix(result, dtype=np.float32)


@dataclass
class GraphEmbedding:
    """The low-dimensional node embedding and the fuzzy graph it was learned from."""

    embedding: np.ndarray
    graph: sp.csr_matrix
    n_neighbors: int
    seconds: dict[str, float]


def _random_state(seed: int | None) -> np.random.RandomState:
    return np.random.RandomState(seed) if seed is not None else np.random.RandomState()


def embed_graph(
    graph,
    n_components: int | None = None,
    n_neighbors: int = DEFAULT_N_NEIGHBORS,
    n_epochs: int = DEFAULT_N_EPOCHS,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    seed: int | None = 42,
    vectors: np.ndarray | None = None,
    fuzzy: sp.csr_matrix | None = None,
) -> GraphEmbedding:
    """(N, n_components) float32 node embedding of the kNN graph, EVoC's way.

    ``vectors`` (optional, corpus order) feed EVoC's PCA base case of the label-propagation
    initialisation; without them that base case is random. ``seed`` makes the result identical
    run to run (EVoC's reproducible mode, still multi-threaded); ``None`` is faster and varies.
    """
    import time

    from evoc.label_propagation import label_propagation_init
    from evoc.node_embedding import node_embedding

    n = int(np.asarray(graph.indices).shape[0])
    if n < 2:
        return GraphEmbedding(np.zeros((n, n_components or 4), np.float32), sp.csr_matrix((n, n)), 0, {})
    n_components = int(n_components or default_n_components(n_neighbors))
    t0 = time.perf_counter()
    if fuzzy is None:
        fuzzy = fuzzy_graph(graph, n_neighbors)
    t1 = time.perf_counter()
    rng = _random_state(seed)
    data = None
    base_init = "random"
    if vectors is not None:
        data = np.asarray(vectors, dtype=np.float32)
        base_init = "pca"
    init = label_propagation_init(
        fuzzy,
        n_components=n_components,
        approx_n_parts=int(np.clip(int(8 * np.sqrt(n)), 256, 16384)),
        random_scale=0.1,
        scaling=0.5,
        noise_level=noise_level,
        random_state=rng,
        data=data,
        n_label_prop_iter=20,
        base_init=base_init,
    )
    t2 = time.perf_counter()
    emb = node_embedding(
        fuzzy,
        n_components=n_components,
        n_epochs=n_epochs,
        initial_embedding=init,
        negative_sample_rate=1.0,
        noise_level=noise_level,
        random_state=rng,
        verbose=False,
        reproducible_flag=seed is not None,
        initial_alpha=0.1,
    )
    t3 = time.perf_counter()
    emb = np.ascontiguousarray(np.nan_to_num(emb, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)
    return GraphEmbedding(
        emb,
        fuzzy,
        int(min(n_neighbors, np.asarray(graph.indices).shape[1] + 1)),
        {"fuzzy_graph": t1 - t0, "init": t2 - t1, "embedding": t3 - t2},
    )
