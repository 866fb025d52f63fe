"""The default cluster space: node embedding of the kNN graph -> cluster layers -> (optional) noise assignment.

``cluster_embedding_space`` is what ``engine cluster`` runs unless ``--cluster-space graph``; it
returns the same :class:`ClusterResult` as the raw-graph HDBSCAN* plus the layers, the embedding
(the map stage starts its 2-D layout from it) and the ``assigned`` mask.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from engine.cluster.communities import DEFAULT_RESOLUTION, cluster_communities
from engine.cluster.communities import DEFAULT_RUNS as COMMUNITY_RUNS
from engine.cluster.consensus import DEFAULT_RUNS, consensus_layers, run_seeds
from engine.cluster.embedding import DEFAULT_N_NEIGHBORS, DEFAULT_NOISE_LEVEL, embed_graph, fuzzy_graph
from engine.cluster.graph_hdbscan import ClusterResult
from engine.cluster.layers import ClusterLayers, build_layers, parent_links, relabel_by_size
from engine.cluster.noise import assign_noise
from engine.errors import EngineError

SPACES = ("communities", "embedding", "graph")
#: Fewer documents than this cannot be embedded in the node embedding's few dimensions (measured: 2 and 3
#: documents raised in its PCA start, 4 worked); such corpora are all noise.
MIN_EMBED_DOCUMENTS = 4
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
    consensus_runs: int = DEFAULT_RUNS,
) -> ClusterResult:
    """Node embedding of ``graph`` (a KnnGraph), EVoC-style layers on it, primary layer by rule.

    ``consensus_runs`` > 1 (default): that many seeded runs vote and the layers are their consensus
    (engine.cluster.consensus: stable across seeds and subsamples, with a per-document stability);
    1, or ``n_clusters``: one run, primary by persistence or closest to ``n_clusters``.
    """
    if min_cluster_size < 2:
        raise EngineError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
    if n_clusters is not None and n_clusters < 1:
        raise EngineError(f"n_clusters must be >= 1, got {n_clusters}")
    t0 = time.perf_counter()
    n = int(np.asarray(graph.indices).shape[0])
    if consensus_runs < 1:
        raise EngineError(f"consensus_runs must be >= 1, got {consensus_runs}")
    if not np.any(np.asarray(graph.distances) > 0):
        return _no_structure(n, seed, time.perf_counter() - t0)
    if n < max(min_cluster_size, MIN_EMBED_DOCUMENTS):
        # No cluster of min_cluster_size fits (and a few-d embedding of 2-3 nodes is undefined): all noise.
        return _no_structure(
            n,
            seed,
            time.perf_counter() - t0,
            rule=f"too few documents ({n}) for a cluster of --min-cluster-size {min_cluster_size}",
        )
    init_vectors = _init_vectors(vectors)
    fuzzy = fuzzy_graph(graph, n_neighbors)
    n_runs = 1 if n_clusters is not None else consensus_runs
    run_layers: list[ClusterLayers] = []
    emb = None
    for run_seed in run_seeds(seed, n_runs):
        run_emb = embed_graph(
            graph,
            n_components=n_components,
            n_neighbors=n_neighbors,
            noise_level=noise_level,
            seed=run_seed,
            vectors=init_vectors,
            fuzzy=fuzzy,
        )
        emb = emb or run_emb  # the map starts from the first run's (the seed's own) embedding
        run_layers.append(
            build_layers(
                run_emb.embedding,
                min_cluster_size=min_cluster_size,
                min_samples=min_samples if min_samples is not None else min_cluster_size,
                n_clusters=n_clusters,
                seed=run_seed,
            )
        )
    t1 = time.perf_counter()
    if n_runs == 1:
        layers = run_layers[0]
    else:
        layers = consensus_layers(np.asarray(graph.indices), [r.labels for r in run_layers], min_cluster_size)
    t2 = time.perf_counter()
    result = _result_from_layers(
        layers, graph, assign, emb.embedding, t0, {"runs": t1 - t0, "consensus": t2 - t1}
    )
    # per-document stability (share of runs agreeing with the consensus); None for a single run
    result.stability = layers.strengths[layers.primary] if n_runs > 1 else None
    result.embedding = emb.embedding
    return result


def cluster_community_space(
    graph: Any,
    min_cluster_size: int = 5,
    n_clusters: int | None = None,
    assign: bool = False,
    seed: int | None = 42,
    consensus_runs: int = COMMUNITY_RUNS,
    resolution: float = DEFAULT_RESOLUTION,
) -> ClusterResult:
    """Leiden communities of ``graph`` in layers (engine.cluster.communities); the default cluster space.

    No node embedding is made here (``result.embedding`` is None): the map stage makes its own.
    """
    if min_cluster_size < 2:
        raise EngineError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
    if n_clusters is not None and n_clusters < 1:
        raise EngineError(f"n_clusters must be >= 1, got {n_clusters}")
    t0 = time.perf_counter()
    n = int(np.asarray(graph.indices).shape[0])
    if not np.any(np.asarray(graph.distances) > 0):
        return _no_structure(n, seed, time.perf_counter() - t0)
    if n < max(min_cluster_size, MIN_EMBED_DOCUMENTS):
        return _no_structure(
            n,
            seed,
            time.perf_counter() - t0,
            rule=f"too few documents ({n}) for a cluster of --min-cluster-size {min_cluster_size}",
        )
    layers = cluster_communities(
        graph,
        min_cluster_size=min_cluster_size,
        n_clusters=n_clusters,
        seed=seed,
        runs=consensus_runs,
        resolution=resolution,
    )
    result = _result_from_layers(layers, graph, assign, None, t0, {"communities": time.perf_counter() - t0})
    result.stability = layers.strengths[layers.primary] if consensus_runs > 1 else None
    result.embedding = None
    return result


def _result_from_layers(
    layers: ClusterLayers,
    graph: Any,
    assign: bool,
    space: np.ndarray | None,
    t0: float,
    timings: dict[str, float],
) -> ClusterResult:
    """The ClusterResult of a layered clustering: primary labels, strengths as probabilities, and
    (``assign``) every layer's noise given to its neighbours' cluster, ids kept ordered by size."""
    n = int(np.asarray(graph.indices).shape[0])
    t2 = time.perf_counter()
    labels = layers.labels[layers.primary]
    strengths = layers.strengths[layers.primary]
    noise_before = float((labels < 0).mean()) if n else 0.0
    assigned = np.zeros(n, dtype=bool)
    if assign:
        g_idx, g_dist = np.asarray(graph.indices), np.asarray(graph.distances)
        new_layers = []
        for i, lab in enumerate(layers.labels):
            new, mask = assign_noise(lab, g_idx, g_dist, space=space)
            new_layers.append(relabel_by_size(new))  # ids stay ordered by size (0 = largest)
            if i == layers.primary:
                assigned = mask
        layers.labels = new_layers
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
        timings={**timings, "assign_noise": t3 - t2},
    )
    result.layers = layers
    result.assigned = assigned
    result.noise_before = noise_before
    return result


def _no_structure(
    n: int,
    seed: int | None,
    seconds: float,
    rule: str = "no structure: every graph neighbour is an exact duplicate",
) -> ClusterResult:
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
        rule=rule,
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
    result.stability = None
    return result
