"""Map stage: the 2-D layout of the kNN graph (node embedding or UMAP); drawing it is engine.show.map.

UMAP is fed the kNN graph that Milvus already built (``precomputed_knn``), so it never runs its
own neighbour search (NNDescent): at 1M documents that search would cost more than the layout.

Conventions (see docs/ARCHITECTURE.md): the graph holds *positions*, Euclidean distances between
unit vectors, rows ascending, self excluded, missing neighbours as index -1 / distance +inf.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from engine import hardware
from engine.errors import EngineError

log = logging.getLogger(__name__)

#: Below this many documents UMAP is not meaningful (and its spectral init breaks): we fall back.
MIN_UMAP_POINTS = 8


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------
def prepare_precomputed_knn(
    indices: np.ndarray, distances: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn an engine kNN graph (self excluded, -1/+inf missing) into umap-learn's precomputed form.

    umap-learn wants every point as its own first neighbour at distance 0 and exactly
    ``n_neighbors`` columns (for N < 4096 it does not prune extra columns itself, which would
    silently change the neighbourhood size). Missing entries keep index -1 (umap skips those edges)
    but get a *finite* distance (the row's largest real distance): an ``inf`` would make umap's
    per-point bandwidth infinite and flatten every weight in that row to 1.
    Self entries that a graph may still contain are dropped so self never appears twice.
    """
    idx = np.asarray(indices)
    dist = np.asarray(distances, dtype=np.float32)
    if idx.ndim != 2 or idx.shape != dist.shape:
        raise EngineError(
            f"graph: indices {idx.shape} and distances {dist.shape} must be 2-D arrays of the same shape"
        )
    n, k = idx.shape
    idx = idx.astype(np.int64, copy=True)
    dist = dist.copy()
    rows = np.arange(n, dtype=np.int64)[:, None]
    bad = (idx < 0) | (idx >= n) | (idx == rows) | ~np.isfinite(dist)
    idx[bad] = -1
    dist[bad] = np.inf
    # Keep rows ascending with missing entries last (stable, so ties keep the graph's order).
    order = np.argsort(dist, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    m = max(1, min(int(n_neighbors), k + 1)) - 1  # real neighbours kept per row
    idx = idx[:, :m]
    dist = dist[:, :m]
    finite = np.isfinite(dist)
    row_max = np.where(finite, dist, -np.inf).max(axis=1, initial=-np.inf)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0).astype(np.float32)
    dist = np.where(finite, dist, row_max[:, None]).astype(np.float32)
    out_idx = np.concatenate([rows, idx], axis=1)
    out_dist = np.concatenate([np.zeros((n, 1), np.float32), dist], axis=1)
    return np.ascontiguousarray(out_idx), np.ascontiguousarray(out_dist)


def resolve_backend(backend: str, vectors: np.ndarray | None) -> str:
    """'auto' -> 'cuml' when cuML and a GPU are present and vectors are given, else 'cpu'."""
    if backend not in {"auto", "cpu", "umap", "cuml"}:
        raise EngineError(f"backend={backend!r}: expected one of auto, cpu, cuml")
    if backend == "umap":
        return "cpu"
    if backend == "cuml":
        if not hardware.cuml_usable():
            raise EngineError("backend='cuml': cuML or a CUDA GPU is not available here; use backend='cpu'")
        if vectors is None:
            raise EngineError("backend='cuml' needs vectors= (cuML UMAP takes the raw vectors)")
        return "cuml"
    if backend == "auto" and vectors is not None and hardware.cuml_usable():
        return "cuml"
    return "cpu"


def layout_features(vectors: np.ndarray, dim: int = 64, block: int = 65536, seed: int = 0) -> np.ndarray:
    """A (N, dim) Gaussian random projection of the vectors, computed block by block.

    umap-learn only needs X to place the centroids of disconnected components, and it copies X
    (``X[index]``): at 1M x 1024 that is 4 GB. Centroid distances survive a random projection
    (Johnson-Lindenstrauss), so 64 columns do the job at 1/16 of the memory.
    """
    n, d = vectors.shape
    if d <= dim:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    proj = np.random.default_rng(seed).normal(size=(d, dim)).astype(np.float32) / np.sqrt(dim)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, block):
        out[start : start + block] = np.asarray(vectors[start : start + block], dtype=np.float32) @ proj
    return out


def fallback_layout(n: int, vectors: np.ndarray | None = None) -> np.ndarray:
    """Layout for corpora too small for UMAP: PCA of the vectors when given, else points on a circle."""
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n == 1:
        return np.zeros((1, 2), np.float32)
    if vectors is not None:
        x = np.asarray(vectors, dtype=np.float64)[:n]
        x = x - x.mean(axis=0, keepdims=True)
        if np.abs(x).max() > 0:
            u, s, _ = np.linalg.svd(x, full_matrices=False)
            coords = np.zeros((n, 2))
            r = min(2, u.shape[1])
            coords[:, :r] = u[:, :r] * s[:r]
            return coords.astype(np.float32)
    angle = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)


def community_start(graph: Any, labels: np.ndarray, seed: int | None = 42) -> np.ndarray:
    """(N, 2) start of the map from the topics alone (PAGA-style, as scanpy's ``init_pos='paga'``).

    Each topic is placed by a force-directed layout of the graph of topics (kNN edges between them as
    weights); its documents start at its place with a spread that grows with its size; a noise document
    starts at the mean place of its neighbours' topics. The 2-D refinement on the document graph
    (:func:`layout_from_embedding`) then moves every document. At 1M documents this costs seconds,
    where a node embedding of the whole graph costs minutes.
    """
    import igraph as ig
    import scipy.sparse as sp

    idx = np.asarray(graph.indices).astype(np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    n = lab.size
    rng = np.random.default_rng(seed)
    m = int(lab.max()) + 1 if n and lab.max() >= 0 else 0
    if m == 0:
        return rng.normal(size=(n, 2)).astype(np.float32)
    src = np.repeat(np.arange(n), idx.shape[1])
    dst = idx.ravel()
    ok = dst >= 0
    a, b = lab[src[ok]], lab[dst[ok]]
    keep = (a >= 0) & (b >= 0) & (a != b)
    w = sp.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(m, m)).tocsr()
    w = sp.triu(w + w.T, k=1).tocoo()
    sizes = np.bincount(lab[lab >= 0], minlength=m).astype(np.float64)
    if m == 1:
        centres = np.zeros((1, 2))
    else:
        topics = ig.Graph(n=m, edges=np.column_stack([w.row, w.col]).tolist())
        state = np.random.RandomState(seed if seed is not None else None)
        start = state.uniform(-1, 1, size=(m, 2)).tolist()
        centres = np.asarray(
            topics.layout_fruchterman_reingold(
                weights=np.log1p(w.data).tolist(), seed=start, niter=500
            ).coords
        )
        centres = (centres - centres.mean(axis=0)) / (np.abs(centres - centres.mean(axis=0)).max() or 1.0)
    spacing = 1.0 / np.sqrt(m)
    spread = spacing * 0.5 * np.sqrt(sizes / sizes.max())
    out = np.empty((n, 2))
    clustered = lab >= 0
    out[clustered] = (
        centres[lab[clustered]] + rng.normal(size=(int(clustered.sum()), 2)) * spread[lab[clustered], None]
    )
    for i in np.flatnonzero(~clustered):
        neigh = lab[idx[i][idx[i] >= 0]]
        neigh = neigh[neigh >= 0]
        base = centres[neigh].mean(axis=0) if neigh.size else np.zeros(2)
        out[i] = base + rng.normal(size=2) * spacing * 0.5
    return out.astype(np.float32)


def layout_from_embedding(
    graph: Any,
    cluster_embedding: np.ndarray,
    random_state: int | None = 42,
    n_epochs: int = 200,
    n_neighbors: int = 15,
) -> np.ndarray:
    """2-D layout that reuses the cluster stage: PCA of its node embedding, refined on the same fuzzy graph.

    EVoC's node-embedding optimiser (UMAP's objective, numba) in 2 dimensions, started from the
    2 leading principal axes of the cluster embedding, so the map shows the clusters the cluster
    stage found and needs no spectral initialisation. With a seed it runs EVoC's reproducible
    (still multi-threaded) update; ``random_state=None`` uses its faster lock-free update.
    """
    from evoc.node_embedding import node_embedding

    from engine.cluster.embedding import fuzzy_graph

    emb = np.asarray(cluster_embedding, dtype=np.float64)
    n = emb.shape[0]
    if n < MIN_UMAP_POINTS:
        return fallback_layout(n, emb)
    centred = emb - emb.mean(axis=0)
    # 2 leading principal axes from the small (d x d) covariance: O(N d^2), fine at 1M x 4
    _, vecs = np.linalg.eigh(centred.T @ centred)
    init = centred @ vecs[:, ::-1][:, :2]
    span = float(np.abs(init).max()) or 1.0
    init = np.ascontiguousarray(init / span * 10.0, dtype=np.float32)
    fuzzy = fuzzy_graph(graph, n_neighbors)
    rng = np.random.RandomState(random_state) if random_state is not None else np.random.RandomState()
    out = node_embedding(
        fuzzy,
        n_components=2,
        n_epochs=n_epochs,
        initial_embedding=init,
        negative_sample_rate=1.0,
        noise_level=0.5,
        random_state=rng,
        verbose=False,
        reproducible_flag=random_state is not None,
        initial_alpha=0.1,
    )
    return np.ascontiguousarray(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)


def project_2d(
    graph: Any,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int | None = 42,
    backend: str = "auto",
    vectors: np.ndarray | None = None,
    n_epochs: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """2-D UMAP layout of a kNN graph, reusing the graph (no second neighbour search).

    ``graph`` is an ``engine.graph.KnnGraph`` or any object with ``.indices``/``.distances``.
    ``n_neighbors`` counts the point itself (umap-learn's convention); it is capped at the graph's
    k + 1. ``vectors`` (optional, (N, dim)) only serve umap's layout of *disconnected* components
    (it places component centroids) and the small-N PCA fallback; without them components are placed
    at random. With fewer than ``MIN_UMAP_POINTS`` documents (or n_neighbors < 2 available) we return
    :func:`fallback_layout`. ``random_state`` makes the layout reproducible but single-threaded;
    pass ``None`` for a parallel, non-deterministic run. Returns float32 (N, 2).
    """
    try:
        indices, distances = graph.indices, graph.distances
    except AttributeError as exc:
        raise EngineError("graph: expected an object with .indices and .distances (a KnnGraph)") from exc
    indices = np.asarray(indices)
    n = int(indices.shape[0]) if indices.ndim == 2 else 0
    if indices.ndim != 2:
        raise EngineError(f"graph: indices must be 2-D (N, k), got shape {indices.shape}")
    if vectors is not None and len(vectors) != n:
        raise EngineError(f"vectors: {len(vectors)} rows but the graph has {n}")
    if n_neighbors < 2:
        raise EngineError(f"n_neighbors={n_neighbors}: must be >= 2")
    if not 0.0 <= min_dist:
        raise EngineError(f"min_dist={min_dist}: must be >= 0")
    k_eff = min(int(n_neighbors), indices.shape[1] + 1, n - 1)
    if n < MIN_UMAP_POINTS or k_eff < 2:
        log.info("project_2d: %d documents, graph k=%d: fallback layout, not UMAP", n, indices.shape[1])
        return fallback_layout(n, vectors)
    knn_idx, knn_dist = prepare_precomputed_knn(indices, distances, k_eff)
    which = resolve_backend(backend, vectors)
    if which == "cuml":
        return _project_cuml(knn_idx, knn_dist, k_eff, min_dist, random_state, vectors, n_epochs, progress)
    return _project_umap(knn_idx, knn_dist, k_eff, min_dist, random_state, vectors, n_epochs, progress)


def _project_umap(
    knn_idx: np.ndarray,
    knn_dist: np.ndarray,
    n_neighbors: int,
    min_dist: float,
    random_state: int | None,
    vectors: np.ndarray | None,
    n_epochs: int | None,
    progress: bool,
) -> np.ndarray:
    import umap

    n = knn_idx.shape[0]
    # X is only used by umap for N and for centroids of disconnected components; a (N, 1) zero
    # placeholder is enough when no vectors are given (components are then placed at random).
    x = layout_features(vectors) if vectors is not None else np.zeros((n, 1), np.float32)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        n_components=2,
        min_dist=min_dist,
        metric="euclidean",
        random_state=random_state,
        n_epochs=n_epochs,
        precomputed_knn=(knn_idx, knn_dist),
        verbose=progress,
        tqdm_kwds={"disable": not progress, "desc": "UMAP epochs"},
    )
    with warnings.catch_warnings():
        # Expected and harmless here: no NNDescent index (so no transform()), n_jobs forced to 1
        # by random_state, and spectral-init complaints on tiny/disconnected graphs.
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*disconnected.*")
        warnings.filterwarnings("ignore", message=".*Spectral initialisation failed.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        emb = reducer.fit_transform(x)
    if getattr(reducer, "_knn_search_index", None) is not None:  # pragma: no cover - guard
        log.warning("project_2d: umap built its own neighbour index; the precomputed graph was ignored")
    emb = np.asarray(emb, dtype=np.float32)
    if not np.all(np.isfinite(emb)):
        emb = np.nan_to_num(emb, nan=0.0, posinf=0.0, neginf=0.0)
    return emb


def _project_cuml(
    knn_idx: np.ndarray,
    knn_dist: np.ndarray,
    n_neighbors: int,
    min_dist: float,
    random_state: int | None,
    vectors: np.ndarray,
    n_epochs: int | None,
    progress: bool,
) -> np.ndarray:  # pragma: no cover - needs a GPU
    from cuml.manifold import UMAP as CumlUMAP

    # cuML has no "-1 = missing" convention: point missing entries at self (a self-loop is ignored).
    rows = np.broadcast_to(np.arange(knn_idx.shape[0])[:, None], knn_idx.shape)
    idx = np.where(knn_idx < 0, rows, knn_idx).astype(np.int64)
    dist = np.where(knn_idx < 0, 0.0, knn_dist).astype(np.float32)
    reducer = CumlUMAP(
        n_neighbors=n_neighbors,
        n_components=2,
        min_dist=min_dist,
        metric="euclidean",
        random_state=random_state,
        n_epochs=n_epochs,
        precomputed_knn=(idx, dist),
        verbose=progress,
        output_type="numpy",
    )
    emb = reducer.fit_transform(np.asarray(vectors, dtype=np.float32))
    return np.asarray(emb, dtype=np.float32)
