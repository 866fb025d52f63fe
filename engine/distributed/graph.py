"""The kNN graph search fanned out as Ray tasks: each searches a block of queries, the driver assembles.

Each task opens its own client of the Milvus server and runs :func:`engine.graph.milvus_knn.search_rows`
(the single-process search unit: same request, same id->position mapping, same exact re-ranking on the
float32 vectors), so the graph equals the single-process one for the same index and search parameters.
The driver holds only the (N, k) result arrays (O(N*k)) and the vectors it already had; the vectors go to
the object store once (``ray.put``) for the tasks' re-ranking.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from engine.graph.knn import KnnGraph

log = logging.getLogger("engine")

#: Search requests (of ``batch_size`` queries) per Ray task: a task pays one connection and one load check.
REQUESTS_PER_TASK = 16


def _search_block(
    store_kwargs: dict[str, Any],
    vectors: np.ndarray,
    self_pos: np.ndarray,
    plan: Any,
    batch_size: int,
    search_params: dict[str, Any] | None,
    rerank: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray task body: (positions, indices, distances) of one block of queries."""
    from engine.graph.milvus_knn import search_rows
    from engine.milvus.store import MilvusStore

    idx = np.empty((len(self_pos), plan.k), dtype=np.int32)
    dist = np.empty((len(self_pos), plan.k), dtype=np.float32)
    with MilvusStore(**store_kwargs) as store:
        for s in range(0, len(self_pos), batch_size):
            e = min(s + batch_size, len(self_pos))
            idx[s:e], dist[s:e] = search_rows(store, vectors, self_pos[s:e], plan, search_params, rerank)
    return self_pos, idx, dist


def ray_knn_graph(
    store: Any,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int = 30,
    workers: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    search_params: dict[str, Any] | None = None,
    rerank: bool = True,
    rows: np.ndarray | None = None,
) -> KnnGraph:
    """:func:`engine.graph.milvus_knn.build_knn_graph` with the requests run as Ray tasks.

    Same arguments and result; ``workers`` caps the tasks in flight (default: 2 per CPU of the cluster).
    """
    from engine.distributed.cluster import import_ray
    from engine.graph.milvus_knn import graph_meta, plan_search, suggest_search_shape

    ray = import_ray()
    batch_size = int(batch_size or suggest_search_shape(store)["batch_size"])
    plan = plan_search(store, vectors, ids, k, rows)
    m = int(plan.q_rows.shape[0])
    in_flight = int(workers or max(1, 2 * int(ray.cluster_resources().get("CPU", 1))))
    block = batch_size * REQUESTS_PER_TASK
    out_idx = np.full((m, k), -1, dtype=np.int32)
    out_dist = np.full((m, k), np.inf, dtype=np.float32)
    where = np.empty(int(plan.q_rows.max(initial=-1)) + 1, dtype=np.int64)  # query position -> output row
    where[plan.q_rows] = np.arange(m)

    task = ray.remote(num_cpus=1, max_retries=3)(_search_block)
    t0 = time.perf_counter()
    vec_ref = ray.put(np.ascontiguousarray(vectors, dtype=np.float32))
    kwargs_ref = ray.put(store.connection_kwargs())
    plan_ref = ray.put(plan)
    pending: list[Any] = []
    starts = iter(range(0, m, block))
    with tqdm(total=m, desc=f"kNN graph (k={k}, ray)", unit="doc", disable=not progress) as bar:
        while True:
            for start in starts:
                rows_block = plan.q_rows[start : start + block]
                pending.append(
                    task.remote(kwargs_ref, vec_ref, rows_block, plan_ref, batch_size, search_params, rerank)
                )
                if len(pending) >= in_flight:
                    break
            if not pending:
                break
            done, pending = ray.wait(pending, num_returns=1)
            pos, idx, dist = ray.get(done[0])
            out_idx[where[pos]] = idx
            out_dist[where[pos]] = dist
            bar.update(len(pos))
    elapsed = time.perf_counter() - t0
    del vec_ref
    meta = graph_meta(
        store,
        plan,
        search_params,
        rerank,
        elapsed,
        workers=in_flight,
        batch_size=batch_size,
        ray={"tasks": -(-m // block), "queries_per_task": block},
    )
    return KnnGraph(out_idx, out_dist, meta)
