"""Conversion of Milvus scores to true Euclidean distances between unit vectors.

Why: HDBSCAN needs a metric distance. Milvus returns COSINE/IP *similarities* and *squared*
L2; everything after the store uses ``||a - b||`` so all graph sources agree.
"""

from __future__ import annotations

import numpy as np

from engine.errors import EngineError
from engine.milvus.indexes import METRICS


def to_euclidean(raw: np.ndarray, metric: str) -> np.ndarray:
    """Milvus raw scores -> Euclidean distance (float32); NaN (missing hit) -> +inf.

    COSINE/IP similarity ``s`` -> ``sqrt(max(0, 2 - 2 s))`` (exact for unit vectors);
    L2 (squared) ``d`` -> ``sqrt(max(0, d))``.
    """
    m = str(metric).upper()
    x = np.asarray(raw, dtype=np.float32)
    if m in ("COSINE", "IP"):
        out = np.sqrt(np.maximum(np.float32(0.0), np.float32(2.0) - np.float32(2.0) * x))
    elif m == "L2":
        out = np.sqrt(np.maximum(np.float32(0.0), x))
    else:
        raise EngineError(f"unknown metric {metric!r} (parameter metric); expected one of {METRICS}")
    out = out.astype(np.float32, copy=False)
    out[np.isnan(x)] = np.inf
    return out


def pairwise_euclidean(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``||q_i - c_ij||`` for queries (b, d) and candidates (b, m, d), by differences.

    Differences (not ``2 - 2 q.c``) keep duplicates at exactly 0 and avoid the
    cancellation error of the dot-product form near 0.
    """
    diff = candidates - queries[:, None, :]
    return np.sqrt(np.einsum("bmd,bmd->bm", diff, diff, dtype=np.float32)).astype(np.float32, copy=False)
