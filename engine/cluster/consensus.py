"""Consensus of several node-embedding runs on the same kNN graph (evidence accumulation on the graph's edges).

One node embedding is one random draw: another seed, or 10 % fewer documents, moves cluster borders
and even the number of clusters (seed ARI of the old single-run primary: 0.13-0.76). Evidence
accumulation (Fred & Jain, 2005) removes that dependence: cluster the graph R times, weight each kNN
edge by the share of clusterings in which its two ends share a cluster (the co-association), and
keep the edges enough of them agree on. Clusters are the connected pieces of the kept edges; a piece
smaller than ``min_cluster_size`` is noise. The co-association estimates a fixed quantity (its
expectation over seeds), so the consensus converges as R grows; the cost is O(N * k * R) on the graph
the engine already has, plus the R node embeddings.

Here every layer of every run votes (a run's layers go from fine to coarse, so the share of layers
that join two neighbours says how early in the topic tree they meet). The consensus layers are the
pieces of the kNN edges that more than 70 %, 50 % and 30 % of those (run, layer) clusterings agree on:
nested by construction (a higher level keeps a subset of the edges), finest first. The primary is
the 30 % level. That level was chosen on two corpora (AG News, BBC) and confirmed on two others
(StackOverflow titles, search snippets): on all four it had the best NMI of the levels, with the
highest seed agreement on three (benchmarks/consensus_levels.py, RESULTS.md section 12).

Each document's ``stability`` is the share of runs that agree with the consensus about it: in each
run its cluster is mapped to the consensus cluster holding most of that cluster's members (noise to
noise), and the run agrees when that is the document's consensus cluster. Each run contributes its
layer closest to the consensus layer (highest ARI).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from engine.cluster.layers import ClusterLayers, parent_links, relabel_by_size

#: a kNN edge joins two documents in the consensus when more than this share of runs co-cluster them.
MAJORITY = 0.5
#: Edge-agreement levels of the consensus layers, finest first; the last one is the primary layer.
LEVELS = (0.7, 0.5, 0.3)
#: Node-embedding runs per clustering (benchmarks: seed ARI of the primary >= 0.8 from about 16 runs).
DEFAULT_RUNS = 16


@numba.njit(cache=True)
def _coassociation(indices, runs):
    n, k = indices.shape
    n_runs = runs.shape[0]
    out = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        for p in range(k):
            j = indices[i, p]
            if j < 0:
                continue
            c = 0
            for r in range(n_runs):
                a = runs[r, i]
                if a >= 0 and a == runs[r, j]:
                    c += 1
            out[i, p] = c / n_runs
    return out


def coassociation(indices: np.ndarray, runs: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """(N, k) float32: for each kNN edge, the share of runs in which both ends share a cluster."""
    idx = np.ascontiguousarray(indices, dtype=np.int64)
    stacked = np.ascontiguousarray(np.stack([np.asarray(r, dtype=np.int32) for r in runs]))
    return _coassociation(idx, stacked)


def majority_clusters(
    indices: np.ndarray, coassoc: np.ndarray, min_cluster_size: int, threshold: float = MAJORITY
) -> np.ndarray:
    """Connected pieces of the edges with co-association > ``threshold``; small pieces are noise (-1).

    Ids are ordered by size (0 = largest), as every layer's.
    """
    idx = np.asarray(indices)
    n, k = idx.shape
    keep = (idx >= 0) & (np.asarray(coassoc) > threshold)
    rows = np.repeat(np.arange(n, dtype=np.int64), k)[keep.ravel()]
    cols = idx.ravel()[keep.ravel()].astype(np.int64)
    adj = sp.coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, pieces = connected_components(adj, directed=True, connection="weak")
    sizes = np.bincount(pieces)
    labels = np.where(sizes[pieces] >= max(int(min_cluster_size), 2), pieces, -1)
    return relabel_by_size(labels)


def mapped_labels(target: np.ndarray, run: np.ndarray) -> np.ndarray:
    """``run`` read in ``target``'s labels: each run cluster becomes the ``target`` cluster holding most
    of its members (the lowest label on ties); run noise stays noise (-1).

    The majority mapping behind both ``run_agreement`` and ``vote``.
    """
    t = np.asarray(target, dtype=np.int64) + 1  # noise -> 0
    r = np.asarray(run, dtype=np.int64) + 1
    n = t.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    table = sp.coo_matrix((np.ones(n), (r, t)), shape=(int(r.max()) + 1, int(t.max()) + 1)).toarray()
    mapped = table.argmax(axis=1)
    mapped[0] = 0  # run noise is read as target noise
    return mapped[r] - 1


def run_agreement(consensus: np.ndarray, runs: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Per document, the share of runs whose (mapped) cluster is its consensus cluster, in [0, 1]."""
    consensus = np.asarray(consensus, dtype=np.int64)
    agree = np.zeros(consensus.size, dtype=np.float64)
    for run in runs:
        agree += mapped_labels(consensus, run) == consensus
    return (agree / max(len(runs), 1)).astype(np.float32)


@numba.njit(cache=True)
def _vote(mapped, base):
    n_runs, n = mapped.shape
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        top, pick, base_count = 0, 0, 0
        for r in range(n_runs):
            lab = mapped[r, i]
            c = 0
            for q in range(n_runs):
                if mapped[q, i] == lab:
                    c += 1
            if lab == base[i]:
                base_count = c
            if c > top or (c == top and lab < pick):
                top, pick = c, lab
        out[i] = base[i] if base_count == top else pick
    return out


def vote(runs: list[np.ndarray], base: np.ndarray) -> np.ndarray:
    """Voting consensus (Dimitriadou et al., 2002) in ``base``'s label space.

    Every run is read in ``base``'s labels (``mapped_labels``) and each document takes the label most
    runs give it; on a tie ``base``'s own label, else the lowest. No clustering runs on the votes, so a
    vote cannot create a new near-tie: a block of documents that most runs attach to one topic goes
    there, however ``base`` placed it.
    """
    base = np.asarray(base, dtype=np.int64)
    if not runs:
        return base.copy()
    mapped = np.stack([mapped_labels(base, r) for r in runs])
    return _vote(mapped, base)


def run_seeds(seed: int | None, n_runs: int) -> list[int | None]:
    """The seeds of the R runs: ``seed`` itself first, then R-1 drawn from it (None stays unseeded)."""
    if seed is None:
        return [None] * n_runs
    extra = np.random.SeedSequence(seed).generate_state(max(n_runs - 1, 0))
    return [int(seed)] + [int(s) for s in extra]


def closest_layers(target: np.ndarray, run_layers: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per run, its layer with the highest ARI to ``target`` (noise counted as one more label)."""
    from sklearn.metrics import adjusted_rand_score

    return [max(layers, key=lambda lab: adjusted_rand_score(target, lab)) for layers in run_layers]


def consensus_layers(
    indices: np.ndarray,
    run_layers: list[list[np.ndarray]],
    min_cluster_size: int,
    levels: tuple[float, ...] = LEVELS,
) -> ClusterLayers:
    """Consensus layers (finest first, primary = the last level) with per-document stability.

    ``strengths`` holds each layer's per-document stability; ``persistence`` the layer's mean stability
    (the consensus has no HDBSCAN persistence; the field keeps the ClusterLayers shape).
    """
    votes = [lab for layers in run_layers for lab in layers]
    w = coassociation(indices, votes)
    labels = [majority_clusters(indices, w, min_cluster_size, level) for level in levels]
    strengths = [run_agreement(lab, closest_layers(lab, run_layers)) for lab in labels]
    parents = [parent_links(labels[i], labels[i + 1]) for i in range(len(labels) - 1)]
    parents.append(np.full(int(labels[-1].max()) + 1 if labels[-1].size else 0, -1, dtype=np.int64))
    primary = len(labels) - 1
    rule = (
        f"consensus of {len(run_layers)} runs: kNN neighbours together in more than "
        f"{levels[primary]:.0%} of the runs' layers"
    )
    return ClusterLayers(
        labels=labels,
        strengths=strengths,
        persistence=[float(np.mean(st)) if st.size else 0.0 for st in strengths],
        parents=parents,
        primary=primary,
        rule=rule,
        extra={"levels": list(levels), "runs": len(run_layers)},
    )
