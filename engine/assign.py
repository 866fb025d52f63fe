"""Assign new documents to a run's clusters from their nearest stored neighbours (no re-clustering).

Why neighbours and not centroids: HDBSCAN clusters are arbitrary shapes with noise around them;
the labels of a new document's k nearest stored documents (Milvus, the run's collection) say
both which cluster it falls into and whether it falls into any. Like cuML's
``approximate_predict``, the existing clustering is kept as it is.

The rule, per label column (``cluster`` and every layer column ``cluster_*``):

1. **duplicate**: the nearest stored document is within ``DUPLICATE_DISTANCE`` (Euclidean on unit
   vectors, cosine >= 0.99875): the new document takes its labels, confidence 1.
2. **far**: the ``m``-th nearest stored document (m = the run's ``min_samples``) is farther than
   the run's radius, the 95th percentile of that same distance over the clustered documents of
   the run's kNN graph: noise (-1), confidence 0. Such a document would not be in any cluster's
   dense core.
3. **vote**: otherwise each of the k neighbours votes for its label with weight
   ``cosine similarity`` (noise neighbours vote for noise). The label with most weight wins;
   confidence = its share of the weight. A winning share under ``MIN_AGREEMENT`` gives noise
   (reason **disagree**); so does a clear win by noise neighbours (reason **noise**).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

DUPLICATE_DISTANCE = 0.05
MIN_AGREEMENT = 0.5
RADIUS_QUANTILE = 0.95


def label_columns(labels: pd.DataFrame, exclude: tuple[str, ...] | set[str] = ()) -> list[str]:
    """Integer label columns of labels.parquet: ``cluster`` (the primary layer) first, then ``layer_0`` (finest) ..."""
    names = [
        c
        for c in labels.columns
        if (c == "cluster" or re.fullmatch(r"layer_\d+", c))
        and c not in exclude
        and pd.api.types.is_integer_dtype(labels[c])
    ]
    return sorted(names, key=lambda c: -1 if c == "cluster" else int(c.split("_")[1]))


def assigned_ids(keys: pd.Series, source: str) -> np.ndarray:
    """Stable 63-bit ids for new documents: a hash of (source name, key); re-runs give the same ids."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"assign:{source}:{k}".encode(), digest_size=8).digest(), "big")
            >> 1
            for k in keys
        ),
        dtype=np.int64,
        count=len(keys),
    )


def neighbour_radius(graph_distances: np.ndarray, labels: np.ndarray, m: int) -> float:
    """95th percentile of the distance to the m-th neighbour over clustered documents (rule 2)."""
    m = int(np.clip(m, 1, graph_distances.shape[1]))
    d = np.asarray(graph_distances[:, m - 1], dtype=np.float64)
    keep = (np.asarray(labels) >= 0) & np.isfinite(d)
    if not keep.any():
        keep = np.isfinite(d)
    return float(np.quantile(d[keep], RADIUS_QUANTILE)) if keep.any() else float("inf")


@dataclass
class Assignment:
    """Per new document: label, confidence (0..1) and the rule that decided (duplicate/far/vote/disagree/noise)."""

    label: np.ndarray
    confidence: np.ndarray
    reason: np.ndarray


def vote(neighbour_labels: np.ndarray, distances: np.ndarray, radius: float, m: int) -> Assignment:
    """Apply the module's rule to (n, k) neighbour labels and Euclidean distances (nearest first).

    Missing neighbours have label ``np.iinfo(int64).min`` or distance inf and do not vote.
    """
    n, k = neighbour_labels.shape
    out_label = np.full(n, -1, dtype=np.int64)
    out_conf = np.zeros(n, dtype=np.float32)
    reason = np.empty(n, dtype=object)
    m = int(np.clip(m, 1, k))
    missing = np.iinfo(np.int64).min
    for i in range(n):
        lab = neighbour_labels[i]
        dist = distances[i]
        valid = np.isfinite(dist) & (lab != missing)
        if not valid.any():
            reason[i] = "far"
            continue
        if dist[0] <= DUPLICATE_DISTANCE and lab[0] != missing:
            out_label[i], out_conf[i], reason[i] = lab[0], 1.0, "duplicate"
            continue
        d_m = dist[valid][min(m, int(valid.sum())) - 1]
        if d_m > radius:
            reason[i] = "far"
            continue
        weight = np.clip(1.0 - dist[valid] ** 2 / 2.0, 1e-6, None)  # cosine similarity of unit vectors
        uniq, inverse = np.unique(lab[valid], return_inverse=True)
        totals = np.bincount(inverse, weights=weight)
        best = int(np.argmax(totals))
        share = float(totals[best] / totals.sum())
        out_conf[i] = share
        if share < MIN_AGREEMENT:
            reason[i] = "disagree"
        elif uniq[best] < 0:
            reason[i] = "noise"
        else:
            out_label[i], reason[i] = uniq[best], "vote"
    return Assignment(out_label, out_conf, reason)


def lookup_labels(
    neighbour_ids: np.ndarray, ids: np.ndarray, values: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Labels of neighbour ids via the run's (ids, values) table; unknown ids -> int64 min (no vote).

    ``valid``: which slots hold a hit (ids may be negative, so no id value can mark a missing one).
    """
    order = np.argsort(ids)
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, neighbour_ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    found = (len(sorted_ids) > 0) & (sorted_ids[pos] == neighbour_ids)
    if valid is not None:
        found &= valid
    out = np.full(neighbour_ids.shape, np.iinfo(np.int64).min, dtype=np.int64)
    out[found] = np.asarray(values)[order][pos[found]]
    return out
