"""Cost of the consensus clustering: the cluster stage with 16 runs (the default) vs 1 run, same graph.

Input: a vectors.npy (default: the synthetic 100k x 1024 set of benchmarks/synthetic.py, seed 0, under
benchmarks/out/synth_100k/). The exact k=30 graph is built once (blocked brute force) and cached next to
it. Timed: ``cluster_embedding_space`` with ``consensus_runs`` 1 and 16 (wall seconds, peak RSS of this
process during the call), and the ARI between the two primaries.

    NUMBA_NUM_THREADS=2 python benchmarks/consensus_cost.py   # -> benchmarks/results/consensus_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_pipeline import PeakRSS  # noqa: E402

from engine.cluster.space import cluster_embedding_space  # noqa: E402
from engine.graph import KnnGraph, exact_knn  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", default=str(HERE / "out" / "synth_100k" / "vectors.npy"))
    parser.add_argument("--runs", default="1,16")
    parser.add_argument("--out", default=str(HERE / "results" / "consensus_cost.json"))
    args = parser.parse_args(argv)
    vectors = np.load(args.vectors, mmap_mode="r")
    graph_dir = Path(args.vectors).with_suffix(".exact_k30")
    if graph_dir.exists():
        graph = KnnGraph.load(graph_dir)
    else:
        t0 = time.perf_counter()
        graph = exact_knn(np.asarray(vectors), 30)
        print(f"exact graph: {time.perf_counter() - t0:.0f} s", flush=True)
        graph.save(graph_dir)
    report: dict = {"vectors": args.vectors, "n": int(len(vectors)), "dim": int(vectors.shape[1]), "runs": {}}
    report["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    rss = PeakRSS()
    primaries = {}
    for runs in [int(r) for r in args.runs.split(",")]:
        rss.reset()
        t0 = time.perf_counter()
        res = cluster_embedding_space(graph, vectors=vectors, seed=42, consensus_runs=runs)
        secs = time.perf_counter() - t0
        primaries[runs] = res.labels
        report["runs"][runs] = {
            "seconds": round(secs, 1),
            "timings": {k: round(v, 1) for k, v in res.timings.items()},
            "peak_rss_mb": round(rss.peak / 2**20, 1),
            "clusters": int(res.n_clusters),
            "noise_share": round(float(res.noise_fraction), 4),
        }
        print(runs, json.dumps(report["runs"][runs]), flush=True)
    keys = sorted(primaries)
    if len(keys) == 2:
        report["ari_between"] = round(float(adjusted_rand_score(primaries[keys[0]], primaries[keys[1]])), 4)
    report["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
