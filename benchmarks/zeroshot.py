"""Zero-shot topics on BBC News: do the five class names, given as --topics, find the five classes?

Input: a finished run of BBC News with all-MiniLM-L6-v2 (``engine run bbc_news.csv --model
all-MiniLM-L6-v2 --text-template "{title}\\n{text}" --out DIR``). For each threshold, the named-topic
assignment of every document is: the topic name its cluster took, else its own cluster (``cluster
N``), noise stays noise; NMI against the BBC classes over all documents (noise = one label) and over
the documents that took a name. Then the end-to-end path: ``engine report --out DIR --topics ...``
at the default threshold, read back from labels.parquet + clusters.json (same NMI, and the table of
named topics x classes).

    python benchmarks/zeroshot.py --run /tmp/r/bbc       # -> benchmarks/results/zeroshot_bbc.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from engine.config import EngineConfig  # noqa: E402
from engine.stages import apply_merges, merge_map  # noqa: E402
from engine.zeroshot import zero_shot_edits  # noqa: E402

RESULTS = os.path.join(HERE, "results", "zeroshot_bbc.json")
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
TOPICS = ["business", "entertainment", "politics", "sport", "tech"]


def assignment(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    return np.array([names.get(int(c), f"cluster {c}") if c >= 0 else "noise" for c in labels], dtype=object)


def scores(assigned: np.ndarray, classes: np.ndarray) -> dict:
    named = np.isin(assigned, TOPICS)
    return {
        "nmi_all": round(float(normalized_mutual_info_score(classes, assigned)), 4),
        "nmi_named_docs": round(float(normalized_mutual_info_score(classes[named], assigned[named])), 4)
        if named.any()
        else None,
        "named_share": round(float(named.mean()), 4),
        "noise_share": round(float((assigned == "noise").mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--thresholds", default="0.1,0.15,0.2,0.25,0.3")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    bbc = pd.read_csv(os.path.join(SHARED, "bbc_news", "bbc_news.csv"))
    classes = bbc["category"].to_numpy(dtype=object)
    clusters = dict(np.load(os.path.join(args.run, "clusters.npz")))
    labels = clusters["labels"].astype(np.int64)
    assert len(labels) == len(classes), "the run is not BBC News in file order"
    vectors = np.load(os.path.join(args.run, "embeddings.npy"), mmap_mode="r")

    from engine.embed import load_encoder

    encoder = load_encoder(EngineConfig.from_flat(model="all-MiniLM-L6-v2").embed.model, device="cpu")
    topic_vectors = encoder.encode(TOPICS)
    sweep = []
    for threshold in [float(t) for t in args.thresholds.split(",")]:
        groups, named, rows = zero_shot_edits(labels, vectors, TOPICS, topic_vectors, threshold)
        merged = apply_merges({"labels": labels}, merge_map(groups))["labels"]
        sweep.append({"threshold": threshold, **scores(assignment(merged, named), classes), "clusters": rows})
        print(f"threshold {threshold}: {sweep[-1]['nmi_all']} (named {sweep[-1]['named_share']})")

    default = str(EngineConfig().report.topic_threshold)  # explicit: run.toml may hold an older value
    cmd = [sys.executable, "-m", "engine", "report", "--out", args.run, "--topics", ", ".join(TOPICS)]
    cmd += ["--topic-threshold", default]
    subprocess.run(cmd, check=True)
    out_labels = pd.read_parquet(os.path.join(args.run, "labels.parquet"))["cluster"].to_numpy()
    with open(os.path.join(args.run, "clusters.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    names = {int(c["cluster"]): c["name"] for c in report["clusters"] if c["name"] in TOPICS}
    assigned = assignment(out_labels, names)
    table = pd.crosstab(pd.Series(assigned, name="named topic"), pd.Series(classes, name="BBC class"))
    end_to_end = {
        "command": " ".join(cmd[1:]),
        **scores(assigned, classes),
        "table": table.to_dict(orient="index"),
    }
    print(table)
    print(f"end to end: NMI {end_to_end['nmi_all']} over all documents")
    result = {"run": args.run, "topics": TOPICS, "sweep": sweep, "end_to_end": end_to_end}
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=int)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
