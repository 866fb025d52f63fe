"""Report stage, the analysis: per-cluster size, c-TF-IDF keywords and representative documents.

Writing the result (clusters.json, report.html) is engine.show.report; the map is engine.show.map.

Keywords: BERTopic's class-based TF-IDF over clean, language-aware tokens (engine.keywords).

Representative documents: within a cluster, highest HDBSCAN membership probability first; ties
(HDBSCAN gives probability 1.0 to the whole core of a cluster) are broken by cosine similarity to
the cluster centroid when ``vectors`` are given, else by lowest GLOSH outlier score, then position.
Exact duplicate texts are shown once. (BERTopic ranks a sample of documents by c-TF-IDF similarity;
membership + centroid is cheaper, deterministic and uses what HDBSCAN already measured.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from engine.errors import EngineError
from engine.keywords import class_tfidf, top_terms_scored
from engine.show.report import ClusterReport, to_python

__all__ = ["build_layers_report", "build_report", "representatives"]

REQUIRED_COLUMNS = ("id", "text", "cluster", "probability", "outlier_score")
#: Largest clusters whose centroid similarity is kept (report.html's heatmap and dendrogram).
MAX_SIMILARITY_TOPICS = 40


# --------------------------------------------------------------------------------------------------
# Representatives
# --------------------------------------------------------------------------------------------------
def representatives(
    positions: np.ndarray,
    probability: np.ndarray,
    outlier_score: np.ndarray,
    texts: np.ndarray,
    n: int,
    vectors: np.ndarray | None = None,
) -> list[int]:
    """Positions of up to n representative documents of one cluster (see module doc for the order)."""
    if n <= 0 or len(positions) == 0:
        return []
    prob = np.nan_to_num(probability[positions].astype(np.float64), nan=0.0)
    if vectors is not None:
        v = np.asarray(vectors[np.sort(positions)], dtype=np.float32)
        v = v[
            np.argsort(np.argsort(positions))
        ]  # back to `positions` order (sorted read is faster on memmaps)
        centroid = v.mean(axis=0)
        norm = float(np.linalg.norm(centroid))
        closeness = v @ (centroid / norm) if norm > 0 else np.zeros(len(positions), np.float32)
        tie = -closeness.astype(np.float64)
    else:
        tie = np.nan_to_num(outlier_score[positions].astype(np.float64), nan=np.inf)
    order = np.lexsort((positions, tie, -prob))
    chosen: list[int] = []
    seen: set[str] = set()
    for j in order:
        text = str(texts[positions[j]])
        key = " ".join(text.split()).lower()
        if key in seen:
            continue
        seen.add(key)
        chosen.append(int(positions[j]))
        if len(chosen) == n:
            break
    return chosen


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise EngineError(f"report frame: missing column(s) {', '.join(missing)}")


def build_report(
    frame: pd.DataFrame,
    n_keywords: int = 10,
    n_representatives: int = 5,
    vectors: np.ndarray | None = None,
    max_features: int | None = 200_000,
    ngrams: int = 2,
    min_lift: float = 1.5,
    rerank: Any = None,
) -> ClusterReport:
    """Summarise clusters of ``frame`` (id, text, cluster, probability, outlier_score; x, y optional).

    ``vectors`` (N, dim) in frame order, optional: used to break representative ties by closeness to
    the cluster centroid. ``ngrams`` / ``min_lift``: phrases and the filler rule (engine.keywords).
    ``rerank``: optional ``(terms, scores, member_positions) -> [(term, score)]`` applied to each
    cluster's candidates (engine.keywords.embedding_reranker). Never raises on degenerate input (no clusters, one document, texts with no
    usable words): keywords are then empty lists.
    """
    _check_frame(frame)
    if vectors is not None and len(vectors) != len(frame):
        raise EngineError(f"vectors: {len(vectors)} rows but the frame has {len(frame)}")
    n = len(frame)
    labels = frame["cluster"].to_numpy(dtype=np.int64)
    prob = frame["probability"].to_numpy(dtype=np.float64)
    outlier = frame["outlier_score"].to_numpy(dtype=np.float64)
    texts = frame["text"].fillna("").astype(str).to_numpy(dtype=object)
    ids = frame["id"].to_numpy()

    cluster_ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = sorted(zip(cluster_ids.tolist(), sizes.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
    noise_mask = labels < 0
    classes = [c for c, _ in order] + ([-1] if noise_mask.any() else [])

    # One concatenated document per class, built from sorted positions (memory ~ corpus text once).
    by_class = pd.Series(texts).groupby(np.where(noise_mask, -1, labels)).agg(" ".join)
    scores, vocab = class_tfidf(
        [by_class.get(c, "") for c in classes], max_features=max_features, ngrams=ngrams, min_lift=min_lift
    )

    rows = []
    pos_sorted = np.argsort(labels, kind="stable")
    sorted_labels = labels[pos_sorted]
    starts = np.searchsorted(sorted_labels, [c for c, _ in order], side="left")
    ends = np.searchsorted(sorted_labels, [c for c, _ in order], side="right")
    for row, ((c, size), lo, hi) in enumerate(zip(order, starts, ends, strict=True)):
        members = pos_sorted[lo:hi]
        reps = representatives(members, prob, outlier, texts, n_representatives, vectors)
        scored = top_terms_scored(scores, vocab, row, n_keywords if rerank is None else 3 * n_keywords)
        if rerank is not None and scored:
            scored = rerank([t for t, _ in scored], np.array([v for _, v in scored]), members)[:n_keywords]
        rows.append(
            {
                "cluster": int(c),
                "size": int(size),
                "share": size / n,
                "mean_probability": float(np.nanmean(prob[members])) if size else 0.0,
                "keywords": [t for t, _ in scored],
                "keyword_scores": [round(float(v), 6) for _, v in scored],
                "representatives": [
                    {"id": to_python(ids[p]), "text": texts[p], "probability": float(prob[p])} for p in reps
                ],
            }
        )
    columns = [
        "cluster",
        "size",
        "share",
        "mean_probability",
        "keywords",
        "keyword_scores",
        "representatives",
    ]
    clusters = pd.DataFrame(rows, columns=columns)
    noise = top_terms_scored(scores, vocab, len(classes) - 1, n_keywords) if noise_mask.any() else []
    similarity = None
    if vectors is not None and len(order) >= 2:
        similarity = topic_similarity(labels, vectors, [c for c, _ in order[:MAX_SIMILARITY_TOPICS]])
    return ClusterReport(
        similarity=similarity,
        clusters=clusters,
        n_documents=n,
        noise_size=int(noise_mask.sum()),
        noise_keywords=[t for t, _ in noise],
        noise_keyword_scores=[round(float(v), 6) for _, v in noise],
    )


def build_layers_report(
    frame: pd.DataFrame,
    layers: np.ndarray,
    primary: int,
    strengths: np.ndarray | None = None,
    n_keywords: int = 10,
    n_representatives: int = 5,
    vectors: np.ndarray | None = None,
    max_features: int | None = 200_000,
    **keyword_options: Any,
) -> ClusterReport:
    """The primary layer's report plus every layer's clusters with parents, children, keywords and names.

    ``layers`` (L, N): cluster ids per layer, finest first, 0 = largest. A cluster's parent is the
    cluster of the next coarser layer that holds most of its members (-1: none). Keywords are
    computed per layer with the same c-TF-IDF (:func:`build_report` on that layer's labels).
    """
    from engine.cluster.layers import parent_links

    layers = np.asarray(layers)
    if layers.ndim != 2 or layers.shape[1] != len(frame):
        raise EngineError(f"layers: shape {layers.shape} does not match {len(frame)} documents")
    if not 0 <= primary < layers.shape[0]:
        raise EngineError(f"primary layer {primary} out of range 0..{layers.shape[0] - 1}")
    reports = []
    for i in range(layers.shape[0]):
        sub = frame.copy(deep=False)
        sub["cluster"] = layers[i].astype(np.int64)
        if strengths is not None and i != primary:
            sub["probability"] = np.asarray(strengths[i], dtype=np.float32)
        reports.append(
            build_report(
                sub,
                n_keywords,
                n_representatives,
                vectors=vectors,
                max_features=max_features,
                **keyword_options,
            )
        )
    parents = [parent_links(layers[i], layers[i + 1]) for i in range(layers.shape[0] - 1)]
    parents.append(np.full(int(layers[-1].max()) + 1, -1, dtype=np.int64))
    layer_dicts: list[dict[str, Any]] = []
    for i, rep in enumerate(reports):
        d = rep.to_dict()
        children: dict[int, list[int]] = {}
        if i > 0:
            for child, parent in enumerate(parents[i - 1].tolist()):
                if parent >= 0:
                    children.setdefault(parent, []).append(child)
        for c in d["clusters"]:
            cid = c["cluster"]
            c["parent"] = int(parents[i][cid]) if cid < len(parents[i]) else -1
            c["children"] = children.get(cid, [])
        layer_dicts.append(
            {
                "layer": i,
                "primary": i == primary,
                "n_clusters": d["n_clusters"],
                "noise": d["noise"],
                "clusters": d["clusters"],
            }
        )
    main = reports[primary]
    main.layers = layer_dicts
    main.primary_layer = int(primary)
    return main


# --------------------------------------------------------------------------------------------------
# Topic relations (the similarity heatmap and the hierarchy dendrogram of report.html)
# --------------------------------------------------------------------------------------------------
def topic_centroids(labels: np.ndarray, vectors: np.ndarray, clusters: list[int]) -> np.ndarray:
    """Unit-length mean embedding of each listed cluster's documents, (len(clusters), dim)."""
    labels = np.asarray(labels)
    out = np.zeros((len(clusters), vectors.shape[1]), dtype=np.float32)
    for i, c in enumerate(clusters):
        rows = np.flatnonzero(labels == c)
        if len(rows):
            m = np.asarray(vectors[rows], dtype=np.float32).mean(axis=0)
            out[i] = m / max(float(np.linalg.norm(m)), 1e-12)
    return out


def topic_similarity(labels: np.ndarray, vectors: np.ndarray, clusters: list[int]) -> dict[str, Any]:
    """Cosine similarity of the listed clusters' centroids: ``{"clusters": [...], "matrix": [[...]]}``."""
    cent = topic_centroids(labels, vectors, clusters)
    return {"clusters": [int(c) for c in clusters], "matrix": np.round(cent @ cent.T, 4).tolist()}


def topics_per_class(labels: np.ndarray, classes: pd.Series, column: str, max_classes: int = 30) -> dict:
    """Documents per (cluster, class) -> ``{"column", "classes", "clusters": {id: counts}, "noise": counts}``.

    Classes are ordered by size; past ``max_classes`` the smaller ones count as "other".
    """
    values = classes.astype("string").fillna("(missing)").to_numpy(dtype=object)
    names, counts = np.unique(values, return_counts=True)
    order = [str(names[i]) for i in np.lexsort((names, -counts))]
    if len(order) > max_classes:
        kept = set(order[: max_classes - 1])
        values = np.array([v if v in kept else "other" for v in values], dtype=object)
        order = order[: max_classes - 1] + ["other"]
    index = {c: i for i, c in enumerate(order)}
    codes = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    labels = np.asarray(labels, dtype=np.int64)
    per = {
        str(int(c)): np.bincount(codes[labels == c], minlength=len(order)).astype(int).tolist()
        for c in np.unique(labels[labels >= 0])
    }
    noise = np.bincount(codes[labels < 0], minlength=len(order)).astype(int).tolist()
    return {"column": column, "classes": order, "clusters": per, "noise": noise}
