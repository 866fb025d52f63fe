"""Which agreement level makes the primary consensus layer: NMI, seed ARI and 90 % subsample ARI per level.

For each corpus (MiniLM vectors, exact k=30 graph): 16 node-embedding runs (seeds from 42, and from 1 for
the seed comparison), every layer of every run votes on each kNN edge, and the pieces of the edges with
co-association above each level are the clusters (``engine.cluster.consensus``). The 90 % subsample run
uses seed 42 on a random 90 % of the documents (rng 0). Design corpora: AG News and BBC; check corpora:
StackOverflow titles and search snippets (the level was fixed on the first two).

    python benchmarks/consensus_levels.py       # -> benchmarks/results/consensus_levels.json
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from stability import CACHE, load  # noqa: E402

from engine.cluster.consensus import coassociation, majority_clusters, run_seeds  # noqa: E402
from engine.cluster.embedding import embed_graph, fuzzy_graph  # noqa: E402
from engine.cluster.layers import build_layers  # noqa: E402
from engine.graph import exact_knn  # noqa: E402

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RUNS = 16


def level_labels(x: np.ndarray, seed: int) -> dict[float, np.ndarray]:
    graph = exact_knn(x, 30, progress=False)
    idx = np.asarray(graph.indices)
    fuzzy = fuzzy_graph(graph)
    votes = []
    for s in run_seeds(seed, RUNS):
        emb = embed_graph(graph, seed=s, vectors=x, fuzzy=fuzzy)
        votes += build_layers(emb.embedding, 5, 5, seed=s).labels
    w = coassociation(idx, votes)
    return {level: majority_clusters(idx, w, 5, level) for level in LEVELS}


def main() -> int:
    from tests.fixtures.data import minilm_embed

    report: dict = {"runs": RUNS, "loadavg_start": open("/proc/loadavg").read().split()[:3], "datasets": {}}
    for name in ("ag", "bbc", "stackoverflow", "searchsnippets"):
        texts, classes = load(name)
        x = minilm_embed(texts, CACHE)
        t0 = time.perf_counter()
        base, other = level_labels(x, 42), level_labels(x, 1)
        sub = np.sort(np.random.default_rng(0).choice(len(x), int(0.9 * len(x)), replace=False))
        part = level_labels(np.ascontiguousarray(x[sub]), 42)
        rows = []
        for level in LEVELS:
            lab = base[level]
            rows.append(
                {
                    "level": level,
                    "clusters": int(lab.max()) + 1,
                    "noise_share": round(float((lab < 0).mean()), 4),
                    "largest_share": round(float(np.bincount(lab[lab >= 0]).max() / len(lab)), 4),
                    "nmi": round(float(normalized_mutual_info_score(classes, lab)), 4),
                    "seed_ari": round(float(adjusted_rand_score(lab, other[level])), 4),
                    "subsample_ari": round(float(adjusted_rand_score(lab[sub], part[level])), 4),
                }
            )
            print(name, json.dumps(rows[-1]), flush=True)
        report["datasets"][name] = {"seconds": round(time.perf_counter() - t0, 1), "levels": rows}
    report["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    out = os.path.join(HERE, "results", "consensus_levels.json")
    with open(out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
