"""Whole pipeline after embedding, at scale: insert -> index build -> kNN graph -> HDBSCAN -> UMAP.

Time and peak RSS per stage (this process plus its children, i.e. an engine-managed Milvus server),
recall@k of the Milvus graph against exact search on a query sample, and ARI of the labels against
the generator's ground truth. Vectors are read from a memory-mapped ``.npy`` (never copied into RAM).

    python benchmarks/bench_pipeline.py --n 100000 --milvus-uri local-server --out benchmarks/results/pipeline_100k.json
    python benchmarks/bench_pipeline.py --vectors my_vectors.npy --labels my_labels.npy ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.config import EngineConfig  # noqa: E402
from engine.graph import exact_knn  # noqa: E402
from engine.graph.tune import sample_rows  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.stages import build_graph, cluster, layout  # noqa: E402


class PeakRSS:
    """Samples the RSS of this process and its children every 0.2 s; ``stage()`` returns the peak since reset."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.2)

    def reset(self) -> None:
        self.peak = self.current()

    def stop(self) -> None:
        self._stop.set()


def load_or_generate(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, str]:
    if args.vectors:
        vectors = np.load(args.vectors, mmap_mode="r")
        labels = np.load(args.labels) if args.labels else None
        return vectors, labels, f"file {args.vectors}"
    from synthetic import generate

    data_dir = Path(args.data_dir) / f"synth_{args.n}"
    if (data_dir / "vectors.npy").exists():
        vectors = np.load(data_dir / "vectors.npy", mmap_mode="r")
        labels = np.load(data_dir / "labels.npy")
    else:
        vectors, labels = generate(args.n, str(data_dir), dim=args.dim, seed=args.seed)
    return vectors, labels, f"benchmarks/synthetic.py n={args.n} dim={vectors.shape[1]} seed={args.seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="synthetic vectors (ignored with --vectors)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vectors", help="an (N, dim) float32 .npy of unit vectors instead of synthetic data"
    )
    parser.add_argument("--labels", help="ground-truth labels .npy for --vectors (optional)")
    parser.add_argument("--data-dir", default="benchmarks/out", help="where synthetic data is cached")
    parser.add_argument("--run-dir", default=None, help="run directory (default benchmarks/out/pipeline_N)")
    parser.add_argument(
        "--milvus-uri", default=None, help="default: Milvus Lite in the run dir; or local-server"
    )
    parser.add_argument("--index", default="HNSW")
    parser.add_argument("--index-params", default='{"M": 16, "efConstruction": 200}')
    parser.add_argument("--search-params", default='{"ef": 128}')
    parser.add_argument(
        "--target-recall",
        type=float,
        default=None,
        help="tune the search knob (ef/nprobe) on a sample until recall@k reaches this; "
        "the tuning time counts in the graph stage",
    )
    parser.add_argument("--tune-sample", type=int, default=1000, help="queries used for tuning")
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--min-cluster-size", type=int, default=50)
    parser.add_argument("--min-samples", type=int, default=10)
    parser.add_argument("--n-neighbors", type=int, default=15)
    parser.add_argument("--recall-sample", type=int, default=2000)
    parser.add_argument("--no-umap", action="store_true")
    parser.add_argument(
        "--reuse-index",
        action="store_true",
        help="keep the collection and index a previous run left in --run-dir (insert and index stages "
        "are then skipped and reported as reused)",
    )
    parser.add_argument(
        "--compare-exact",
        action="store_true",
        help="also build the exact kNN graph of all N (N^2 dim flops: minutes at 100k, hours at 1M on 2 cores) "
        "and report the ARI of the Milvus-graph labels vs the exact-graph labels",
    )
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)

    rss = PeakRSS()
    vectors, truth, source = load_or_generate(args)
    n, dim = vectors.shape
    run_dir = Path(args.run_dir or f"benchmarks/out/pipeline_{n}")
    run_dir.mkdir(parents=True, exist_ok=True)
    # The pipeline reads corpus.parquet and embeddings.npy from the run directory.
    pd.DataFrame({"id": np.arange(n, dtype=np.int64), "text": [f"doc {i}" for i in range(n)]}).to_parquet(
        run_dir / "corpus.parquet", index=False
    )
    emb = run_dir / "embeddings.npy"
    if emb.exists() or emb.is_symlink():
        emb.unlink()
    os.symlink(os.path.abspath(getattr(vectors, "filename", args.vectors)), emb)
    (run_dir / "embeddings.json").write_text(
        json.dumps({"model": "precomputed", "dim": dim, "n": n, "complete": True})
    )

    tune = args.target_recall is not None
    config = EngineConfig.from_flat(
        out=str(run_dir),
        milvus_uri=args.milvus_uri,
        index=args.index,
        index_params=json.loads(args.index_params),
        # --target-recall: the graph stage tunes the knob from its ladder; else the given knob, unmeasured
        search_params=None if tune else json.loads(args.search_params),
        target_recall=args.target_recall if tune else 0.95,
        recall_sample=args.tune_sample if tune else 0,
        k=args.k,
        cluster_space="graph",
        cluster_backend="cpu",
        min_cluster_size=args.min_cluster_size,
        min_samples=args.min_samples,
        map_method="umap",
        map_backend="cpu",
        n_neighbors=args.n_neighbors,
        restart=True,
    )
    stages: dict[str, dict[str, float]] = {}

    def record(name: str, start: float, seconds: float | None = None) -> None:
        stages[name] = {
            "seconds": round(seconds if seconds is not None else time.perf_counter() - start, 2),
            "peak_rss_mb": round(rss.peak / 2**20, 1),
        }
        print(
            f"{name:<8} {stages[name]['seconds']:8.1f} s  peak RSS {stages[name]['peak_rss_mb']:8.1f} MB",
            flush=True,
        )

    ids = np.arange(n, dtype=np.int64)
    with Pipeline(config, progress=True) as pipe:
        vectors = pipe.vectors()
        rss.reset()
        t = time.perf_counter()
        store = pipe.open_store(dim=dim)
        milvus_used = pipe.resolved_milvus_uri()
        reuse = args.reuse_index and store.has_collection() and store.count() == n
        if reuse:
            print(f"reusing the stored collection ({n} rows) and its index", flush=True)
            store.load()
        else:
            store.ensure_collection(dim, drop_existing=True)
        for start in range(0, 0 if reuse else n, 10_000):
            stop = min(n, start + 10_000)
            store.insert(
                ids[start:stop],
                np.ascontiguousarray(vectors[start:stop]),
                [f"doc {i}" for i in range(start, stop)],
            )
        if not reuse:
            store.flush()
            record("insert", t)
        # The graph stage that `engine graph` runs: index build, recall check/tuning, search of every vector.
        rss.reset()
        t = time.perf_counter()
        graph = build_graph(
            vectors, ids, config.graph, store, pipe.paths, seed=0, progress=True, rebuild_index=not reuse
        )
        steps = graph.meta["seconds"]
        if not reuse:
            record("index", t, steps["index"])
        record("graph", t, steps["recall_check"] + steps["search"])
        index_params = {"reused": True} if reuse else store.index_params
        tuning = graph.meta.get("recall_check")
        search_params = tuning["search_params"] if tuning else config.store.search_params
        if tuning:
            print(f"tuned search params {search_params}: {tuning['trials']}", flush=True)
        store.close()

    sample = sample_rows(n, args.recall_sample, seed=0)
    t = time.perf_counter()
    exact = exact_knn(vectors, args.k, rows=sample)
    exact_seconds = time.perf_counter() - t
    recall = graph.recall_against(exact, rows=sample)

    rss.reset()
    t = time.perf_counter()
    result = cluster(graph, vectors, config.cluster, seed=config.seed)
    record("hdbscan", t)

    if not args.no_umap:
        rss.reset()
        t = time.perf_counter()
        coords, _ = layout(graph, config.map, seed=config.seed, vectors=vectors)
        record("umap", t)
        assert np.isfinite(coords).all()
    rss.stop()

    from sklearn.metrics import adjusted_rand_score

    exact_graph = None
    if args.compare_exact:
        t = time.perf_counter()
        full_exact = exact_knn(vectors, args.k)
        exact_result = cluster(full_exact, vectors, config.cluster, seed=config.seed)
        exact_graph = {
            "seconds": round(time.perf_counter() - t, 1),
            "recall@k_full": round(float(graph.recall_against(full_exact)), 4),
            "clusters": int(exact_result.n_clusters),
            "ari_milvus_vs_exact_graph": round(
                float(adjusted_rand_score(exact_result.labels, result.labels)), 4
            ),
        }
        if truth is not None:
            exact_graph["ari_exact_graph_vs_truth"] = round(
                float(adjusted_rand_score(truth, exact_result.labels)), 4
            )
        print(f"exact graph: {exact_graph}", flush=True)

    out = {
        "command": "python benchmarks/bench_pipeline.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_end": os.getloadavg()},
        "data": {"source": source, "n": n, "dim": dim},
        "milvus": milvus_used,
        "index": {
            "type": args.index,
            "build_params": index_params,
            "search_params": search_params,
        },
        "tuning": tuning,
        "graph_qps": graph.meta.get("qps"),
        "k": args.k,
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
        f"recall@{args.k}": round(float(recall), 4),
        "recall_sample": int(len(sample)),
        "exact_sample_seconds": round(exact_seconds, 1),
        "clusters": int(result.n_clusters),
        "noise_share": round(float((result.labels < 0).mean()), 4),
        "graph_components": int(graph.n_components()) if hasattr(graph, "n_components") else None,
    }
    if exact_graph is not None:
        out["exact_graph"] = exact_graph
    if truth is not None:
        out["ari_vs_truth"] = round(float(adjusted_rand_score(truth, result.labels)), 4)
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
