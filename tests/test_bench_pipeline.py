"""CI-sized run of benchmarks/bench_pipeline.py (the 100k/1M runs are not in CI) so the script cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


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
    assert 0.0 <= result["ari_vs_truth"] <= 1.0
