"""Zero-shot topics: the user names the topics they expect; clusters and documents close to a name take it.

``--topics "sport, politics, business"`` (or a file, one name per line). Each name is embedded with
the run's model (as given: write "news about sport" for a prompt). Then:

1. Every document scores each name: its cosine to the name, minus the name's mean cosine over the
   whole corpus (a name's bias: on BBC News "business" is closer to every document than "tech",
   0.073 vs 0.040 with MiniLM), averaged over the document and its kNN-graph neighbours (one short
   document is a noisy vote; its neighbourhood is not). Its best-scoring name is its vote.
2. A cluster whose centroid has cosine >= ``--topic-threshold`` to its closest name is named: if
   at least ``MAJORITY`` (60 %) of its documents vote for one name, the whole cluster takes it;
   otherwise the cluster is mixed and splits, each document joining the topic it voted for.
3. A noise document joins the topic it voted for when its neighbour-averaged cosine to that name
   is >= ``--topic-threshold``.

All documents taking one name form one topic, with the id of the largest whole cluster taking it
(a new id past the largest when only split or noise documents took it). Clusters under the
threshold keep their own id and c-TF-IDF name; other noise stays noise.

Why (benchmarks/zeroshot.py -> results/zeroshot_bbc_ag.json; BBC News' five class names and AG
News' four, all-MiniLM-L6-v2; NMI against the classes of the named topics, else own cluster, noise
one label, over all documents; 4 BBC and 3 AG clusterings of the same vectors: the consensus primary
with seeds 42, 1, 2 and a single run). The previous rule, each cluster's centroid taking its closest
name at cosine >= 0.15, gave BBC 0.720-0.765 and AG 0.467-0.497: a consensus primary can hold one
cluster of both technology and entertainment (548 of 571 documents in one clustering) and a
centroid names all of it; a name's corpus-wide bias decided close calls (a
34-document tech cluster at cosine 0.191 "business" vs 0.190 "tech" went to business); and the
noise (3-26 %) stayed unnamed. This rule, same threshold: BBC 0.770-0.796, AG 0.495-0.533. Without
the neighbour average BBC 0.682-0.729 (one document's vote is noisy); without removing the name
bias BBC 0.716-0.726; without noise joining BBC 0.763-0.791, AG 0.474-0.497. MAJORITY 0.5 splits
fewer mixed clusters (BBC 0.770-0.796, AG 0.481-0.533), 2/3 about the same as 0.6 (AG 0.476-0.516).

Threshold: cosine between a short name and a centroid is much lower than between two documents:
a class name mostly reaches 0.15-0.41 on its own clusters. 0.15 (default, unchanged) keeps a name off
clusters about none of the names; on these corpora, where every document belongs to one of the
names, 0.10 gives BBC 0.790-0.839 / AG 0.518-0.552 and 0.20 BBC 0.676-0.713 / AG 0.467-0.506.
Names with a prompt ("news about sport", typed as the topic) gave BBC 0.808-0.830, AG 0.529-0.571.
"""

from __future__ import annotations

import os

import numpy as np

from engine.errors import EngineError

MAJORITY = 0.6  # share of a cluster's documents voting for one name for the whole cluster to take it
CHUNK = (
    65536  # documents scored at a time (an (n, names) array per chunk, an (n, k, names) one while averaging)
)


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


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def name_scores(
    vectors: np.ndarray, topic_vectors: np.ndarray, neighbours: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, calibrated score) of every document to every name, (n, names) each.

    Calibrated = cosine minus the name's mean cosine over all documents. ``neighbours``: (n, k)
    kNN positions (-1 = none); when given, both are averaged over each document and its neighbours.
    """
    t = _unit(topic_vectors)
    n = len(vectors)
    cos = np.empty((n, len(t)), dtype=np.float32)
    for s in range(0, n, CHUNK):
        cos[s : s + CHUNK] = _unit(vectors[s : s + CHUNK]) @ t.T
    bias = cos.mean(axis=0) if n else np.zeros(len(t), dtype=np.float32)
    if neighbours is not None:
        nb = np.asarray(neighbours)
        if nb.shape[0] != n:
            raise EngineError(f"zero-shot topics: kNN graph has {nb.shape[0]} rows for {n} documents")
        averaged = np.empty_like(cos)
        for s in range(0, n, CHUNK):
            idx = nb[s : s + CHUNK]
            valid = idx >= 0
            total = cos[s : s + CHUNK] + (cos[np.where(valid, idx, 0)] * valid[..., None]).sum(axis=1)
            averaged[s : s + CHUNK] = total / (1 + valid.sum(axis=1, keepdims=True))
        cos = averaged
    return cos, cos - bias


def zero_shot_labels(
    labels: np.ndarray,
    vectors: np.ndarray,
    names: list[str],
    topic_vectors: np.ndarray,
    threshold: float,
    neighbours: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, str], list[dict]]:
    """(new primary labels, {topic id: name}, one row per cluster) for the primary ``labels``.

    Rows, largest cluster first: ``cluster``, ``similarity`` (its centroid's cosine to its closest
    name), ``topic`` (the name the whole cluster took, else None), ``share`` (of its documents
    voting for its most voted name) and, for a mixed cluster that split, ``split`` ({name: documents}).
    """
    from engine.report import topic_centroids

    labels = np.asarray(labels, dtype=np.int64)
    cos, score = name_scores(vectors, topic_vectors, neighbours)
    vote = score.argmax(axis=1) if len(names) else np.zeros(len(labels), dtype=np.int64)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.lexsort((ids, -sizes))]
    sizes = sizes[np.lexsort((ids, -sizes))]
    m = len(names)
    topic = np.full(len(labels), -1, dtype=np.int64)  # name index per document, -1 = none
    rows: list[dict] = []
    whole_ids: dict[int, int] = {}  # name -> id of the largest whole cluster taking it
    if len(order):
        sim = (topic_centroids(labels, vectors, order.tolist()) @ _unit(topic_vectors).T).max(axis=1)
        position = np.full(int(order.max()) + 1, -1, dtype=np.int64)
        position[order] = np.arange(len(order))
        clustered = labels >= 0
        pos = position[labels[clustered]]
        votes = np.bincount(pos * m + vote[clustered], minlength=len(order) * m).reshape(len(order), m)
        winner = votes.argmax(axis=1)
        share = votes.max(axis=1) / sizes
        named = sim >= threshold
        whole = named & (share >= MAJORITY)
        doc_topic = np.where(whole[pos], winner[pos], np.where(named[pos], vote[clustered], -1))
        topic[clustered] = doc_topic
        for i, c in enumerate(order.tolist()):
            row = {
                "cluster": c,
                "topic": None,
                "similarity": round(float(sim[i]), 4),
                "share": round(float(share[i]), 4),
            }
            if whole[i]:
                row["topic"] = names[int(winner[i])]
                whole_ids.setdefault(int(winner[i]), c)
            elif named[i]:
                row["split"] = {
                    names[j]: int(votes[i, j]) for j in np.argsort(-votes[i], kind="stable") if votes[i, j]
                }
            rows.append(row)
    noise = np.flatnonzero(labels < 0)
    joins = cos[noise, vote[noise]] >= threshold
    topic[noise[joins]] = vote[noise[joins]]
    out = labels.copy()
    named_ids: dict[int, str] = {}
    next_id = int(labels.max()) + 1 if len(labels) else 0
    for j in np.unique(topic[topic >= 0]).tolist():
        tid = whole_ids.get(j)
        if tid is None:
            tid, next_id = next_id, next_id + 1
        out[topic == j] = tid
        named_ids[tid] = names[j]
    return out, named_ids, rows
