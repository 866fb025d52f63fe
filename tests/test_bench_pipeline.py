"""CI-sized run of benchmarks/bench_pipeline.py (the 100k/1M runs are not in CI) so the script cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_bench_pipeline_small(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_pipeline
    finally:
        sys.path.remove(str(BENCHMARKS))
    out = tmp_path / "result.json"
    code = bench_pipeline.main(
        [
            "--n", "2000", "--dim", "32", "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
            "--k", "15", "--min-cluster-size", "20", "--min-samples", "5", "--recall-sample", "200",
            "--no-umap", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["stages"]) == {"insert", "index", "graph", "hdbscan"}
    assert result["recall@15"] >= 0.9  # HNSW M=16, ef=128 on 2,000 clustered vectors
    assert result["clusters"] >= 2


def test_bench_pipeline_ari_compares_the_right_rows(tmp_path):
    """On 5 well-separated blobs (rows shuffled) the benchmark's ARI vs the given labels must be ~1:
    a mix-up of row order between Milvus ids, cluster labels and truth would drop it towards 0."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_pipeline
    finally:
        sys.path.remove(str(BENCHMARKS))
    x, y = make_blobs(2000, n_features=32, centers=5, cluster_std=1.0, random_state=0)
    np.save(tmp_path / "vectors.npy", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    np.save(tmp_path / "labels.npy", y.astype(np.int64))
    out = tmp_path / "result.json"
    code = bench_pipeline.main(
        [
            "--vectors", str(tmp_path / "vectors.npy"), "--labels", str(tmp_path / "labels.npy"),
            "--run-dir", str(tmp_path / "run"), "--k", "15", "--min-cluster-size", "20", "--min-samples", "5",
            "--recall-sample", "200", "--no-umap", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["clusters"] == 5
    assert result["ari_vs_truth"] >= 0.99, result["ari_vs_truth"]
