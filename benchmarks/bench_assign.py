"""`engine assign` vs re-running the whole corpus: do held-out documents land where a full run puts them?

AG News test (7,600 labelled headlines+descriptions), all-MiniLM-L6-v2, real Milvus Lite:
run A clusters 90 % of the documents; the other 10 % are placed with ``Pipeline.assign``;
run B clusters all 100 % from scratch. Cluster ids of A and B differ, so each A cluster is
mapped to the B cluster it shares most documents with (on the 90 % both runs hold; noise maps to
noise). Reported:

- ``held_out_agreement``: share of held-out documents whose assigned label, mapped, equals B's
  label (noise == noise counts as agreement);
- ``shared_agreement``: the same measure for the 90 % both runs clustered: how stable the
  clustering itself is between the two runs, the ceiling for the assignment;
- ARI (noise as its own label) for both sets, precision of placed documents, and the time of
  ``assign`` vs the full re-run.

    OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 python benchmarks/bench_assign.py --out benchmarks/results/assign_agnews.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import EngineConfig  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402


def mapped_agreement(a: np.ndarray, b: np.ndarray, mapping: dict[int, int]) -> float:
    mapped = np.array([mapping.get(int(x), -2) if x >= 0 else -1 for x in a])
    return float(np.mean(mapped == b))


def majority_mapping(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    table = pd.crosstab(a, b)
    return {int(c): int(table.loc[c].idxmax()) for c in table.index if c >= 0}


def n_clusters(labels: np.ndarray) -> int:
    return int(len(np.unique(labels[labels >= 0])))


def layer_agreement(
    part: pd.DataFrame, full: pd.DataFrame, assigned: pd.DataFrame, shared: np.ndarray, held: np.ndarray
) -> list[dict]:
    """Per layer of run A: agreement with the layer of run B closest in number of clusters.

    The primary layer is chosen per run (by persistence), so A and B may pick different granularities;
    comparing layer to matching layer separates "assign places documents well" from that choice.
    """
    a_all, b_all = part.set_index("id"), full.set_index("id")
    b_layers = [c for c in full.columns if c.startswith("layer_")]
    rows = []
    for c in [c for c in part.columns if c.startswith("layer_")]:
        a_shared = a_all[c].loc[shared].to_numpy()
        na = n_clusters(a_shared)
        best = min(b_layers, key=lambda f: abs(np.log((n_clusters(b_all[f].to_numpy()) + 1) / (na + 1))))
        b_shared, b_held = b_all[best].loc[shared].to_numpy(), b_all[best].loc[held].to_numpy()
        mapping = majority_mapping(a_shared, b_shared)
        rows.append(
            {
                "part_layer": c,
                "part_clusters": na,
                "full_layer": best,
                "full_clusters": n_clusters(b_all[best].to_numpy()),
                "held_out_agreement": round(mapped_agreement(assigned[c].to_numpy(), b_held, mapping), 4),
                "shared_agreement": round(mapped_agreement(a_shared, b_shared, mapping), 4),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ag_news" / "test.csv"))
    parser.add_argument("--held-out", type=float, default=0.1)
    parser.add_argument("--k", type=int, default=15, help="neighbours that vote in assign")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="use the first N documents (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "assign_agnews.json"))
    args = parser.parse_args()

    data = pd.read_csv(args.data, header=None, names=["label", "title", "description"])
    if args.limit:
        data = data.iloc[: args.limit]
    data.insert(0, "doc", np.arange(len(data)))
    rng = np.random.default_rng(args.seed)
    held = np.sort(rng.choice(len(data), int(round(args.held_out * len(data))), replace=False))
    keep = np.setdiff1d(np.arange(len(data)), held)
    work = Path(tempfile.mkdtemp(prefix="bench_assign_"))
    part_csv, full_csv = work / "part.csv", work / "full.csv"
    data.iloc[keep].to_csv(part_csv, index=False)
    data.to_csv(full_csv, index=False)
    common = dict(model="all-MiniLM-L6-v2", id_column="doc", max_length=args.max_length, seed=args.seed)

    t0 = time.perf_counter()
    part = Pipeline(
        EngineConfig.from_flat(corpus=str(part_csv), out=str(work / "part"), **common), progress=False
    )
    part.run()
    part_seconds = time.perf_counter() - t0
    new = (
        data.iloc[held]
        .assign(text=lambda d: d["title"] + "\n" + d["description"])
        .rename(columns={"doc": "id"})
    )
    t0 = time.perf_counter()
    assigned = part.assign(new[["id", "text"]], k=args.k, source="held_out")
    assign_seconds = time.perf_counter() - t0
    part.close()

    t0 = time.perf_counter()
    full = Pipeline(
        EngineConfig.from_flat(corpus=str(full_csv), out=str(work / "full"), **common), progress=False
    )
    full.run()
    full_seconds = time.perf_counter() - t0
    full.close()

    a_labels = part.labels_.set_index("id")["cluster"]
    b_labels = full.labels_.set_index("id")["cluster"]
    shared_docs = data["doc"].to_numpy()[keep]
    a_shared = a_labels.loc[shared_docs].to_numpy()
    b_shared = b_labels.loc[shared_docs].to_numpy()
    mapping = majority_mapping(a_shared, b_shared)
    held_docs = data["doc"].to_numpy()[held]
    a_held = assigned["cluster"].to_numpy()
    b_held = b_labels.loc[held_docs].to_numpy()
    from sklearn.metrics import adjusted_rand_score

    placed = a_held >= 0
    mapped_held = np.array([mapping.get(int(x), -2) for x in a_held[placed]])
    result = {
        "benchmark": "assign_vs_full_rerun",
        "command": " ".join(sys.argv),
        "machine": f"{platform.node()} {os.cpu_count()} cores, shared with other jobs",
        "data": "AG News test",
        "documents": len(data),
        "held_out": len(held),
        "params": {
            **common,
            "assign_k": args.k,
            "clustering": "engine defaults (cluster space embedding: k=30, min_cluster_size 5, min_samples 5, "
            "primary layer by persistence)",
        },
        "clusters_part_run": int(len(np.unique(a_shared[a_shared >= 0]))),
        "clusters_full_run": int(len(np.unique(b_labels[b_labels >= 0]))),
        "held_out_agreement": mapped_agreement(a_held, b_held, mapping),
        "shared_agreement": mapped_agreement(a_shared, b_shared, mapping),
        "held_out_ari": float(adjusted_rand_score(b_held, a_held)),
        "shared_ari": float(adjusted_rand_score(b_shared, a_shared)),
        "held_out_placed_share": float(placed.mean()),
        "full_run_clustered_share_of_held_out": float((b_held >= 0).mean()),
        "placed_precision": float(np.mean(mapped_held == b_held[placed])) if placed.any() else None,
        "noise_agreement": float(np.mean(b_held[~placed] < 0)) if (~placed).any() else None,
        "reasons": assigned["cluster_reason"].value_counts().to_dict(),
        "assign_seconds": round(assign_seconds, 2),
        "assign_docs_per_s": round(len(held) / assign_seconds, 1),
        "part_run_seconds": round(part_seconds, 1),
        "full_run_seconds": round(full_seconds, 1),
        "full_rerun_over_assign": round(full_seconds / assign_seconds, 1),
        "layers": layer_agreement(part.labels_, full.labels_, assigned, shared_docs, held_docs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
