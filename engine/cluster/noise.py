"""``--assign-noise``: give each noise document the cluster most of its graph neighbours hold.

Rounds of a weighted vote over the kNN graph: a noise point with labelled neighbours takes the
label of largest total weight (weight = cosine similarity, from the engine's Euclidean distances
between unit vectors). Points labelled in one round vote in the next, so noise islands next to a
cluster are reached too. Points whose whole neighbourhood stays unlabelled (a component with no
cluster at all) go to the nearest cluster centre in ``space`` (the clustering embedding), if given.
Deterministic: ties go to the lower (larger) cluster id.
"""

from __future__ import annotations

import numba
import numpy as np

MAX_ROUNDS = 50


@numba.njit(cache=True)
def _vote_round(indices, distances, labels, n_clusters):
    n, k = indices.shape
    out = labels.copy()
    changed = 0
    votes = np.zeros(n_clusters, dtype=np.float64)
    for i in range(n):
        if labels[i] >= 0:
            continue
        total = 0.0
        for p in range(k):
            j = indices[i, p]
            if j < 0:
                continue
            lab = labels[j]
            if lab < 0:
                continue
            d = distances[i, p]
            w = 1.0 - 0.5 * d * d
            if w < 1e-3:
                w = 1e-3
            votes[lab] += w
            total += w
        if total > 0.0:
            best = -1
            best_v = 0.0
            for p in range(k):
                j = indices[i, p]
                if j < 0:
                    continue
                lab = labels[j]
                if lab < 0:
                    continue
                v = votes[lab]
                if v > best_v or (v == best_v and lab < best):
                    best_v = v
                    best = lab
            out[i] = best
            changed += 1
            for p in range(k):
                j = indices[i, p]
                if j >= 0 and labels[j] >= 0:
                    votes[labels[j]] = 0.0
    return out, changed


def assign_noise(
    labels: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
    space: np.ndarray | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[np.ndarray, np.ndarray]:
    """(new labels, ``assigned`` bool mask) — every noise point gets a cluster when any cluster exists."""
    labels = np.asarray(labels, dtype=np.int64)
    noise = labels < 0
    if not noise.any() or not (labels >= 0).any():
        return labels.copy(), np.zeros(labels.shape, dtype=bool)
    n_clusters = int(labels.max()) + 1
    idx = np.ascontiguousarray(indices, dtype=np.int32)
    dist = np.ascontiguousarray(np.where(np.isfinite(distances), distances, 2.0), dtype=np.float32)
    cur = labels.copy()
    for _ in range(max_rounds):
        cur, changed = _vote_round(idx, dist, cur, n_clusters)
        if changed == 0:
            break
    left = cur < 0
    if left.any() and space is not None:
        x = np.asarray(space, dtype=np.float32)
        lab = cur >= 0
        centres = np.zeros((n_clusters, x.shape[1]), dtype=np.float64)
        np.add.at(centres, cur[lab], x[lab])
        centres /= np.maximum(np.bincount(cur[lab], minlength=n_clusters), 1)[:, None]
        rows = np.flatnonzero(left)
        d2 = ((x[rows, None, :] - centres[None, :, :].astype(np.float32)) ** 2).sum(axis=2)
        cur[rows] = d2.argmin(axis=1)
    return cur, noise & (cur >= 0)
