"""The graph stage with ``--graph-source partition`` on a vector file: recall, time, memory, clustering.

Runs the engine's own graph stage (``engine.stages.build_graph`` with the defaults: the partitioned
join, the recall check on 1,000 sampled queries, NN-descent refinement to ``--target-recall`` within
``--refine-budget``) on ``VECTORS/vectors.npy``, then measures what issue 22 asks for, on queries the
stage never saw:

* recall@k of the final graph on ``--queries`` exact queries (blocked brute force, seed 1);
* the stage's seconds per step and the peak RSS of this process during the stage (the memory-mapped
  vectors' resident pages included);
* the default clustering (Leiden communities, seed 42) of that graph: ARI against the generator's
  labels (``labels.npy``) and, with ``--exact-graph``, against the clustering of the exact graph
  (brute force over every row: minutes at 100k, hours at 1M on 2 cores).

    OMP_NUM_THREADS=2 python benchmarks/graph_partition.py --vectors benchmarks/out/synth_1m \\
        --out benchmarks/results/graph_partition_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", required=True, help="folder with vectors.npy (and labels.npy)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--probes", type=int, default=None, help="--partition-probes (default: the engine's)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--target-recall", type=float, default=None, help="default: the engine's")
    parser.add_argument("--exact-graph", action="store_true", help="also cluster the exact graph (ARI)")
    parser.add_argument("--save-graph", help="also write the graph to this .npz (indices, distances)")
    parser.add_argument(
        "--no-cluster",
        action="store_true",
        help="graph and recall only (the 1M clustering takes over an hour)",
    )
    args = parser.parse_args(argv)

    from bench_pipeline import PeakRSS
    from sklearn.metrics import adjusted_rand_score

    from engine.cluster.space import cluster_community_space
    from engine.config import GraphSettings
    from engine.graph import exact_knn
    from engine.stages import build_graph

    folder = Path(args.vectors)
    x = np.load(folder / "vectors.npy", mmap_mode="r")
    labels_path = folder / "labels.npy"
    truth = np.load(labels_path) if labels_path.exists() else None
    n = x.shape[0]
    settings = GraphSettings(graph_source="partition", k=args.k)
    if args.probes:
        settings.partition_probes = args.probes
    if args.target_recall:
        settings.target_recall = args.target_recall
    report: dict = {
        "what": __doc__.splitlines()[0],
        "vectors": str(folder),
        "n": n,
        "dim": int(x.shape[1]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "settings": settings.model_dump(),
    }

    rss = PeakRSS()
    rss.reset()
    t0 = time.perf_counter()
    graph = build_graph(x, np.arange(n), settings, store=None, seed=0, progress=False)
    report["graph_stage_seconds"] = round(time.perf_counter() - t0, 1)
    report["graph_stage_peak_rss_mb"] = round(rss.peak / 2**20)
    report["graph_meta"] = json.loads(json.dumps(graph.meta, default=str))
    print(
        json.dumps({key: report[key] for key in ("graph_stage_seconds", "graph_stage_peak_rss_mb")}),
        flush=True,
    )
    print(graph.meta["detail"], flush=True)
    if args.save_graph:
        np.savez(args.save_graph, indices=graph.indices, distances=graph.distances)
        report["saved_graph"] = args.save_graph

    rows = np.sort(np.random.default_rng(1).choice(n, min(args.queries, n), replace=False))
    t = time.perf_counter()
    exact_sample = exact_knn(x, args.k, rows=rows, progress=False)
    report["held_out_queries"] = int(rows.size)
    report["held_out_exact_seconds"] = round(time.perf_counter() - t, 1)
    report["held_out_recall"] = round(graph.recall_against(exact_sample, rows), 4)
    if truth is not None:
        report["held_out_recall_background"] = round(
            _recall_where(graph, exact_sample, rows, truth[rows] < 0), 4
        )
        report["held_out_recall_clustered"] = round(
            _recall_where(graph, exact_sample, rows, truth[rows] >= 0), 4
        )
    print(json.dumps({key: v for key, v in report.items() if key.startswith("held_out")}), flush=True)

    if args.no_cluster:
        rss.stop()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
        return 0
    rss.reset()
    t = time.perf_counter()
    clustered = cluster_community_space(graph, seed=42)
    report["cluster_seconds"] = round(time.perf_counter() - t, 1)
    report["cluster_peak_rss_mb"] = round(rss.peak / 2**20)
    report["n_clusters"] = int(clustered.labels.max() + 1)
    if truth is not None:
        report["ari_vs_generator"] = round(float(adjusted_rand_score(truth, clustered.labels)), 4)
    if args.exact_graph:
        t = time.perf_counter()
        exact = exact_knn(x, args.k, progress=False)
        report["exact_graph_seconds"] = round(time.perf_counter() - t, 1)
        report["exact_graph_recall_of_partition"] = round(graph.recall_against(exact), 4)
        exact_clustered = cluster_community_space(exact, seed=42)
        report["ari_vs_exact_graph_clustering"] = round(
            float(adjusted_rand_score(exact_clustered.labels, clustered.labels)), 4
        )
        if truth is not None:
            report["exact_graph_ari_vs_generator"] = round(
                float(adjusted_rand_score(truth, exact_clustered.labels)), 4
            )
    rss.stop()
    report["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps({key: v for key, v in report.items() if "ari" in key or "cluster" in key}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


def _recall_where(graph, exact, rows: np.ndarray, mask: np.ndarray) -> float:
    """Recall on the sampled rows selected by ``mask`` (e.g. the generator's background rows)."""
    from engine.graph import KnnGraph

    if not mask.any():
        return float("nan")
    sub = KnnGraph(exact.indices[mask], exact.distances[mask])
    return graph.recall_against(sub, rows[mask])


if __name__ == "__main__":
    sys.exit(main())
