"""Zero-shot topics: the user names the topics they expect; clusters close to a name take it.

``--topics "sport, politics, business"`` (or a file, one name per line). Each name is embedded with
the run's model, each cluster of the primary layer is represented by its centroid (the mean of its
documents' unit vectors, normalised), and a cluster whose centroid has cosine similarity at least
``--topic-threshold`` to its most similar name takes that name. All clusters taking one name are
merged into one topic (the id of the largest); clusters close to no name keep their own id and
c-TF-IDF name, and noise stays noise. Why centroids and not single documents: a cluster is already
a group of documents on one subject, and its centroid is far less noisy than any one document.

Threshold: cosine between a short name and a centroid is much lower than between two documents.
With all-MiniLM-L6-v2 on BBC News (13 clusters) each cluster's closest class name is its right
class, at cosine 0.18-0.34 (benchmarks/zeroshot.py, results/zeroshot_bbc.json); 0.15 names all 13
(NMI 0.765 against the classes), 0.3 only 4 (NMI 0.637). Default 0.15; raise it for topics that
should claim only clusters clearly about them.
"""

from __future__ import annotations

import os

import numpy as np

from engine.errors import EngineError


def parse_topics(value: str) -> list[str]:
    """Topic names from a comma-separated string, or from a file with one name per line."""
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as fh:
            names = [line.strip() for line in fh]
        where = f"--topics file {value}"
    else:
        names = [part.strip() for part in value.split(",")]
        where = "--topics"
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise EngineError(f"{where}: no topic names (give comma-separated names or a file, one per line)")
    return names


def match_topics(
    centroids: np.ndarray, topic_vectors: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the index of its most similar topic name, or -1 under ``threshold``; and that similarity."""
    t = np.asarray(topic_vectors, dtype=np.float32)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    sims = np.asarray(centroids, dtype=np.float32) @ t.T
    best = sims.argmax(axis=1)
    best_sim = sims[np.arange(len(best)), best]
    return np.where(best_sim >= threshold, best, -1), best_sim


def zero_shot_edits(
    labels: np.ndarray,
    vectors: np.ndarray,
    names: list[str],
    topic_vectors: np.ndarray,
    threshold: float,
) -> tuple[list[list[int]], dict[int, str], list[dict]]:
    """(merge groups, {cluster: topic name}, one match row per cluster) for the primary ``labels``.

    Clusters are listed largest first, so a group's first id (the id it keeps) is its largest cluster.
    """
    from engine.report import topic_centroids

    labels = np.asarray(labels, dtype=np.int64)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = [int(c) for c in ids[np.lexsort((ids, -sizes))]]
    if not order:
        return [], {}, []
    best, sim = match_topics(topic_centroids(labels, vectors, order), topic_vectors, threshold)
    groups: dict[int, list[int]] = {}
    rows = []
    for c, b, s in zip(order, best.tolist(), sim.tolist(), strict=True):
        rows.append({"cluster": c, "topic": names[b] if b >= 0 else None, "similarity": round(float(s), 4)})
        if b >= 0:
            groups.setdefault(b, []).append(c)
    merge_groups = [g for g in groups.values() if len(g) > 1]
    named = {g[0]: names[b] for b, g in groups.items()}
    return merge_groups, named, rows
