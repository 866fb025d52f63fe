#!/usr/bin/env bash
# --ray local vs one process on AG News test (7,600) with all-MiniLM-L6-v2 fp32 and the default --ray-block:
# are the embeddings, the kNN graph and the labels identical? Prints one JSON line (saved to
# results/ray_equality_ag.json with the two runs' stage times from their summaries). ~6 min on 2 cores.
# Usage (venv active, repo root): bash benchmarks/ray_equality_ag.sh
set -euo pipefail
export WORK=${WORK:-/tmp/ray_equality}
SRC=${AG:-../shared/data/ag_news/test.csv}
mkdir -p "$WORK"
COMMON=(--model all-MiniLM-L6-v2 --precision fp32 --columns label,title,description --milvus-uri local-server
        --restart --quiet)
/usr/bin/time -v engine run "$SRC" --out "$WORK/ag_single" "${COMMON[@]}" 2> "$WORK/ag_single.err"
/usr/bin/time -v engine run "$SRC" --out "$WORK/ag_ray" "${COMMON[@]}" --ray local 2> "$WORK/ag_ray.err"
python - <<'PY'
import json, os
import numpy as np, pandas as pd
from sklearn.metrics import adjusted_rand_score as ari
a, b = (os.path.join(os.environ["WORK"], d) for d in ("ag_single", "ag_ray"))
ea, eb = np.load(f"{a}/embeddings.npy"), np.load(f"{b}/embeddings.npy")
ga, gb = np.load(f"{a}/knn_arrays.npz"), np.load(f"{b}/knn_arrays.npz")
la, lb = pd.read_parquet(f"{a}/labels.parquet"), pd.read_parquet(f"{b}/labels.parquet")
cols = [c for c in la.columns if c == "cluster" or c.startswith("layer_")]
m = la.merge(lb, on="id")
out = {
    "embeddings_equal": bool(np.array_equal(ea, eb)), "max_abs_diff": float(np.abs(ea - eb).max()),
    "graph_meta": json.loads(str(gb["meta"])).get("detail"),
    "graph_rows_differing": int((np.sort(ga["indices"], 1) != np.sort(gb["indices"], 1)).any(1).sum()),
    "labels_identical": all((m[c + "_x"] == m[c + "_y"]).all() for c in cols),
    "ari": {c: round(float(ari(m[c + "_x"], m[c + "_y"])), 4) for c in cols},
    "clusters": int(la.cluster.nunique()),
}
print(json.dumps(out))
PY
