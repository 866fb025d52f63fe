"""CI-sized runs of the large benchmarks, so the scripts cannot rot.

The real runs (100k-1M vectors, minutes to an hour) are not in CI; their results live in
benchmarks/results/ and benchmarks/RESULTS.md. Each test here runs one script end to end on a tiny
input, through its command line, into a temporary directory, and checks the JSON it writes.
(bench_pipeline: tests/test_bench_pipeline.py; bench_graph and synthetic: tests/test_graph.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run_script(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_cluster_small(tmp_path) -> None:
    out = tmp_path / "cluster.json"
    run_script(
        str(BENCH / "bench_cluster.py"), "--sizes", "2000", "--base-n", "2000",
        "--paths", "engine", "fast_hdbscan_boruvka", "hdbscan_generic", "--timeout", "300", "--out", str(out),
    )  # fmt: skip
    rows = {r["path"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"engine", "fast_hdbscan_boruvka", "hdbscan_generic"}
    assert not any(r.get("error") for r in rows.values()), rows
    assert rows["engine"]["seconds"] > 0 and rows["engine"]["peak_rss_mb"] > 0
    # one copy of the base graph (hdbscan's sparse path refuses the disconnected multi-copy graphs);
    # same graph, same HDBSCAN*: the other paths must agree closely with the engine's labels
    assert rows["hdbscan_generic"]["ari_vs_engine"] >= 0.9


@pytest.mark.slow
def test_fidelity_small(tmp_path, shared_data_dir) -> None:
    out = tmp_path / "fidelity.json"
    run_script(
        str(BENCH / "fidelity.py"), "--datasets", "ag_news", "--ag-sample", "600",
        "--sources", "exact", "HNSW", "--settings", "5:10", "--out", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())["datasets"]["ag_news_sample600"]
    assert {g["source"] for s in data["settings"] for g in s["graphs"]} == {"exact", "HNSW"}
    # the exact graph at k >= 3 * min_samples reproduces hdbscan on full distances (issue 4 goal)
    exact_aris = _aris(data, source="exact", min_k=15)
    assert exact_aris and min(exact_aris) >= 0.95, exact_aris


def _aris(data: dict, source: str, min_k: int) -> list[float]:
    """ARI vs hdbscan on full distances of every ``source`` graph with k >= ``min_k``."""
    return [
        float(g["ari_vs_full"])
        for setting in data["settings"]
        for g in setting["graphs"]
        if g["source"] == source and g["k"] >= min_k
    ]


@pytest.mark.slow
def test_bench_vs_tutorial_small(tmp_path) -> None:
    out = tmp_path / "tutorial.json"
    run_script(
        str(BENCH / "bench_vs_tutorial.py"), "--sizes", "400", "--synthetic", "400",
        "--cache-dir", str(tmp_path / "cache"), "--time-cap", "600", "--mem-cap-gb", "8", "--out", str(out),
    )  # fmt: skip
    (run,) = json.loads(out.read_text())["runs"]
    assert run["n"] == 400
    for side in ("tutorial", "engine"):
        assert run[side]["finished"] and run[side]["returncode"] == 0, run[side]
        assert run[side]["n_clusters"] >= 2 and all(t > 0 for t in run[side]["times"].values()), run[side]
    assert run["engine"]["coords_finite"]
    # both pipelines cluster the same clustered vectors: their labels must largely agree (0.75 measured)
    assert run["ari_tutorial_vs_engine_labels"] >= 0.5, run["ari_tutorial_vs_engine_labels"]


def test_bench_index_ops_small(tmp_path) -> None:
    out = tmp_path / "ops.json"
    run_script(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", str(BENCH / "bench_index_ops.py"),
        "--benchmark-json", str(out), "--benchmark-min-rounds", "1", "--benchmark-max-time", "0.1",
        env={"BENCH_N": "600", "BENCH_DIM": "16"},
    )  # fmt: skip
    benches = json.loads(out.read_text())["benchmarks"]
    assert benches and all(b["stats"]["mean"] > 0 for b in benches)


@pytest.mark.slow
def test_bench_embed_ingest_rss_small(tmp_path) -> None:
    out = tmp_path / "ingest.json"
    run_script(str(BENCH / "bench_embed.py"), "--ingest-rss", "300", "--out", str(out))
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 and all(r.get("peak_rss_mb", 0) > 0 for r in rows), rows


@pytest.mark.slow
@pytest.mark.server
def test_server_index_support_small(tmp_path) -> None:
    pytest.importorskip("milvus")
    out = tmp_path / "support.json"
    run_script(
        str(BENCH / "server_index_support.py"), "--n", "1200", "--dim", "16", "--timeout", "20",
        "--types", "FLAT,HNSW,IVF_FLAT", "--out", str(out),
    )  # fmt: skip
    indexes = json.loads(out.read_text())["indexes"]
    # CPU index types every Milvus server builds: accepted and searched (IVF's recall depends on nprobe)
    for name in ("FLAT", "HNSW", "IVF_FLAT"):
        assert indexes[name]["status"] == "accepted", (name, indexes[name])
    assert indexes["FLAT"]["recall_at_k"] == 1.0
    assert indexes["HNSW"]["recall_at_k"] >= 0.9 and indexes["IVF_FLAT"]["recall_at_k"] > 0.5, indexes


@pytest.mark.slow
@pytest.mark.server
def test_bench_segments_small(tmp_path) -> None:
    pytest.importorskip("milvus")
    out = tmp_path / "segments.json"
    run_script(
        str(BENCH / "bench_segments.py"), "--n", "3000", "--dim", "16", "--data-dir", str(tmp_path),
        "--ef", "32", "--queries", "200", "--k", "10", "--insert-batch", "500", "--out", str(out),
    )  # fmt: skip
    layouts = {r["layout"]: r for r in json.loads(out.read_text())["layouts"]}
    assert set(layouts) == {"milvus-defaults", "engine"}
    for layout in layouts.values():
        assert sum(layout["segment_rows"]) == 3000
        assert layout["searches"][0]["recall@10"] >= 0.8
    assert layouts["engine"]["segments"] <= layouts["milvus-defaults"]["segments"]


def test_read_vectors_small(tmp_path) -> None:
    out = tmp_path / "read_vectors.json"
    run_script(
        str(BENCH / "read_vectors.py"), "--n", "2000", "--dims", "32", "--backends", "lite",
        "--embed-docs", "40", "--out", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    row = data["read_back"]["lite_32"]
    assert row["bitwise_equal"] is True and row["read_rows_per_s"] > 0
    assert data["baseline_embed"]["docs_per_s"] > 0 and row["vs_embedding_minilm"] > 0


def test_graph_partition_small(tmp_path) -> None:
    data_dir = tmp_path / "synth"
    run_script(str(BENCH / "synthetic.py"), "--n", "3000", "--dim", "32", "--out", str(data_dir))
    out = tmp_path / "graph_partition.json"
    run_script(
        str(BENCH / "graph_partition.py"), "--vectors", str(data_dir), "--queries", "300", "--exact-graph",
        "--out", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["n"] == 3000 and data["graph_meta"]["source"] == "partition"
    assert 0.9 <= data["held_out_recall"] <= 1.0 and data["exact_graph_recall_of_partition"] >= 0.9
    assert -1.0 <= data["ari_vs_exact_graph_clustering"] <= 1.0 and data["graph_stage_peak_rss_mb"] > 0


def test_exact_certified_is_the_brute_force_graph_and_ari_vs_exact_compares(tmp_path) -> None:
    """The certified pruning returns exactly exact_knn's graph (own thresholds, and thresholds from a given
    graph); ari_vs_exact reports a graph's recall on all rows and both default clusterings."""
    data_dir = tmp_path / "synth"
    run_script(str(BENCH / "synthetic.py"), "--n", "3000", "--dim", "64", "--out", str(data_dir))
    graph = tmp_path / "graph.npz"
    run_script(
        str(BENCH / "graph_partition.py"), "--vectors", str(data_dir), "--queries", "300", "--no-cluster",
        "--save-graph", str(graph), "--out", str(tmp_path / "graph_partition.json"),
    )  # fmt: skip
    exact = tmp_path / "exact.npz"
    for extra in ([], ["--seed-graph", str(graph), "--brute-below", "300"]):
        run_script(str(BENCH / "exact_certified.py"), str(data_dir), str(exact), "--check", *extra)
        stats = json.loads(exact.with_suffix(".json").read_text())
        assert stats["check"]["indices_identical_share"] == 1.0
        assert stats["check"]["max_abs_distance_difference"] == 0.0
        assert (stats["brute_rows"] > 0) == bool(extra)  # the 3 blobs under 300 rows go to brute force

    for npz, runs in ((graph, "g_runs"), (exact, "e_runs")):
        for part in ("0", "1"):
            run_script(
                str(BENCH / "ari_vs_exact.py"),
                "cluster",
                str(npz),
                str(tmp_path / runs),
                "--part",
                part,
                "--parts",
                "2",
            )
    out = tmp_path / "ari.json"
    run_script(
        str(BENCH / "ari_vs_exact.py"), "compare", "--graph", str(graph), str(tmp_path / "g_runs"),
        "--exact", str(exact), str(tmp_path / "e_runs"), "--labels", str(data_dir / "labels.npy"), "--out", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    g, e = np.load(graph)["indices"], np.load(exact)["indices"]
    found = sum(len(set(a) & set(b)) for a, b in zip(g.tolist(), e.tolist(), strict=True))
    # every shared id is a hit; recall_against also counts neighbours tied with the k-th distance
    assert round(found / e.size, 4) <= data["recall_at_k_all_rows"] <= 1.0
    assert len(data["graph_clustering"]["run_seconds"]) == len(data["exact_clustering"]["run_seconds"]) == 8
    assert -1.0 <= data["ari_graph_vs_exact_clustering"] <= 1.0
    assert len(data["ari_same_seed_runs_graph_vs_exact"]) == 8

    # the exact graph against itself: every row found, the same primary, every same-seed run equal
    run_script(
        str(BENCH / "ari_vs_exact.py"), "compare", "--graph", str(exact), str(tmp_path / "e_runs"),
        "--exact", str(exact), str(tmp_path / "e_runs"), "--out", str(out),
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["recall_at_k_all_rows"] == data["ari_graph_vs_exact_clustering"] == 1.0
    assert data["ari_same_seed_runs_graph_vs_exact"] == [1.0] * 8
