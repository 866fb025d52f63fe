"""Cluster layers (a topic tree) from a low-dimensional embedding, and the rule that picks the primary one.

EVoC 0.3.2's ``build_cluster_layers`` runs HDBSCAN*'s hierarchy once on the node embedding and
reads several flat clusterings off it (PLSCAN-style: the peaks of total persistence over
min_cluster_size, kept only when they differ enough). Here the layers are:

* ordered finest -> coarsest (most clusters first);
* relabelled so that within a layer cluster 0 is the largest (ties: lowest first member);
* linked: each cluster's ``parent`` is the cluster of the next coarser layer holding most of its
  members (-1 when they are all noise there, and for the coarsest layer).

Primary layer (the ``cluster`` column) -- a documented rule that looks only at the hierarchy:
with ``n_clusters`` the layer whose cluster count is closest to it; otherwise the layer of highest
total persistence (EVoC's own choice, ``EVoC.labels_``) among the layers that leave at most
``max_noise`` of the documents unclustered; when no layer qualifies, the layer with least noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from engine.errors import EngineError

#: A primary layer may leave at most this share of documents as noise (unless none does).
DEFAULT_MAX_NOISE = 0.25


@dataclass
class ClusterLayers:
    """Per-layer labels (finest first), membership strengths, persistence and parent links."""

    labels: list[np.ndarray]
    strengths: list[np.ndarray]
    persistence: list[float]
    parents: list[np.ndarray]
    primary: int
    seconds: float = 0.0
    rule: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.labels)

    def n_clusters(self, layer: int) -> int:
        lab = self.labels[layer]
        return int(lab.max()) + 1 if lab.size else 0

    def noise_share(self, layer: int) -> float:
        lab = self.labels[layer]
        return float((lab < 0).mean()) if lab.size else 0.0

    def summary(self) -> list[dict]:
        """One dict per layer: clusters, noise share, persistence, primary flag."""
        return [
            {
                "layer": i,
                "clusters": self.n_clusters(i),
                "noise_share": round(self.noise_share(i), 4),
                "persistence": float(self.persistence[i]),
                "primary": i == self.primary,
            }
            for i in range(self.n_layers)
        ]


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0..C-1 by decreasing size (ties: earliest first member); -1 stays."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    mask = labels >= 0
    if not mask.any():
        return out
    ids, first, counts = np.unique(labels[mask], return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new_id = np.empty(ids.max() + 1, dtype=np.int64)
    new_id[ids[order]] = np.arange(len(ids))
    out[mask] = new_id[labels[mask]]
    return out


def parent_links(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """For each cluster of ``fine``: the ``coarse`` cluster holding most of its members (-1: all noise)."""
    n_fine = int(fine.max()) + 1 if fine.size and fine.max() >= 0 else 0
    parents = np.full(n_fine, -1, dtype=np.int64)
    m = (fine >= 0) & (coarse >= 0)
    if n_fine == 0 or not m.any():
        return parents
    n_coarse = int(coarse.max()) + 1
    counts = np.zeros((n_fine, n_coarse), dtype=np.int64)
    np.add.at(counts, (fine[m], coarse[m]), 1)
    has = counts.sum(axis=1) > 0
    parents[has] = counts[has].argmax(axis=1)
    return parents


def choose_primary(
    labels: list[np.ndarray],
    persistence: list[float],
    n_clusters: int | None = None,
    max_noise: float = DEFAULT_MAX_NOISE,
) -> tuple[int, str]:
    """Index of the primary layer and the rule that chose it (see the module docstring)."""
    if not labels:
        raise EngineError("no cluster layers to choose from")
    counts = [int(lab.max()) + 1 if lab.size else 0 for lab in labels]
    noise = [float((lab < 0).mean()) if lab.size else 0.0 for lab in labels]
    if n_clusters is not None:
        best = min(range(len(labels)), key=lambda i: (abs(counts[i] - n_clusters), noise[i], i))
        return best, f"closest to --n-clusters {n_clusters}"
    ok = [i for i in range(len(labels)) if noise[i] <= max_noise and counts[i] > 0]
    if ok:
        best = max(ok, key=lambda i: (persistence[i], -i))
        return best, f"highest persistence with noise <= {max_noise:.0%}"
    best = min(range(len(labels)), key=lambda i: (noise[i], i))
    return best, f"least noise (no layer has noise <= {max_noise:.0%})"


def build_layers(
    embedding: np.ndarray,
    min_cluster_size: int = 5,
    min_samples: int = 5,
    n_clusters: int | None = None,
    seed: int | None = 42,
    max_layers: int = 10,
    min_similarity_threshold: float = 0.2,
    max_noise: float = DEFAULT_MAX_NOISE,
) -> ClusterLayers:
    """Cluster layers of ``embedding`` (N, d) with EVoC's PLSCAN-style layer extraction.

    ``min_cluster_size`` is the finest layer's minimum cluster size; ``n_clusters`` asks for a
    layer of about that many clusters (EVoC's binary search over min_cluster_size) and makes it
    primary. ``seed`` not None selects EVoC's reproducible (deterministic) MST.
    """
    from evoc.clustering import build_cluster_layers

    t0 = time.perf_counter()
    x = np.ascontiguousarray(embedding, dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        lab = np.full(n, -1, dtype=np.int64)
        return ClusterLayers([lab], [np.zeros(n, np.float32)], [0.0], [np.zeros(0, np.int64)], 0)
    mcs = int(max(2, min(min_cluster_size, n // 2 if n >= 4 else 2)))
    ms = int(max(1, min(min_samples, n - 1)))
    raw_labels, raw_strengths, raw_persistence = build_cluster_layers(
        x,
        min_samples=ms,
        base_min_cluster_size=mcs,
        base_n_clusters=n_clusters,
        reproducible_flag=seed is not None,
        min_similarity_threshold=min_similarity_threshold,
        max_layers=max_layers,
    )
    # finest first (EVoC already sorts by cluster count, descending; keep it stable here)
    order = sorted(range(len(raw_labels)), key=lambda i: (-(int(np.max(raw_labels[i])) + 1), i))
    labels = [relabel_by_size(raw_labels[i]) for i in order]
    strengths = [np.asarray(raw_strengths[i], dtype=np.float32) for i in order]
    persistence = [float(raw_persistence[i]) for i in order]
    parents = [parent_links(labels[i], labels[i + 1]) for i in range(len(labels) - 1)]
    parents.append(np.full(int(labels[-1].max()) + 1 if labels[-1].size else 0, -1, dtype=np.int64))
    if n_clusters is not None:
        target_n = n_clusters
    else:
        target_n = None
    primary, rule = choose_primary(labels, persistence, target_n, max_noise)
    return ClusterLayers(labels, strengths, persistence, parents, primary, time.perf_counter() - t0, rule)
