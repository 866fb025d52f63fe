"""kNN graph from Milvus: parallel batched searches, self removed by id, O(N*k) memory.

Why this shape: a request carries hundreds of query vectors (round trips dominate with
small batches), several requests are in flight (a server parallelises them), ``limit=k+1``
leaves room for the query itself, which is removed *by id* because approximate indexes do
not always return it first. Query vectors come from the caller's (memory-mapped) array in
corpus order, never from Milvus. Distances are recomputed from those float32 vectors for
the returned candidates (``rerank=True``): exact zeros for duplicates and no quantisation
error from IVF_SQ8 / HNSW_SQ scores.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from engine.errors import EngineError
from engine.graph.distances import pairwise_euclidean, to_euclidean
from engine.graph.knn import KnnGraph
from engine.graph.rows import finish_rows, id_positions, map_ids_to_positions

log = logging.getLogger(__name__)


def suggest_search_shape(store: Any) -> dict[str, int]:
    """Request size and worker count that measured fastest per backend (benchmarks/bench_graph.py).

    Milvus Lite (searched in-process, ``lite_direct``) holds the GIL except inside FAISS:
    at 20k x 1024, HNSW, k=30 (results/graph_20k.json) 1x64: 106 q/s, 1x256: 176,
    1x1024: 200, 2x256: 214. A server parallelises requests: 1x256: 554, 2x256: 607,
    4x256: 714 q/s (results/graph_20k_server.json).
    """
    if getattr(store, "is_lite", False):
        return {"workers": 2, "batch_size": 256}
    return {"workers": 4, "batch_size": 256}


def _run_bounded(run: Any, starts: range, workers: int, bar: Any) -> None:
    """``run(start)`` for every start on ``workers`` threads, at most 2 x workers batches queued.

    Why not submit everything up front: a failed search (or Ctrl+C) then waited for every queued
    batch of the whole corpus before the error surfaced. Here the first error cancels what is queued
    and is raised once the few batches in flight return.
    """
    pending: set[Future] = set()
    todo = iter(starts)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for start in todo:
            pending.add(pool.submit(run, start))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    bar.update(f.result())
        for f in as_completed(pending):
            bar.update(f.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class SearchPlan:
    """What every search request of one graph shares (checked once by :func:`plan_search`)."""

    sorted_ids: np.ndarray
    order: np.ndarray
    q_rows: np.ndarray  # the query positions, in output-row order
    k: int
    limit: int
    metric: str
    stored: int


def plan_search(
    store: Any, vectors: np.ndarray, ids: np.ndarray, k: int, rows: np.ndarray | None = None
) -> SearchPlan:
    """Check the inputs of a graph search and map ids to positions (the store is loaded)."""
    if k < 1:
        raise EngineError(f"k must be >= 1, got {k} (parameter k)")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = int(ids.shape[0])
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise EngineError(
            f"build_knn_graph: {n} ids but vectors of shape {vectors.shape} (parameter vectors)"
        )
    if n < 2:
        raise EngineError(f"build_knn_graph: need at least 2 documents, got {n}")
    sorted_ids, order = id_positions(ids)
    if n > 1 and (np.diff(sorted_ids) == 0).any():
        dup = int(sorted_ids[np.where(np.diff(sorted_ids) == 0)[0][0]])
        raise EngineError(f"build_knn_graph: id {dup} appears twice in ids (parameter ids)")
    stored = store.count()
    if stored != n:
        log.warning("Milvus holds %d rows but %d vectors were given; unmatched hits are dropped", stored, n)
    store.load()
    q_rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if q_rows.size and (q_rows.min() < 0 or q_rows.max() >= n):
        raise EngineError(f"build_knn_graph: rows must be positions in 0..{n - 1} (parameter rows)")
    return SearchPlan(
        sorted_ids=sorted_ids,
        order=order,
        q_rows=q_rows,
        k=int(k),
        limit=min(k + 1, max(stored, 1)),
        metric=getattr(store, "metric", "COSINE"),
        stored=stored,
    )


def search_rows(
    store: Any,
    vectors: np.ndarray,
    self_pos: np.ndarray,
    plan: SearchPlan,
    search_params: dict[str, Any] | None = None,
    rerank: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One search request: the (indices, distances) rows of the queries at positions ``self_pos``.

    The unit every caller shares: :func:`build_knn_graph` on threads, engine.distributed on Ray tasks.
    """
    contiguous = len(self_pos) > 0 and int(self_pos[-1]) - int(self_pos[0]) + 1 == len(self_pos)
    sel = slice(int(self_pos[0]), int(self_pos[-1]) + 1) if contiguous else self_pos
    q = np.ascontiguousarray(vectors[sel], dtype=np.float32)
    hit_ids, raw = store.search(q, limit=plan.limit, search_params=search_params)
    cand = map_ids_to_positions(hit_ids, plan.sorted_ids, plan.order, valid=np.isfinite(raw))
    if rerank:
        safe = np.where(cand >= 0, cand, 0)
        # Sorted unique gather keeps memmap reads sequential-ish.
        uniq, inv = np.unique(safe, return_inverse=True)
        cvec = np.asarray(vectors[uniq], dtype=np.float32)[inv.reshape(safe.shape)]
        dist = pairwise_euclidean(q, cvec)
        dist[cand < 0] = np.inf
    else:
        dist = to_euclidean(raw, plan.metric)
    return finish_rows(cand, dist, self_pos, plan.k)


def graph_meta(
    store: Any, plan: SearchPlan, search_params: Any, rerank: bool, elapsed: float, **extra: Any
) -> dict:
    """``KnnGraph.meta`` of a Milvus graph (how it was searched, how fast)."""
    m = int(plan.q_rows.shape[0])
    return {
        "source": "milvus",
        "k": plan.k,
        "index_type": getattr(store, "index_type", None),
        "index_params": getattr(store, "index_params", None),
        "metric": plan.metric,
        **extra,
        "search_params": search_params,
        "rerank": rerank,
        "seconds": round(elapsed, 3),
        "queries": m,
        "qps": round(m / elapsed, 1) if elapsed > 0 else None,
    }


def build_knn_graph(
    store: Any,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int = 30,
    workers: int | None = 4,
    batch_size: int | None = 256,
    progress: bool = True,
    search_params: dict[str, Any] | None = None,
    rerank: bool = True,
    rows: np.ndarray | None = None,
) -> KnnGraph:
    """The k nearest neighbours of every position, searched in ``store`` (a ``MilvusStore``).

    ``vectors`` (N, dim) float32 in corpus order (a memmap is fine), ``ids`` (N,) the Milvus
    primary keys of those rows. ``workers``/``batch_size`` = None take
    :func:`suggest_search_shape`. ``rerank`` recomputes distances from ``vectors``;
    with ``rerank=False`` they are converted from Milvus scores by ``to_euclidean``.
    ``rows``: search only these positions (a recall sample); the graph then has len(rows) rows.
    """
    shape = suggest_search_shape(store)
    workers = int(workers or shape["workers"])
    batch_size = int(batch_size or shape["batch_size"])
    if workers < 1 or batch_size < 1:
        raise EngineError("workers and batch_size must be >= 1 (parameters workers, batch_size)")
    plan = plan_search(store, vectors, ids, k, rows)
    q_rows = plan.q_rows
    m = int(q_rows.shape[0])
    out_idx = np.full((m, k), -1, dtype=np.int32)
    out_dist = np.full((m, k), np.inf, dtype=np.float32)

    def run(start: int) -> int:
        stop = min(start + batch_size, m)
        ci, cd = search_rows(store, vectors, q_rows[start:stop], plan, search_params, rerank)
        out_idx[start:stop] = ci
        out_dist[start:stop] = cd
        return stop - start

    t0 = time.perf_counter()
    starts = range(0, m, batch_size)
    with tqdm(total=m, desc=f"kNN graph (k={k})", unit="doc", disable=not progress) as bar:
        if workers == 1:
            for s in starts:
                bar.update(run(s))
        else:
            _run_bounded(run, starts, workers, bar)
    elapsed = time.perf_counter() - t0
    meta = graph_meta(store, plan, search_params, rerank, elapsed, workers=workers, batch_size=batch_size)
    return KnnGraph(out_idx, out_dist, meta)
