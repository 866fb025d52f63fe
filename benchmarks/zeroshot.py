"""Zero-shot topics on BBC News and AG News: do the class names, given as --topics, find the classes?

Input: finished runs with all-MiniLM-L6-v2 (``engine run bbc_news.csv --model all-MiniLM-L6-v2
--text-template "{title}\\n{text}" --out DIR``; AG News test: ``engine run test.csv --columns
cls,title,description --model all-MiniLM-L6-v2 --out DIR``), and optionally more clusterings of the
same vectors (a copy of the run directory re-clustered: ``engine cluster --out COPY --seed 1`` or
``--consensus-runs 1``). The class names: BBC "business, entertainment, politics, sport, tech", AG
"World, Sports, Business, Sci/Tech".

For every clustering and threshold, BEFORE (the previous rule: each cluster's centroid takes its
closest name at cosine >= threshold, kept here as ``before_labels``) and AFTER
(``engine.zeroshot.zero_shot_labels`` with the run's kNN graph), on the same labels, vectors and name
vectors. Each document's assignment: its named topic, else its own cluster (``cluster N``), noise
one label; NMI against the classes over all documents. At the default threshold also the ablations
of AFTER (no neighbour averaging, no name-bias removal, no noise joining, MAJORITY 0.5 and 2/3) and
names with a prompt ("news about {name}", what a user can type). Then the end-to-end path on each
corpus's first run: ``engine report --out DIR --topics ...`` read back from labels.parquet and
clusters.json (NMI and the table of named topics x classes).

    python benchmarks/zeroshot.py --bbc B B_s1 --ag A A_s1    # -> benchmarks/results/zeroshot_bbc_ag.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import engine.zeroshot as zs  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.report import topic_centroids  # noqa: E402

RESULTS = os.path.join(HERE, "results", "zeroshot_bbc_ag.json")
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
CORPORA = {
    "bbc": ["business", "entertainment", "politics", "sport", "tech"],
    "ag": ["World", "Sports", "Business", "Sci/Tech"],
}


def classes_of(corpus: str) -> np.ndarray:
    if corpus == "bbc":
        return pd.read_csv(os.path.join(SHARED, "bbc_news", "bbc_news.csv"))["category"].to_numpy(
            dtype=object
        )
    cls = pd.read_csv(os.path.join(SHARED, "ag_news", "test.csv"), header=None)[0].to_numpy()
    return np.array(CORPORA["ag"], dtype=object)[cls - 1]


def before_labels(labels, vectors, names, topic_vectors, threshold):
    """The previous rule: a cluster whose centroid has cosine >= threshold to its closest name takes it; same names merge."""
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = [int(c) for c in ids[np.lexsort((ids, -sizes))]]
    sims = topic_centroids(labels, vectors, order) @ zs._unit(topic_vectors).T
    out, named, first = labels.copy(), {}, {}
    for c, b, s in zip(order, sims.argmax(axis=1).tolist(), sims.max(axis=1).tolist(), strict=True):
        if s >= threshold:
            first.setdefault(b, c)
            out[labels == c] = first[b]
            named[first[b]] = names[b]
    return out, named


def assignment(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    return np.array([names.get(int(c), f"cluster {c}") if c >= 0 else "noise" for c in labels], dtype=object)


def scores(assigned: np.ndarray, classes: np.ndarray, names: list[str]) -> dict:
    named = np.isin(assigned, names)
    return {
        "nmi": round(float(normalized_mutual_info_score(classes, assigned)), 4),
        "named_share": round(float(named.mean()), 4),
        "named_correct": round(float((assigned[named] == classes[named]).mean()), 4) if named.any() else None,
        "noise_share": round(float((assigned == "noise").mean()), 4),
    }


def after(labels, vectors, names, t, threshold, neighbours, **ablation):
    """zero_shot_labels, optionally with one part switched off (ablations for the table)."""
    saved = zs.MAJORITY, zs.name_scores
    try:
        if "majority" in ablation:
            zs.MAJORITY = ablation["majority"]
        if ablation.get("no_calibration"):
            zs.name_scores = lambda v, tv, nb=None: (lambda c: (c, c))(saved[1](v, tv, nb)[0])
        out, named, rows = zs.zero_shot_labels(labels, vectors, names, t, threshold, neighbours)
    finally:
        zs.MAJORITY, zs.name_scores = saved
    if ablation.get("no_noise_join"):
        out = np.where(labels < 0, -1, out)
    return out, named, rows


def end_to_end(run: str, names: list[str], classes: np.ndarray) -> dict:
    default = str(EngineConfig().report.topic_threshold)  # explicit: run.toml may hold an older value
    cmd = [sys.executable, "-m", "engine", "report", "--out", run, "--topics", ", ".join(names)]
    cmd += ["--topic-threshold", default]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = [line for line in proc.stderr.splitlines() if "zero-shot" in line]
    out_labels = pd.read_parquet(os.path.join(run, "labels.parquet"))["cluster"].to_numpy()
    with open(os.path.join(run, "clusters.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    topic_names = {int(c["cluster"]): c["name"] for c in report["clusters"] if c["name"] in names}
    assigned = assignment(out_labels, topic_names)
    table = pd.crosstab(pd.Series(assigned, name="named topic"), pd.Series(classes, name="class"))
    print(table)
    return {
        "command": " ".join(cmd[1:]),
        "log": log,
        "report_seconds": round(seconds, 1),
        **scores(assigned, classes, names),
        "table": table.to_dict(orient="index"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bbc", nargs="+", required=True, help="BBC runs (the first gets the end-to-end check)"
    )
    parser.add_argument("--ag", nargs="+", required=True, help="AG News test runs (likewise)")
    parser.add_argument("--thresholds", default="0.1,0.15,0.2")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    from engine.embed import load_encoder
    from engine.graph import KnnGraph

    encoder = load_encoder(EngineConfig.from_flat(model="all-MiniLM-L6-v2").embed.model, device="cpu")
    default = EngineConfig().report.topic_threshold
    thresholds = [float(t) for t in args.thresholds.split(",")]
    result = {
        "model": "all-MiniLM-L6-v2",
        "default_threshold": default,
        "majority": zs.MAJORITY,
        "corpora": {},
    }
    for corpus, runs in (("bbc", args.bbc), ("ag", args.ag)):
        names = CORPORA[corpus]
        classes = classes_of(corpus)
        t = encoder.encode(names)
        prompted = encoder.encode([f"news about {n}" for n in names])
        entry = {"topics": names, "clusterings": []}
        for run in runs:
            labels = np.load(os.path.join(run, "clusters.npz"))["labels"].astype(np.int64)
            assert len(labels) == len(classes), f"{run} is not {corpus} in file order"
            vectors = np.load(os.path.join(run, "embeddings.npy"), mmap_mode="r")
            neighbours = KnnGraph.load(run).indices
            row = {
                "run": run,
                "clusters": int(len(np.unique(labels[labels >= 0]))),
                "noise_share": round(float((labels < 0).mean()), 4),
            }
            for threshold in thresholds:
                old, old_named = before_labels(labels, vectors, names, t, threshold)
                t0 = time.perf_counter()
                new, new_named, rows = after(labels, vectors, names, t, threshold, neighbours)
                seconds = time.perf_counter() - t0
                row[f"before@{threshold}"] = scores(assignment(old, old_named), classes, names)
                row[f"after@{threshold}"] = {
                    **scores(assignment(new, new_named), classes, names),
                    "clusters_whole": sum(r["topic"] is not None for r in rows),
                    "clusters_split": sum("split" in r for r in rows),
                    "noise_joined": int(((labels < 0) & (new >= 0)).sum()),
                    "seconds": round(seconds, 3),
                }
            ablations = {
                "no neighbour averaging": {"neighbours": None},
                "no name-bias removal": {"no_calibration": True},
                "no noise joining": {"no_noise_join": True},
                "majority 0.5": {"majority": 0.5},
                "majority 2/3": {"majority": 2 / 3},
            }
            for tag, ab in ablations.items():
                nb = ab.pop("neighbours", neighbours)
                new, new_named, _ = after(labels, vectors, names, t, default, nb, **ab)
                row[f"after@{default} {tag}"] = scores(assignment(new, new_named), classes, names)
            new, new_named, _ = after(labels, vectors, names, prompted, default, neighbours)
            row[f"after@{default} names as 'news about NAME'"] = scores(
                assignment(new, new_named), classes, names
            )
            old, old_named = before_labels(labels, vectors, names, prompted, default)
            row[f"before@{default} names as 'news about NAME'"] = scores(
                assignment(old, old_named), classes, names
            )
            print(corpus, run, {k: v["nmi"] for k, v in row.items() if isinstance(v, dict)})
            entry["clusterings"].append(row)
        entry["end_to_end"] = end_to_end(runs[0], names, classes)
        print(f"{corpus} end to end: NMI {entry['end_to_end']['nmi']}")
        result["corpora"][corpus] = entry
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=int)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
