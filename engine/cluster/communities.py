"""Topics as Leiden communities of the kNN graph: the default cluster space.

Why: the node-embedding clusterings (EVoC's stages, and their consensus) depend on a random draw and
on the exact corpus: another seed or a random 10 % fewer documents gave ARI 0.65-0.70 against the
first answer, and the primary layer's granularity jumped. Community detection on the same kNN graph
-- the standard of single-cell analysis (PhenoGraph, Seurat, scanpy: Leiden on a k=30 graph) --
optimises one global objective (modularity) instead of reading densities off a few-dimensional
layout, so a few changed edges move few documents. Measured on four labelled corpora with the same
graph (benchmarks/stability.py, RESULTS.md section 12): NMI higher than the node-embedding consensus
and than EVoC on every corpus, seed and 90 %-subsample ARI >= 0.8, at a fraction of the cost.

Steps (each a plain function on arrays):

* ``undirected_edges``: the kNN graph as one undirected, unweighted edge per neighbour pair.
* ``leiden_runs``: R Leiden runs (igraph, modularity, ``resolution``), seeds drawn from the user's.
* ``medoid``: the run agreeing most with the others (mean ARI): a partition the runs actually
  found, chosen by a rule that does not depend on any one run's seed.
* ``vote`` (engine.cluster.consensus): the primary is the runs' vote in the medoid's labels: each run's
  clusters are read as the medoid cluster holding most of their members, and each document goes
  where most runs put it. Modularity has near-ties (a block of documents that joins one topic or a
  neighbouring one at almost the same score); one run settles each by its seed, the vote by the
  majority of the runs (RESULTS.md section 15: seed and subsample ARI up on all four labelled
  corpora at the same NMI).
* layers: the primary, its sub-communities (Leiden inside each primary community: the finer layer)
  and coarser layers (Leiden on the graph of communities at resolution / 2, / 4, ...): nested by
  construction, finest first, so each cluster's parent is exact.

Modularity's scale grows with the corpus (its null model is global): the number of primary topics
grows roughly with the square root of the graph's size, and the finer layer keeps the detail.
Communities smaller than ``min_cluster_size`` are noise (-1).
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from engine.cluster.consensus import run_agreement, run_seeds, vote
from engine.cluster.layers import ClusterLayers, parent_links, relabel_by_size
from engine.errors import EngineError

#: Leiden runs behind the primary (their vote in the medoid's labels). 8 measured: seed ARI >= 0.85 and
#: 90 %-subsample ARI >= 0.80 (mean of five >= 0.86) on the four labelled corpora; 16 runs: 0.89 / 0.81 at
#: twice the cost (RESULTS.md section 15).
DEFAULT_RUNS = 8
#: Modularity resolution of the primary (1 = the classic modularity; higher = more, smaller topics).
DEFAULT_RESOLUTION = 1.0
#: A coarser layer that merges nothing (or everything) is retried at the resolution divided by this.
COARSEN = 2.0
#: At most this many coarser layers above the primary.
MAX_COARSE_LAYERS = 3


def undirected_edges(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 of each undirected neighbour pair once (rows < cols); missing (-1) skipped."""
    idx = np.asarray(indices, dtype=np.int64)
    n, k = idx.shape
    ok = (idx >= 0) & (idx != np.arange(n)[:, None])
    counts = ok.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    adj = sp.csr_matrix((np.ones(int(indptr[-1]), np.int8), idx[ok], indptr), shape=(n, n))
    upper = sp.triu(adj + adj.T, k=1).tocoo()
    return upper.row.astype(np.int64), upper.col.astype(np.int64)


def _fixed_width(values: np.ndarray, width: int) -> np.ndarray:
    """(m, width) uint8 ASCII of non-negative integers, right-aligned with leading spaces."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // powers) % 10
    out = (digits + ord("0")).astype(np.uint8)
    out[(values[:, None] < powers) & (powers > 1)] = ord(" ")
    return out


def igraph_from_edges(n: int, rows: np.ndarray, cols: np.ndarray):
    """An undirected igraph Graph, built through igraph's C edge-list reader.

    python-igraph converts a Python/numpy edge list element by element (at 1M nodes x 22M edges:
    ~20 s and ~3.5 GB of Python integers); the pairs are written instead as fixed-width text (numpy,
    no Python objects) to a temporary file that igraph reads in C.
    """
    import igraph as ig

    width = max(len(str(max(n - 1, 0))), 1)
    fd, path = tempfile.mkstemp(prefix="engine-edges-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as fh:
            step = 1_000_000
            for s in range(0, rows.size, step):
                a, b = rows[s : s + step], cols[s : s + step]
                line = np.empty((a.size, 2 * width + 2), dtype=np.uint8)
                line[:, :width] = _fixed_width(a, width)
                line[:, width] = ord(" ")
                line[:, width + 1 : 2 * width + 1] = _fixed_width(b, width)
                line[:, -1] = ord("\n")
                fh.write(line.tobytes())
        graph = ig.Graph.Read_Edgelist(path, directed=False)
    finally:
        os.unlink(path)
    if graph.vcount() < n:
        graph.add_vertices(n - graph.vcount())  # isolated trailing nodes
    return graph


def leiden(graph, resolution: float, seed: int | None, weights: str | None = None) -> np.ndarray:
    """One Leiden run (modularity, iterated until stable); int64 community per node."""
    import igraph as ig

    ig.set_random_number_generator(random.Random(seed))
    part = graph.community_leiden(
        objective_function="modularity", weights=weights, resolution=float(resolution), n_iterations=-1
    )
    return np.asarray(part.membership, dtype=np.int64)


def leiden_runs(graph, resolution: float, seeds: list[int | None]) -> list[np.ndarray]:
    """One Leiden partition per seed."""
    return [leiden(graph, resolution, s) for s in seeds]


def medoid(partitions: list[np.ndarray]) -> int:
    """Index of the partition with the highest mean ARI to the others (the first on ties)."""
    from sklearn.metrics import adjusted_rand_score

    r = len(partitions)
    if r <= 2:
        return 0
    score = np.zeros(r)
    for i in range(r):
        for j in range(i + 1, r):
            a = adjusted_rand_score(partitions[i], partitions[j])
            score[i] += a
            score[j] += a
    return int(np.argmax(score))


def small_to_noise(labels: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """Communities smaller than ``min_cluster_size`` become noise; ids renumbered by size."""
    lab = np.asarray(labels, dtype=np.int64)
    out = lab.copy()
    ok = lab >= 0
    if ok.any():
        sizes = np.bincount(lab[ok])
        out[ok] = np.where(sizes[lab[ok]] >= min_cluster_size, lab[ok], -1)
    return relabel_by_size(out)


def sub_communities(
    graph,
    primary: np.ndarray,
    resolution: float,
    seed: int | None,
    min_cluster_size: int,
) -> np.ndarray:
    """The finer layer: Leiden inside each primary community (its own induced subgraph)."""
    n = primary.size
    out = np.full(n, -1, dtype=np.int64)
    next_id = 0
    for c in range(int(primary.max()) + 1 if primary.size else 0):
        members = np.flatnonzero(primary == c)
        if members.size < 2 * min_cluster_size:
            out[members] = next_id
            next_id += 1
            continue
        sub = leiden(graph.induced_subgraph(members.tolist()), resolution, seed)
        out[members] = sub + next_id
        next_id += int(sub.max()) + 1
    return small_to_noise(out, min_cluster_size)


def coarser_layers(
    rows: np.ndarray, cols: np.ndarray, primary: np.ndarray, resolution: float, seed: int | None
) -> list[np.ndarray]:
    """Coarser layers: Leiden on the graph of communities (edge counts between them), at the primary's
    resolution first, then / 2, / 4, ... until it merges some communities but not all.

    Each layer groups whole clusters of the one below, so the tree is nested; a layer is kept only
    when it has fewer clusters than the one below it (and more than one).
    """
    layers: list[np.ndarray] = []
    current = primary
    res = resolution
    for _ in range(MAX_COARSE_LAYERS):
        m = int(current.max()) + 1 if current.size else 0
        if m <= 2:
            break
        a, b = current[rows], current[cols]
        ok = (a >= 0) & (b >= 0)
        w = sp.coo_matrix((np.ones(int(ok.sum())), (a[ok], b[ok])), shape=(m, m)).tocsr()
        w = (w + w.T).tocoo()  # symmetric counts; the diagonal holds twice the internal edges
        keep = w.row <= w.col
        weight = np.where(w.row[keep] == w.col[keep], w.data[keep] / 2.0, w.data[keep])
        import igraph as ig

        cg = ig.Graph(n=m, edges=np.column_stack([w.row[keep], w.col[keep]]).tolist(), directed=False)
        cg.es["weight"] = weight.tolist()
        coarse_of_cluster = None
        while res > 1e-3:
            groups = leiden(cg, res, seed, weights="weight")
            if 1 < int(groups.max()) + 1 < m:
                coarse_of_cluster = groups
                break
            res /= COARSEN
        if coarse_of_cluster is None:
            break
        nxt = np.where(current >= 0, coarse_of_cluster[np.maximum(current, 0)], -1)
        nxt = relabel_by_size(nxt)
        layers.append(nxt)
        current = nxt
    return layers


def cluster_communities(
    graph,
    min_cluster_size: int = 5,
    n_clusters: int | None = None,
    seed: int | None = 42,
    runs: int = DEFAULT_RUNS,
    resolution: float = DEFAULT_RESOLUTION,
) -> ClusterLayers:
    """Layers (finest first) of Leiden communities of ``graph`` (a KnnGraph or anything with ``indices``).

    Primary: the vote of ``runs`` Leiden runs at ``resolution`` (or, with ``n_clusters``, at the
    resolution whose communities number closest to it) in the labels of their medoid. ``strengths``
    of the primary and coarser layers: each document's share of runs agreeing with its cluster
    (``run_agreement``); the finer layer inherits the primary's.
    """
    if runs < 1:
        raise EngineError(f"consensus_runs must be >= 1, got {runs}")
    if resolution <= 0:
        raise EngineError(f"resolution must be > 0, got {resolution}")
    t0 = time.perf_counter()
    idx = np.asarray(graph.indices)
    n = int(idx.shape[0])
    rows, cols = undirected_edges(idx)
    g = igraph_from_edges(n, rows, cols)
    rule_res = ""
    if n_clusters is not None:
        resolution = resolution_for(g, n_clusters, min_cluster_size, seed)
        rule_res = f" (resolution {resolution:.3g}: closest to --n-clusters {n_clusters})"
    seeds = run_seeds(seed, runs)
    parts = [small_to_noise(p, min_cluster_size) for p in leiden_runs(g, resolution, seeds)]
    best = medoid(parts)
    voted = vote(parts, parts[best])
    moved = int(np.count_nonzero(voted != parts[best]))
    primary = small_to_noise(voted, min_cluster_size)
    fine = sub_communities(g, primary, resolution, seed, min_cluster_size)
    del g
    coarse = coarser_layers(rows, cols, primary, resolution, seed)
    labels = [primary] + coarse
    primary_at = 0
    if fine.max() + 1 > primary.max() + 1:
        labels.insert(0, fine)
        primary_at = 1
    agree = run_agreement(primary, parts)
    strengths = [agree if i <= primary_at else run_agreement(lab, parts) for i, lab in enumerate(labels)]
    parents = [parent_links(labels[i], labels[i + 1]) for i in range(len(labels) - 1)]
    parents.append(np.full(int(labels[-1].max()) + 1 if labels[-1].size else 0, -1, dtype=np.int64))
    rule = (
        f"Leiden communities of the kNN graph, modularity at resolution {resolution:.3g}{rule_res}; "
        f"the vote of {runs} runs in the labels of the one agreeing most with the others "
        f"({moved:,} documents placed otherwise by the vote)"
    )
    return ClusterLayers(
        labels=labels,
        strengths=strengths,
        persistence=[float(np.mean(s)) if s.size else 0.0 for s in strengths],
        parents=parents,
        primary=primary_at,
        seconds=time.perf_counter() - t0,
        rule=rule,
        extra={"runs": runs, "resolution": resolution, "medoid_run": best, "moved_by_vote": moved},
    )


def resolution_for(graph, n_clusters: int, min_cluster_size: int, seed: int | None, steps: int = 14) -> float:
    """The resolution whose Leiden communities (of >= ``min_cluster_size``) number closest to ``n_clusters``.

    The count grows with the resolution; a bisection in log space between 1/64 and 64 (one seeded
    run per step) stops at the first exact hit.
    """
    lo, hi = np.log(1 / 64), np.log(64.0)
    best, best_gap = 1.0, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        lab = small_to_noise(leiden(graph, float(np.exp(mid)), seed), min_cluster_size)
        count = int(lab.max()) + 1
        gap = abs(count - n_clusters)
        if best_gap is None or gap < best_gap:
            best, best_gap = float(np.exp(mid)), gap
        if count == n_clusters:
            break
        if count < n_clusters:
            lo = mid
        else:
            hi = mid
    return best
