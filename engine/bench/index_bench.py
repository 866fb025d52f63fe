"""``engine bench-index``: benchmark Milvus index configs on the user's own vectors.

Why: the index choice trades recall for speed, and for this engine it also changes the kNN
graph and therefore the clusters. For every config of a sweep this measures build and load
time, recall@k against exact search, batched QPS, single-query p50/p99 latency, index size,
the time to build the full kNN graph through Milvus, and how far the clusters of that graph
depart from those of the exact graph (ARI, cluster-count difference). The clusters are HDBSCAN*
on the graph itself (``--cluster-space graph``), not the default node embedding + cluster layers:
it is deterministic and reads the graph directly, so the ARI measures the index, not the seed
of an embedding.

All configs share one collection (one insert); each build group (same type and build
parameters) drops and recreates the index, so configs never see each other's index.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.bench.index_catalog import check_supported, load_sweep_toml, parse_specs
from engine.cluster import cluster_graph
from engine.errors import EngineError
from engine.graph import KnnGraph, build_knn_graph, exact_knn
from engine.milvus import lite
from engine.milvus.client import mask_uri, redact, server_version
from engine.milvus.indexes import CATALOG, FLAT, HNSW, IVF_FLAT, IndexConfig
from engine.milvus.probe import probe_support
from engine.milvus.store import MilvusStore

log = logging.getLogger(__name__)

DEFAULT_SWEEP = (FLAT.index_type, IVF_FLAT.index_type, HNSW.index_type)
#: Milvus 2.3 minSegmentNumRowsToEnableIndex: smaller segments are brute-forced whatever the index.
SMALL_SEGMENT_ROWS = 1024
COLUMNS = [
    "config",
    "index_type",
    "index_params",
    "search_params",
    "build_s",
    "load_s",
    "recall",
    "qps",
    "p50_ms",
    "p99_ms",
    "index_mb",
    "size_source",
    "graph_s",
    "graph_recall",
    "graph_missing",
    "ari",
    "n_clusters",
    "n_clusters_exact",
    "cluster_diff",
    "noise_frac",
]


# ----------------------------------------------------------------------------- inputs


@dataclass
class VectorSet:
    """Vectors to benchmark, their Milvus ids, and where they came from."""

    vectors: np.ndarray
    ids: np.ndarray
    source: str
    milvus_uri: str | None = None


def load_vectors(source: str | os.PathLike, limit: int | None = None) -> VectorSet:
    """Read a run directory (embeddings.npy + corpus.parquet ids) or a .npy vectors file."""
    path = Path(source)
    uri = None
    ids = None
    if path.is_dir():
        emb = path / "embeddings.npy"
        if not emb.exists():
            raise EngineError(f"{path} has no embeddings.npy (is it an `engine run` directory?)")
        corpus = path / "corpus.parquet"
        if corpus.exists():
            ids = pd.read_parquet(corpus, columns=["id"])["id"].to_numpy(np.int64)
        uri = _run_dir_uri(path)
        path = emb
    elif not path.exists():
        raise EngineError(f"vectors not found: {path}")
    elif path.suffix != ".npy":
        raise EngineError(f"{path}: expected a run directory or a .npy vectors file")
    vectors = np.load(path, mmap_mode="r")
    if vectors.ndim != 2:
        raise EngineError(f"{path}: expected a 2-D array of vectors, got shape {vectors.shape}")
    n = vectors.shape[0] if limit is None else min(int(limit), vectors.shape[0])
    vectors = np.array(vectors[:n], dtype=np.float32, order="C", copy=True)
    if not np.isfinite(vectors).all():
        bad = int(np.where(~np.isfinite(vectors).all(axis=1))[0][0])
        raise EngineError(f"{path}: row {bad} has NaN/inf values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, 1e-12)
    if ids is None or len(ids) < n:
        ids = np.arange(n, dtype=np.int64)
    return VectorSet(
        vectors=vectors, ids=np.asarray(ids[:n], dtype=np.int64), source=str(source), milvus_uri=uri
    )


def _run_dir_uri(run_dir: Path) -> str | None:
    """The server uri a run used (from run.toml); Lite runs return None (we bench on a scratch db)."""
    cfg = run_dir / "run.toml"
    if not cfg.exists():
        return None
    import tomllib

    try:
        data = tomllib.loads(cfg.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("milvus_uri", "uri") and isinstance(value, str) and value.startswith("http"):
                    return value
                stack.append(value)
    return None


# ---------------------------------------------------------------------- graphs and clusters


def milvus_graph(
    store: MilvusStore,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int,
    progress: bool,
    rows: np.ndarray | None = None,
    batch_size: int | None = None,
) -> KnnGraph:
    """kNN graph (or the graph rows ``rows``) through Milvus with the store's current search parameters."""
    return build_knn_graph(
        store, vectors, ids, k=k, workers=None, batch_size=batch_size, progress=progress, rows=rows
    )


def cluster_labels(graph: KnnGraph, min_cluster_size: int, min_samples: int | None) -> np.ndarray:
    """HDBSCAN labels on a kNN graph (the engine's own graph HDBSCAN)."""
    return np.asarray(cluster_graph(graph, min_cluster_size=min_cluster_size, min_samples=min_samples).labels)


# -------------------------------------------------------------------------------- bench


def _quiet_milvus_logs() -> None:
    for name in ("pymilvus", "milvus_lite", "pymilvus.decorators"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class IndexBench:
    """Benchmark a sweep of index configs on one set of vectors.

    Configuration in ``__init__``; ``fit(vectors, ids)`` runs it and sets ``results_``
    (DataFrame, one row per config), ``support_`` (probe result), ``skipped_`` (type -> reason),
    ``server_version_``, ``exact_clusters_`` and ``timings_``.
    """

    def __init__(
        self,
        configs: Sequence[IndexConfig],
        milvus_uri: str | None = None,
        *,
        k: int = 10,
        n_queries: int = 200,
        batch_nq: int = 100,
        latency_queries: int = 50,
        repeats: int = 3,
        build_timeout: float = 3600.0,
        graph_k: int = 15,
        min_cluster_size: int = 10,
        min_samples: int | None = None,
        metric: str = "COSINE",
        skip_unsupported: bool = False,
        probe: bool = True,
        probe_timeout: float = 30.0,
        probe_cache: str | None = None,
        collection: str | None = None,
        seed: int = 0,
        progress: bool = True,
        token: str | None = None,
    ) -> None:
        self.configs = list(configs)
        self.milvus_uri = milvus_uri
        self._token = token
        self.k = k
        self.n_queries = n_queries
        self.batch_nq = batch_nq
        self.latency_queries = latency_queries
        self.repeats = repeats
        self.build_timeout = build_timeout
        self.graph_k = graph_k
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.metric = metric
        self.skip_unsupported = skip_unsupported
        self.probe = probe
        self.probe_timeout = probe_timeout
        self.probe_cache = probe_cache
        self.collection = collection
        self.seed = seed
        self.progress = progress

    # -- validation
    def _validate(self, n: int, dim: int) -> None:
        if not self.configs:
            raise EngineError("no index configs to benchmark (--index)")
        for name in ("k", "n_queries", "batch_nq", "min_cluster_size", "repeats"):
            if int(getattr(self, name)) < 1:
                raise EngineError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latency_queries < 0 or self.graph_k < 0:
            raise EngineError("latency_queries and graph_k must be >= 0")
        if n < max(self.k, self.graph_k) + 2:
            raise EngineError(f"only {n} vectors: need more than k={max(self.k, self.graph_k) + 1}")
        if self.metric.upper() not in ("COSINE", "IP"):
            raise EngineError(f"metric {self.metric!r} not supported by bench-index (use COSINE or IP)")
        samples = self.min_samples or self.min_cluster_size
        if self.graph_k and samples > self.graph_k:
            raise EngineError(
                f"min_samples={samples} (defaults to min_cluster_size) exceeds graph_k={self.graph_k}: "
                "raise --graph-k or lower --min-samples"
            )
        limit = max(self.k, self.graph_k) + 1
        for cfg in self.configs:
            cfg.validate(k=limit, n=n, dim=dim)

    def fit(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> IndexBench:
        """Insert once, then build/measure every config; results in ``results_``."""
        _quiet_milvus_logs()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self._validate(n, dim)
        self.timings_: dict[str, float] = {}
        scratch = None
        uri = self.milvus_uri
        if not uri:
            scratch = Path(tempfile.mkdtemp(prefix="engine_bench_"))
            uri = str(scratch / "bench.db")
        name = self.collection or f"engine_bench_{os.getpid()}_{int(time.time()) % 100000}"
        # The store is created with FLAT and retargeted per build group (same collection).
        store = MilvusStore(
            uri, token=self._token, collection=name, dim=dim, metric=self.metric, index_type=FLAT.index_type
        )
        try:
            self.server_version_ = server_version(store.client)
            _quiet_milvus_logs()  # pymilvus (re)configures its loggers when the client connects
            configs = self.configs
            self.support_: dict[str, str | None] = {}
            self.skipped_: dict[str, str] = {}
            if self.probe:
                types = sorted({c.index_type for c in configs})
                self.support_ = probe_support(
                    store,
                    types,
                    metric=self.metric,
                    timeout=self.probe_timeout,
                    cache_path=self.probe_cache,
                )
                configs, self.skipped_ = check_supported(
                    configs, self.support_, skip_unsupported=self.skip_unsupported
                )
                for t, why in self.skipped_.items():
                    log.warning("skipping %s: %s", t, why)
            rng = np.random.default_rng(self.seed)
            q_pos = np.sort(rng.choice(n, size=min(self.n_queries, n), replace=False))
            exact_q = exact_knn(vectors, self.k, rows=q_pos, progress=False)
            exact_g = exact_clusters = None
            if self.graph_k > 0:
                t0 = time.perf_counter()
                exact_g = exact_knn(vectors, self.graph_k, progress=self.progress)
                self.timings_["exact_graph_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                exact_clusters = cluster_labels(exact_g, self.min_cluster_size, self.min_samples)
                self.timings_["exact_cluster_s"] = time.perf_counter() - t0
                self.exact_clusters_ = exact_clusters
            store.ensure_collection(dim, drop_existing=True)
            t0 = time.perf_counter()
            store.insert(ids, vectors)
            store.flush()
            self.timings_["insert_s"] = time.perf_counter() - t0
            rows = []
            groups: dict[tuple, list[IndexConfig]] = {}
            for cfg in configs:
                groups.setdefault(cfg.build_key(), []).append(cfg)
            from tqdm import tqdm

            bar = tqdm(total=len(configs), desc="index configs", disable=not self.progress)
            for group in groups.values():
                build_s, load_s, size, source = self._build(store, group[0], n, dim)
                for cfg in group:
                    bar.set_postfix_str(cfg.label)
                    row = self._measure(store, cfg, vectors, ids, q_pos, exact_q, exact_g, exact_clusters)
                    row.update(build_s=build_s, load_s=load_s, index_mb=size / 1e6, size_source=source)
                    rows.append(row)
                    bar.update(1)
            bar.close()
            self.results_ = pd.DataFrame(rows, columns=COLUMNS)
        finally:
            try:
                store.drop()
            except Exception:  # noqa: BLE001 - cleanup must not mask the real error
                pass
            store.close()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return self

    def _build(self, store: MilvusStore, cfg: IndexConfig, n: int, dim: int) -> tuple[float, float, int, str]:
        """Create this config's index through the store (timed until built), then load it (timed)."""
        t0 = time.perf_counter()
        store.create_index(cfg.index_type, cfg.index_params(), timeout=self.build_timeout)
        build_s = time.perf_counter() - t0
        desc = store.describe_index()
        if str(desc.get("index_type", cfg.index_type)).upper() != cfg.index_type:
            raise EngineError(f"Milvus built {desc.get('index_type')} when asked for {cfg.index_type}")
        applied = desc.get("params")
        if isinstance(applied, dict):
            for key, want in cfg.index_params().items():
                if key in applied and str(applied[key]).lower() != str(want).lower():
                    raise EngineError(f"{cfg.label}: Milvus applied {key}={applied[key]}, not {want}")
        t0 = time.perf_counter()
        store.load()
        load_s = time.perf_counter() - t0
        size, source = 0, "estimate"
        if store.is_lite:
            size = lite.index_bytes(store.uri, store.collection)
            source = "lite index files"
        if size == 0:
            size, source = cfg.estimate_bytes(n, dim), "estimate"
        return build_s, load_s, size, source

    def _measure(
        self,
        store: Any,
        cfg: IndexConfig,
        vectors: np.ndarray,
        ids: np.ndarray,
        q_pos: np.ndarray,
        exact_q: KnnGraph,
        exact_g: KnnGraph | None,
        exact_clusters: np.ndarray | None,
    ) -> dict[str, Any]:
        store.search_params = cfg.search_params()
        k = self.k
        queries = vectors[q_pos]
        store.search(queries[:1], limit=k + 1)  # warm-up
        hit_ids = np.empty((len(q_pos), k + 1), dtype=np.int64)
        best = np.inf
        for _ in range(self.repeats):  # best of N passes: shared machines make single passes noisy
            t0 = time.perf_counter()
            for s in range(0, len(q_pos), self.batch_nq):
                hit_ids[s : s + self.batch_nq], _ = store.search(queries[s : s + self.batch_nq], limit=k + 1)
            best = min(best, time.perf_counter() - t0)
        qps = len(q_pos) / best
        sample = milvus_graph(store, vectors, ids, k, progress=False, rows=q_pos, batch_size=self.batch_nq)
        recall = sample.recall_against(exact_q)
        lat = []
        for i in range(min(self.latency_queries, len(q_pos))):
            t0 = time.perf_counter()
            store.search(queries[i : i + 1], limit=k + 1)
            lat.append((time.perf_counter() - t0) * 1000.0)
        row: dict[str, Any] = {
            "config": cfg.label,
            "index_type": cfg.index_type,
            "index_params": json.dumps(cfg.index_params()),
            "search_params": json.dumps(cfg.search_params()),
            "recall": recall,
            "qps": qps,
            "p50_ms": float(np.percentile(lat, 50)) if lat else np.nan,
            "p99_ms": float(np.percentile(lat, 99)) if lat else np.nan,
        }
        if exact_g is not None and exact_clusters is not None:
            from sklearn.metrics import adjusted_rand_score

            t0 = time.perf_counter()
            g = milvus_graph(store, vectors, ids, self.graph_k, progress=self.progress)
            row["graph_s"] = time.perf_counter() - t0
            row["graph_recall"] = g.recall_against(exact_g)
            row["graph_missing"] = int(np.sum(np.asarray(g.indices) < 0))
            labels = cluster_labels(g, self.min_cluster_size, self.min_samples)
            n_c = int(labels.max() + 1) if labels.size else 0
            n_e = int(exact_clusters.max() + 1) if exact_clusters.size else 0
            row.update(
                ari=float(adjusted_rand_score(exact_clusters, labels)),
                n_clusters=n_c,
                n_clusters_exact=n_e,
                cluster_diff=n_c - n_e,
                noise_frac=float(np.mean(labels < 0)),
            )
        return row


# ----------------------------------------------------------------------- report helpers


def pareto_front(df: pd.DataFrame, x: str = "qps", y: str = "recall") -> pd.Series:
    """True for rows no other row beats on both x and y (higher is better for both)."""
    flags = []
    for _, r in df.iterrows():
        dominated = ((df[x] >= r[x]) & (df[y] >= r[y]) & ((df[x] > r[x]) | (df[y] > r[y]))).any()
        flags.append(not dominated)
    return pd.Series(flags, index=df.index)


def recommend(
    df: pd.DataFrame, target_recall: float | None = None, target_ari: float | None = None
) -> dict[str, Any] | None:
    """The fastest (batched QPS) config meeting the targets, with the `engine run` options to use it."""
    if target_recall is None and target_ari is None:
        return None
    ok = pd.Series(True, index=df.index)
    if target_recall is not None:
        ok &= df["recall"] >= target_recall
    if target_ari is not None:
        if "ari" not in df or df["ari"].isna().all():
            raise EngineError("--target-ari needs the cluster comparison (do not pass --graph-k 0)")
        ok &= df["ari"] >= target_ari
    hits = df[ok]
    if hits.empty:
        return {"config": None, "reason": "no config meets the target(s)"}
    best = hits.sort_values("qps", ascending=False).iloc[0]
    ip = json.loads(best["index_params"])
    sp = json.loads(best["search_params"])
    opts = f"--index {best['index_type']}"
    if ip:
        opts += f" --index-params '{json.dumps(ip)}'"
    if sp:
        opts += f" --search-params '{json.dumps(sp)}'"
    return {
        "config": best["config"],
        "recall": float(best["recall"]),
        "qps": float(best["qps"]),
        "ari": None if pd.isna(best.get("ari")) else float(best["ari"]),
        "engine_run_options": opts,
    }


def format_table(df: pd.DataFrame) -> str:
    """A fixed-width table for the terminal (and for pasting into notes)."""
    show = [
        c
        for c in [
            "config",
            "build_s",
            "load_s",
            "recall",
            "qps",
            "p50_ms",
            "p99_ms",
            "index_mb",
            "graph_s",
            "graph_recall",
            "ari",
            "cluster_diff",
        ]
        if c in df and not df[c].isna().all()
    ]
    fmt = {
        "build_s": "{:.2f}",
        "load_s": "{:.2f}",
        "recall": "{:.4f}",
        "qps": "{:.0f}",
        "p50_ms": "{:.1f}",
        "p99_ms": "{:.1f}",
        "index_mb": "{:.1f}",
        "graph_s": "{:.1f}",
        "graph_recall": "{:.4f}",
        "ari": "{:.4f}",
        "cluster_diff": "{:+.0f}",
    }
    out = df[show].copy()
    for c, f in fmt.items():
        if c in out:
            out[c] = out[c].map(lambda v, f=f: "" if pd.isna(v) else f.format(v))
    if "index_mb" in out and "size_source" in df:
        out["index_mb"] = [
            v + ("*" if s == "estimate" else "")
            for v, s in zip(out["index_mb"], df["size_source"], strict=True)
        ]
    return out.to_string(index=False)


def write_outputs(
    bench: IndexBench, out_dir: str | os.PathLike, meta: dict[str, Any], plots: bool = True
) -> dict[str, str]:
    """bench.csv, bench.json (rows + run metadata), pareto.html and pareto.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = bench.results_.copy()
    df["pareto"] = pareto_front(df) if len(df) else []
    paths = {"csv": str(out / "bench.csv"), "json": str(out / "bench.json")}
    df.to_csv(paths["csv"], index=False)
    payload = {
        **meta,
        "server_version": bench.server_version_,
        "support": bench.support_,
        "skipped": bench.skipped_,
        "timings": bench.timings_,
        "rows": json.loads(df.to_json(orient="records")),
    }
    Path(paths["json"]).write_text(json.dumps(payload, indent=1))
    if plots and len(df):
        from engine.bench.plot import pareto_html, pareto_png

        title = f"{meta.get('source', '')} on {bench.server_version_}"
        paths["html"] = pareto_html(df, out / "pareto.html", title=title)
        paths["png"] = pareto_png(df, out / "pareto.png", title=title)
    return paths


# ---------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `engine bench-index` (usable as a subparser)."""
    parser.add_argument("source", help="an `engine run` directory (embeddings.npy) or a .npy vectors file")
    parser.add_argument(
        "--index",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="sweep specs, e.g. 'HNSW:M=16,32:efConstruction=200:ef=32,64,128' 'IVF_FLAT:nlist=1024:nprobe=8,32'; "
        "TYPE alone = defaults, TYPE:sweep = catalogue ranges (default: FLAT IVF_FLAT HNSW)",
    )
    parser.add_argument("--index-file", default=None, help="TOML sweep ([[index]] type=..., params as lists)")
    parser.add_argument(
        "--milvus-uri", default=None, help="Milvus server uri (default: a scratch Milvus Lite db)"
    )
    parser.add_argument(
        "--milvus-token",
        default=None,
        help="Milvus token (user:password or API key); or set MILVUS_TOKEN. Never printed.",
    )
    parser.add_argument("--out", default=None, help="output directory (default: SOURCE_DIR/bench_index)")
    parser.add_argument("--k", type=int, default=10, help="recall@k (default 10)")
    parser.add_argument("--queries", type=int, default=200, help="query sample size (default 200)")
    parser.add_argument("--batch-nq", type=int, default=100, help="queries per batched search (default 100)")
    parser.add_argument("--latency-queries", type=int, default=50, help="single-query searches for p50/p99")
    parser.add_argument("--repeats", type=int, default=3, help="batched passes; QPS is the best (default 3)")
    parser.add_argument(
        "--build-timeout", type=float, default=3600.0, help="seconds to wait for an index build"
    )
    parser.add_argument(
        "--graph-k",
        type=int,
        default=15,
        help="kNN graph k for the ARI column (HDBSCAN* on the graph, as --cluster-space graph); 0 skips it",
    )
    parser.add_argument("--min-cluster-size", type=int, default=10)
    parser.add_argument("--min-samples", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N vectors")
    parser.add_argument("--metric", default="COSINE", choices=["COSINE", "IP"])
    parser.add_argument(
        "--skip-unsupported", action="store_true", help="skip index types this Milvus refuses"
    )
    parser.add_argument("--no-probe", action="store_true", help="do not probe index support first")
    parser.add_argument(
        "--probe-timeout", type=float, default=30.0, help="seconds before a create_index is hung"
    )
    parser.add_argument("--probe-cache", default=None, help="probe cache file (default ~/.cache/engine)")
    parser.add_argument("--target-recall", type=float, default=None)
    parser.add_argument("--target-ari", type=float, default=None)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--list-types", action="store_true", help="print the index catalogue and exit")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed arguments; prints the table; returns 0."""
    if getattr(args, "list_types", False):
        for name, cls in CATALOG.items():
            sweep = " ".join(f"{k}={','.join(map(str, v))}" for k, v in cls.SWEEP.items())
            print(f"{name:16s} build={list(cls.BUILD)} search={list(cls.SEARCH)} sweep: {sweep}")
        return 0
    configs: list[IndexConfig] = []
    if args.index_file:
        configs += load_sweep_toml(args.index_file)
    if args.index:
        configs += parse_specs(args.index)
    if not configs:
        configs = parse_specs(DEFAULT_SWEEP)
    vs = load_vectors(args.source, limit=args.limit)
    uri = args.milvus_uri or vs.milvus_uri
    token = args.milvus_token or os.environ.get("MILVUS_TOKEN") or None
    bench = IndexBench(
        configs,
        uri,
        k=args.k,
        n_queries=args.queries,
        batch_nq=args.batch_nq,
        latency_queries=args.latency_queries,
        repeats=args.repeats,
        build_timeout=args.build_timeout,
        graph_k=args.graph_k,
        min_cluster_size=args.min_cluster_size,
        min_samples=args.min_samples,
        metric=args.metric,
        skip_unsupported=args.skip_unsupported,
        probe=not args.no_probe,
        probe_timeout=args.probe_timeout,
        probe_cache=args.probe_cache,
        seed=args.seed,
        progress=not args.no_progress,
        token=token,
    ).fit(vs.vectors, vs.ids)
    src = Path(args.source)
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent) / "bench_index"
    rec = recommend(bench.results_, args.target_recall, args.target_ari)
    meta = {
        "source": str(args.source),
        "n": int(vs.vectors.shape[0]),
        "dim": int(vs.vectors.shape[1]),
        "milvus": "lite (scratch)" if not uri else mask_uri(uri),
        "k": args.k,
        "queries": min(args.queries, vs.vectors.shape[0]),
        "graph_k": args.graph_k,
        "repeats": args.repeats,
        "min_cluster_size": args.min_cluster_size,
        "command": redact("engine bench-index " + " ".join(sys.argv[1:]), token) if sys.argv else "",
        "recommendation": rec,
    }
    if not bench.server_version_.startswith("milvus_lite") and meta["n"] < SMALL_SEGMENT_ROWS:
        meta["note"] = (
            f"{meta['n']} rows: Milvus 2.3 builds no real index on a segment under {SMALL_SEGMENT_ROWS} rows "
            "(it searches it by brute force), so these configs differ only by noise"
        )
    paths = write_outputs(bench, out, meta, plots=not args.no_plots)
    print(
        f"Milvus {bench.server_version_}: {len(bench.results_)} configs, {meta['n']} x {meta['dim']} vectors"
    )
    for t, why in bench.skipped_.items():
        print(f"skipped {t}: {why}")
    if meta.get("note"):
        print("note: " + meta["note"])
    print(format_table(bench.results_))
    print(
        f"(* = estimated size; recall@{args.k} on {meta['queries']} queries"
        + (
            f"; ARI of HDBSCAN* on the Milvus graph vs on the exact k={args.graph_k} graph, the "
            "--cluster-space graph clustering)"
            if args.graph_k
            else ")"
        )
    )
    if rec is not None:
        if rec.get("config") is None:
            print(f"recommendation: {rec['reason']}")
        else:
            print(f"recommendation: {rec['config']} (recall {rec['recall']:.4f}, {rec['qps']:.0f} q/s)")
            print(f"  engine run ... {rec['engine_run_options']}")
    print("wrote " + ", ".join(paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: `engine bench-index ...` (or `python -m engine.bench.index_bench`)."""
    parser = add_arguments(
        argparse.ArgumentParser(prog="engine bench-index", description=__doc__.splitlines()[0])
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
