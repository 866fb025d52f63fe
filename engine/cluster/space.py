"""The default cluster space: node embedding of the kNN graph -> cluster layers -> (optional) noise assignment.

``cluster_embedding_space`` is what ``engine cluster`` runs unless ``--cluster-space graph``; it
returns the same :class:`ClusterResult` as the raw-graph HDBSCAN* plus the layers, the embedding
(the map stage starts its 2-D layout from it) and the ``assigned`` mask.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from engine.cluster.embedding import DEFAULT_N_NEIGHBORS, DEFAULT_NOISE_LEVEL, embed_graph
from engine.cluster.graph_hdbscan import ClusterResult
from engine.cluster.layers import ClusterLayers, build_layers
from engine.cluster.noise import assign_noise
from engine.errors import EngineError

SPACES = ("embedding", "graph")
#: PCA base case of the initialisation only needs a sketch of the vectors past this many values.
_SKETCH_VALUES = 50_000_000


def _init_vectors(vectors: np.ndarray | None) -> np.ndarray | None:
    if vectors is None:
        return None
    n, d = vectors.shape
    if n * d <= _SKETCH_VALUES or d <= 64:
        return np.asarray(vectors, dtype=np.float32)
    from engine.project import layout_features

    return layout_features(vectors, dim=64)


def cluster_embedding_space(
    graph: Any,
    min_cluster_size: int = 5,
    min_samples: int | None = 5,
    n_clusters: int | None = None,
    assign: bool = False,
    seed: int | None = 42,
    vectors: np.ndarray | None = None,
    n_neighbors: int = DEFAULT_N_NEIGHBORS,
    n_components: int | None = None,
    noise_level: float = DEFAULT_NOISE_LEVEL,
) -> ClusterResult:
    """Node embedding of ``graph`` (a KnnGraph), EVoC-style layers on it, primary layer by rule."""
    if min_cluster_size < 2:
        raise EngineError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
    if n_clusters is not None and n_clusters < 1:
        raise EngineError(f"n_clusters must be >= 1, got {n_clusters}")
    t0 = time.perf_counter()
    n = int(np.asarray(graph.indices).shape[0])
    if not np.any(np.asarray(graph.distances) > 0):
        return _no_structure(n, seed, time.perf_counter() - t0)
    emb = embed_graph(
        graph,
        n_components=n_components,
        n_neighbors=n_neighbors,
        noise_level=noise_level,
        seed=seed,
        vectors=_init_vectors(vectors),
    )
    t1 = time.perf_counter()
    layers = build_layers(
        emb.embedding,
        min_cluster_size=min_cluster_size,
        min_samples=min_samples if min_samples is not None else min_cluster_size,
        n_clusters=n_clusters,
        seed=seed,
    )
    t2 = time.perf_counter()
    labels = layers.labels[layers.primary]
    strengths = layers.strengths[layers.primary]
    noise_before = float((labels < 0).mean()) if n else 0.0
    assigned = np.zeros(n, dtype=bool)
    if assign:
        g_idx, g_dist = np.asarray(graph.indices), np.asarray(graph.distances)
        new_layers = []
        for i, lab in enumerate(layers.labels):
            new, mask = assign_noise(lab, g_idx, g_dist, space=emb.embedding)
            new_layers.append(new)
            if i == layers.primary:
                assigned = mask
        layers.labels = new_layers
        from engine.cluster.layers import parent_links

        layers.parents = [parent_links(new_layers[i], new_layers[i + 1]) for i in range(len(new_layers) - 1)]
        layers.parents.append(np.full(int(new_layers[-1].max()) + 1, -1, dtype=np.int64))
        labels = new_layers[layers.primary]
    t3 = time.perf_counter()
    probabilities = np.where(labels >= 0, strengths, 0.0).astype(np.float32)
    probabilities[assigned] = 0.0
    result = ClusterResult(
        labels=labels.astype(np.int64),
        probabilities=probabilities,
        outlier_scores=np.where(labels >= 0, 1.0 - probabilities, 1.0).astype(np.float32),
        backend="cpu",
        n_clusters=int(labels.max()) + 1 if labels.size else 0,
        seconds=t3 - t0,
        timings={**emb.seconds, "layers": t2 - t1, "assign_noise": t3 - t2},
    )
    result.layers = layers
    result.embedding = emb.embedding
    result.assigned = assigned
    result.noise_before = noise_before
    return result


def _no_structure(n: int, seed: int | None, seconds: float) -> ClusterResult:
    """Every neighbour is an exact duplicate: no density to embed, so no clusters (as HDBSCAN* on the graph).

    A layout of identical points would split them arbitrarily; one all-noise layer is the honest answer,
    and the run summary then explains the zero clusters.
    """
    labels = np.full(n, -1, dtype=np.int64)
    zeros = np.zeros(n, dtype=np.float32)
    layers = ClusterLayers(
        labels=[labels],
        strengths=[zeros],
        persistence=[0.0],
        parents=[np.full(0, -1, dtype=np.int64)],
        primary=0,
        rule="no structure: every graph neighbour is an exact duplicate",
    )
    result = ClusterResult(
        labels=labels,
        probabilities=zeros,
        outlier_scores=np.ones(n, dtype=np.float32),
        backend="cpu",
        n_clusters=0,
        seconds=seconds,
        timings={},
    )
    result.layers = layers
    # the map starts from this: a small seeded scatter, since every point is the same document
    result.embedding = np.random.default_rng(seed).normal(scale=0.01, size=(n, 2)).astype(np.float32)
    result.assigned = np.zeros(n, dtype=bool)
    result.noise_before = 1.0 if n else 0.0
    return result
