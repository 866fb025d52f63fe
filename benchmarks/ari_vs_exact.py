"""The default clustering of a kNN graph against the default clustering of the exact graph (issue 22).

At 1M one default clustering is 8 Leiden runs of 2-4 minutes each, so the runs are split into parts that
can go side by side or one after the other, each saving its partitions; ``compare`` then picks each
graph's primary exactly as ``engine.cluster.communities.cluster_communities`` does (``small_to_noise``
at ``min_cluster_size`` 5, the medoid of the 8 runs ``run_seeds(42, 8)`` at resolution 1) and reports:

* the graph's recall@k against the exact graph on every row (not a sample);
* ARI of the graph's primary against the exact graph's primary (the issue's line), and of each against
  the generator's labels, with the clusters counted;
* the seed-to-seed ARI of the exact graph's own runs, the noise floor of the comparison;
* run i of the graph against run i of the exact graph (same seed, same settings): 8 more samples of
  what the graph alone changes, beside the one pair of medoids.

    python benchmarks/ari_vs_exact.py cluster GRAPH.npz RUNS_DIR --part 0 --parts 2   # and --part 1
    python benchmarks/ari_vs_exact.py compare --graph G.npz G_RUNS --exact E.npz E_RUNS \\
        --labels SYNTH/labels.npy --out benchmarks/results/graph_1m_vs_exact.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEED = 42
MIN_CLUSTER_SIZE = 5


def cluster_part(graph_path: str, runs_dir: str, part: int, parts: int) -> None:
    """Leiden runs ``part``, ``part + parts``, ... of the engine's default primary, each saved."""
    from engine.cluster.communities import (
        DEFAULT_RESOLUTION,
        DEFAULT_RUNS,
        igraph_from_edges,
        leiden,
        undirected_edges,
    )
    from engine.cluster.consensus import run_seeds

    idx = np.load(graph_path)["indices"]
    t = time.perf_counter()
    rows, cols = undirected_edges(idx)
    g = igraph_from_edges(idx.shape[0], rows, cols)
    print(f"graph {time.perf_counter() - t:.1f} s, {rows.size} edges", flush=True)
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(run_seeds(SEED, DEFAULT_RUNS)):
        if i % parts != part:
            continue
        t = time.perf_counter()
        labels = leiden(g, DEFAULT_RESOLUTION, seed)
        np.save(Path(runs_dir) / f"run{i}.npy", labels)
        secs = time.perf_counter() - t
        print(f"run {i} (seed {seed}) {secs:.1f} s, {labels.max() + 1} communities", flush=True)
        with open(Path(runs_dir) / "seconds.jsonl", "a") as f:
            f.write(json.dumps({"run": i, "seed": seed, "seconds": round(secs, 1)}) + "\n")


def _runs(runs_dir: str) -> list[np.ndarray]:
    """The saved runs, each with communities under ``MIN_CLUSTER_SIZE`` made noise, as the engine does."""
    from engine.cluster.communities import DEFAULT_RUNS, small_to_noise

    return [
        small_to_noise(np.load(Path(runs_dir) / f"run{i}.npy"), MIN_CLUSTER_SIZE) for i in range(DEFAULT_RUNS)
    ]


def primary(parts: list[np.ndarray], runs_dir: str) -> tuple[np.ndarray, dict]:
    """The engine's primary: the medoid of the runs (``_runs``); ``runs_dir`` holds their seconds."""
    from sklearn.metrics import adjusted_rand_score

    from engine.cluster.communities import medoid

    best = medoid(parts)
    seconds = [json.loads(line) for line in open(Path(runs_dir) / "seconds.jsonl")]
    pair_ari = [adjusted_rand_score(parts[0], p) for p in parts[1:]]
    info = {
        "medoid_run": best,
        "clusters": int(parts[best].max() + 1),
        "noise_share": round(float((parts[best] < 0).mean()), 4),
        "run_seconds": sorted(seconds, key=lambda r: r["run"]),
        "ari_run0_vs_others_min_max": [round(min(pair_ari), 4), round(max(pair_ari), 4)],
    }
    return parts[best], info


def compare(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score

    from engine.graph import KnnGraph

    g = np.load(args.graph[0])
    e = np.load(args.exact[0])
    graph = KnnGraph(g["indices"], g["distances"])
    exact = KnnGraph(e["indices"], e["distances"])
    k = exact.indices.shape[1]
    report: dict = {
        "what": __doc__.splitlines()[0],
        "graph": args.graph[0],
        "exact_graph": args.exact[0],
        "recall_at_k_all_rows": round(graph.recall_against(exact), 4),
        "k": k,
    }
    truth = np.load(args.labels) if args.labels else None
    if truth is not None:
        bg = truth < 0
        report["recall_background_rows"] = round(
            graph.recall_against(_rows(exact, bg), np.flatnonzero(bg)), 4
        )
        report["recall_clustered_rows"] = round(
            graph.recall_against(_rows(exact, ~bg), np.flatnonzero(~bg)), 4
        )
    runs_g, runs_e = _runs(args.graph[1]), _runs(args.exact[1])
    lg, report["graph_clustering"] = primary(runs_g, args.graph[1])
    le, report["exact_clustering"] = primary(runs_e, args.exact[1])
    report["ari_graph_vs_exact_clustering"] = round(float(adjusted_rand_score(le, lg)), 4)
    same_seed = [float(adjusted_rand_score(a, b)) for a, b in zip(runs_e, runs_g, strict=True)]
    report["ari_same_seed_runs_graph_vs_exact"] = [round(a, 4) for a in same_seed]
    if truth is not None:
        report["graph_clustering"]["ari_vs_generator"] = round(float(adjusted_rand_score(truth, lg)), 4)
        report["exact_clustering"]["ari_vs_generator"] = round(float(adjusted_rand_score(truth, le)), 4)
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _rows(graph, mask: np.ndarray):
    from engine.graph import KnnGraph

    return KnnGraph(graph.indices[mask], graph.distances[mask])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cluster")
    c.add_argument("graph")
    c.add_argument("runs_dir")
    c.add_argument("--part", type=int, default=0)
    c.add_argument("--parts", type=int, default=1)
    m = sub.add_parser("compare")
    m.add_argument("--graph", nargs=2, required=True, metavar=("NPZ", "RUNS_DIR"))
    m.add_argument("--exact", nargs=2, required=True, metavar=("NPZ", "RUNS_DIR"))
    m.add_argument("--labels")
    m.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "cluster":
        cluster_part(args.graph, args.runs_dir, args.part, args.parts)
    else:
        compare(args)


if __name__ == "__main__":
    main()
