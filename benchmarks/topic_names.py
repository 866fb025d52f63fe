"""Cluster names before/after the keyword rules, on finished runs (labels.parquet + embeddings.npy).

For each run directory: the names of the ten largest primary-layer clusters as this checkout's
report builds them, and (``--before-engine DIR``: another checkout, e.g. the main branch) as that
checkout's ``engine.report`` builds them from the very same labels and vectors. Checks, on every
cluster name of every layer in the run's clusters.json: no stop word, no "said", "says", "mr",
"didn", "rt", no HTML fragment; every keyword has a score.

    python benchmarks/topic_names.py --runs news=/tmp/r/news bbc=/tmp/r/bbc ag=/tmp/r/ag \
        --before-engine /work/main          # -> benchmarks/results/topic_names.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from engine.keywords import default_stop_words  # noqa: E402

RESULTS = os.path.join(HERE, "results", "topic_names.json")
BANNED = {"said", "says", "mr", "didn", "rt"}
HTML_FRAGMENT = re.compile(r"[<>&;]|\b(?:nbsp|quot|amp|href|http|https|www|lt|gt|br|div|span)\b", re.I)

# Run in the other checkout's engine: the same labels and vectors, its own report code.
_NAMES = r"""
import json, sys
import numpy as np, pandas as pd
from engine.report import build_layers_report, build_report
root = sys.argv[1]
labels = pd.read_parquet(f"{root}/labels.parquet")
vectors = np.load(f"{root}/embeddings.npy", mmap_mode="r")
frame = labels[["id", "text", "cluster", "probability", "outlier_score"]].copy()
layer_cols = sorted((c for c in labels.columns if c.startswith("layer_")), key=lambda c: int(c[6:]))
clusters = np.load(f"{root}/clusters.npz")
if layer_cols and "primary" in clusters:
    rep = build_layers_report(frame, np.stack([labels[c].to_numpy() for c in layer_cols]),
                              int(clusters["primary"]), vectors=vectors)
else:
    rep = build_report(frame, vectors=vectors)
d = rep.to_dict()
print(json.dumps([{"cluster": c["cluster"], "size": c["size"], "name": c["name"]} for c in d["clusters"][:10]]))
"""


def check_names(report: dict) -> dict:
    """Every name of every layer against the rules; every keyword has a score."""
    stops = default_stop_words()
    layers = report.get("layers") or [{"clusters": report["clusters"]}]
    bad: list[str] = []
    n_names = n_keywords = n_scored = 0
    for layer in layers:
        for c in layer["clusters"]:
            n_names += 1
            words = {w for term in c["name"].split(", ") for w in term.split()}
            if words & (stops | BANNED) or HTML_FRAGMENT.search(c["name"]):
                bad.append(c["name"])
            n_keywords += len(c["keywords"])
            n_scored += sum(1 for s in c.get("keyword_scores", []) if isinstance(s, float))
    return {
        "names_checked": n_names,
        "bad_names": bad,
        "keywords": n_keywords,
        "keywords_with_score": n_scored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="name=RUN_DIR ...")
    parser.add_argument(
        "--before-engine", help="another checkout whose engine.report gives the 'before' names"
    )
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    result = {}
    for spec in args.runs:
        name, root = spec.split("=", 1)
        with open(os.path.join(root, "clusters.json"), encoding="utf-8") as fh:
            report = json.load(fh)
        entry = {
            "run": root,
            "n_documents": report["n_documents"],
            "n_clusters": report["n_clusters"],
            "noise_share": round(report["noise"]["share"], 4),
            "after": [
                {"cluster": c["cluster"], "size": c["size"], "name": c["name"]}
                for c in report["clusters"][:10]
            ],
            "check": check_names(report),
        }
        if args.before_engine:
            # Its own venv when it has one: an editable install of this checkout would win over PYTHONPATH.
            other = os.path.join(args.before_engine, ".venv", "bin", "python")
            python = other if os.path.exists(other) else sys.executable
            env = {**os.environ, "PYTHONPATH": os.path.abspath(args.before_engine)}
            out = subprocess.run(
                [python, "-c", _NAMES, os.path.abspath(root)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd="/",
            )
            entry["before"] = json.loads(out.stdout.strip().splitlines()[-1])
            entry["before_engine"] = args.before_engine
        result[name] = entry
        print(f"{name}: {entry['check']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
