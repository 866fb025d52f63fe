"""CI-sized run of benchmarks/quality.py: real vectors, real methods, numbers that can fail."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.quality import run_dataset


def test_quality_benchmark_small(agnews_minilm, tmp_path):
    vectors, classes = agnews_minilm
    keep = np.isin(classes, [2, 4])  # Sports vs Sci/Tech: clearly separable news classes
    out = run_dataset(
        "ag-sports-scitech", vectors[keep], classes[keep], methods=("engine", "engine_graph", "kmeans")
    )
    path = tmp_path / "q.json"
    path.write_text(json.dumps(out))
    res = json.loads(path.read_text())["methods"]
    for key in ("engine", "engine_layer0", "engine_graph", "kmeans_true_k"):
        for metric in ("nmi_all", "ari_all", "nmi_clustered", "ari_clustered", "noise_share", "seconds"):
            assert np.isfinite(res[key][metric]), (key, metric)
    assert res["kmeans_true_k"]["nmi_all"] > 0.6  # the classes really are separable in these vectors
    assert res["engine"]["noise_share"] <= 0.25
    # two classes: the primary layer splits them into sub-topics; the coarse end of the tree finds them
    best_layer = max(r["nmi_all"] for k, r in res.items() if k.startswith("engine_layer"))
    assert best_layer > 0.4
    # the embedding space beats HDBSCAN* on the raw graph (its noise share is the known failure)
    assert res["engine"]["nmi_all"] > res["engine_graph"]["nmi_all"]
