"""Pick the cheapest search setting that reaches a target recall@k, measured on a query sample.

Why: the recall of an approximate graph depends on the data and on N (HNSW ef=64 gives
recall@30 0.958 on 100k synthetic vectors, less at 1M), so a fixed default either wastes search
time or silently loses neighbours. Exact neighbours of a small sample are cheap next to the
graph (1,000 queries x N x dim flops; ~2 TFLOP at 1M x 1024), and the trials search only that
sample. The result is also the graph's measured recall, which the run summary reports.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import EngineError
from engine.graph.exact import exact_knn
from engine.graph.knn import KnnGraph
from engine.graph.milvus_knn import build_knn_graph
from engine.milvus.indexes import EXACT_INDEXES, search_ladder

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """The chosen search parameters, their measured recall@k and sample QPS, and every trial."""

    search_params: dict[str, Any]
    recall: float
    qps: float
    met: bool
    target_recall: float
    sample: int
    exact_seconds: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: The sampled positions and their exact neighbours (refinement measures recall on them too).
    rows: np.ndarray | None = field(default=None, repr=False)
    exact: KnnGraph | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "search_params": self.search_params,
            "recall": round(self.recall, 4),
            "qps": round(self.qps, 1),
            "met": self.met,
            "target_recall": self.target_recall,
            "sample": self.sample,
            "exact_seconds": round(self.exact_seconds, 2),
            "trials": self.trials,
        }


def sample_rows(n: int, sample: int, seed: int = 0) -> np.ndarray:
    """A sorted, seeded sample of ``min(sample, n)`` distinct positions."""
    if sample < 1:
        raise EngineError(f"recall sample must be >= 1, got {sample} (parameter sample)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(int(sample), n), replace=False)).astype(np.int64)


def measure_recall(
    store: Any,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int,
    rows: np.ndarray,
    exact: KnnGraph,
    search_params: dict[str, Any] | None,
    workers: int | None = None,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """(recall@k, queries per second) of Milvus search on the sample ``rows`` against ``exact``."""
    t = time.perf_counter()
    approx = build_knn_graph(
        store,
        vectors,
        ids,
        k=k,
        workers=workers,
        batch_size=batch_size,
        progress=False,
        search_params=search_params,
        rows=rows,
    )
    seconds = max(time.perf_counter() - t, 1e-9)
    return approx.recall_against(exact), len(rows) / seconds


def tune_search_params(
    store: Any,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int = 30,
    target_recall: float = 0.97,
    sample: int = 1000,
    search_params: dict[str, Any] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
    warn: bool = True,
) -> TuneResult:
    """Walk the knob's ladder upwards until recall@k on the sample reaches ``target_recall``.

    The policy (the CLI's ``--search-params``): ``search_params`` are kept; if they set the index's
    knob, or the index has none, the given parameters are only measured. If no value reaches the
    target, the best one is returned with ``met=False`` (and a warning unless ``warn=False``: the graph
    stage refines the graph first and warns once about the final recall): the caller decides.
    """
    if not 0.0 < target_recall <= 1.0:
        raise EngineError(f"target recall must be in (0, 1], got {target_recall} (parameter target_recall)")
    n = int(np.asarray(ids).shape[0])
    rows = sample_rows(n, sample, seed)
    t = time.perf_counter()
    exact = exact_knn(vectors, k, rows=rows, progress=progress)
    exact_seconds = time.perf_counter() - t
    base = dict(search_params or {})
    knob, values = search_ladder(getattr(store, "index_type", ""), k)
    if knob in base:
        knob = None  # the user's value is kept
    if knob is None:
        values = [None]  # measure the configuration as given
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for value in values:
        params = dict(base)
        if knob is not None:
            params[knob] = value
        recall, qps = measure_recall(store, vectors, ids, k, rows, exact, params, workers, batch_size)
        trial = {"search_params": params, "recall": round(recall, 4), "qps": round(qps, 1)}
        trials.append(trial)
        log.info("search %s: recall@%d %.4f at %.0f q/s (sample %d)", params, k, recall, qps, len(rows))
        if best is None or recall > best["recall"]:
            best = trial
        if recall >= target_recall:
            best = trial
            break
    assert best is not None
    met = best["recall"] >= target_recall
    if not met and warn:
        log.warning(
            "recall@%d target %.3f not reached on a %d-query sample; best %.4f with %s "
            "(raise the index build parameters, e.g. HNSW M / efConstruction, or use --graph-source exact)",
            k,
            target_recall,
            len(rows),
            best["recall"],
            best["search_params"],
        )
    return TuneResult(
        search_params=best["search_params"],
        recall=float(best["recall"]),
        qps=float(best["qps"]),
        met=met,
        target_recall=float(target_recall),
        sample=len(rows),
        exact_seconds=exact_seconds,
        trials=trials,
        rows=rows,
        exact=exact,
    )


def check_recall(
    store: Any,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int,
    target_recall: float,
    sample: int,
    search_params: dict[str, Any] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    seed: int | None = 0,
    warn: bool = True,
) -> TuneResult | None:
    """The graph stage's recall check: None for exact indexes or ``sample=0``, else
    :func:`tune_search_params` on a sample of ``sample`` queries."""
    if not sample or store.index_type in EXACT_INDEXES:
        return None
    log.info("graph: checking recall@%d on %d sampled queries", k, min(sample, len(ids)))
    return tune_search_params(
        store,
        vectors,
        ids,
        k=k,
        target_recall=target_recall,
        sample=sample,
        search_params=search_params,
        workers=workers,
        batch_size=batch_size,
        seed=seed,
        progress=False,
        warn=warn,
    )
