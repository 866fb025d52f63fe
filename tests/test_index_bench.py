"""bench-index end to end on real Milvus (Lite, and the standalone server when available)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from engine.bench.index_bench import (
    IndexBench,
    format_table,
    load_vectors,
    main,
    pareto_front,
    recommend,
)
from engine.bench.index_catalog import parse_specs
from engine.errors import EngineError

N, DIM = 2000, 32


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    """2,000 unit vectors in 12 tight clusters of unequal size plus 5% background."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((12, DIM))
    sizes = rng.multinomial(int(N * 0.95), np.arange(12, 0, -1) / np.arange(12, 0, -1).sum())
    parts = [c + 0.25 * rng.standard_normal((s, DIM)) for c, s in zip(centres, sizes, strict=True)]
    parts.append(rng.standard_normal((N - sizes.sum(), DIM)) * 1.5)
    v = np.concatenate(parts).astype(np.float32)
    v = v[rng.permutation(N)]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def test_bench_index_on_milvus_lite(clustered: np.ndarray, tmp_path, capsys) -> None:
    """FLAT + IVF_FLAT + HNSW through the CLI: csv/json/html/png, FLAT recall exactly 1."""
    np.save(tmp_path / "vectors.npy", clustered)
    out = tmp_path / "bench"
    rc = main(
        [
            str(tmp_path / "vectors.npy"),
            "--out",
            str(out),
            "--index",
            "FLAT",
            "IVF_FLAT:nlist=32:nprobe=1,8",
            "HNSW:M=8:efConstruction=64:ef=16",
            "IVF_PQ",
            "--skip-unsupported",
            "--queries",
            "100",
            "--latency-queries",
            "10",
            "--graph-k",
            "10",
            "--min-cluster-size",
            "15",
            "--min-samples",
            "5",
            "--probe-cache",
            str(tmp_path / "cache.json"),
            "--target-recall",
            "0.9",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped IVF_PQ" in printed and "recommendation:" in printed and "--index " in printed
    for name in ("bench.csv", "bench.json", "pareto.html", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in (out / "pareto.html").read_text()[:200_000].lower()
    df = pd.read_csv(out / "bench.csv")
    assert list(df["index_type"]) == ["FLAT", "IVF_FLAT", "IVF_FLAT", "HNSW"]
    flat = df[df.index_type == "FLAT"].iloc[0]
    assert flat.recall == 1.0 and flat.graph_recall == 1.0 and flat.ari == pytest.approx(1.0)
    assert flat.cluster_diff == 0 and flat.n_clusters >= 5
    ivf = df[df.index_type == "IVF_FLAT"].set_index("search_params")
    assert ivf.loc['{"nprobe": 1}', "recall"] < ivf.loc['{"nprobe": 8}', "recall"]  # nprobe is honoured
    assert (df.build_s > 0).all() and (df.qps > 0).all() and (df.p99_ms >= df.p50_ms).all()
    assert (df.index_mb > 0).all() and set(df.size_source) <= {"lite index files", "estimate"}
    assert df.ari.between(-1, 1).all() and df.graph_s.gt(0).all()
    meta = json.loads((out / "bench.json").read_text())
    assert meta["server_version"].startswith("milvus_lite")
    assert meta["support"]["HNSW"] is None and "IVF_PQ" in meta["skipped"]
    assert meta["n"] == N and meta["dim"] == DIM and len(meta["rows"]) == 4
    assert meta["recommendation"]["engine_run_options"].startswith("--index ")


def test_unsupported_type_is_refused_with_a_clear_message(clustered: np.ndarray, tmp_path, capsys) -> None:
    np.save(tmp_path / "v.npy", clustered[:300])
    rc = main(
        [
            str(tmp_path / "v.npy"),
            "--index",
            "SCANN",
            "--probe-cache",
            str(tmp_path / "c.json"),
            "--no-progress",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: index type(s) not supported")
        and "SCANN" in err
        and "--skip-unsupported" in err
    )


def test_bad_inputs_raise_engine_errors(clustered: np.ndarray, tmp_path) -> None:
    with pytest.raises(EngineError, match="vectors not found"):
        load_vectors(tmp_path / "nope.npy")
    (tmp_path / "run").mkdir()
    with pytest.raises(EngineError, match="no embeddings.npy"):
        load_vectors(tmp_path / "run")
    with pytest.raises(EngineError, match="ef=8 must be >= the search limit k=11"):
        IndexBench(parse_specs(["HNSW:ef=8"]), k=10, graph_k=0).fit(clustered[:200])
    with pytest.raises(EngineError, match="min_samples=20 .* exceeds graph_k=10"):
        IndexBench(parse_specs(["FLAT"]), graph_k=10, min_cluster_size=20).fit(clustered[:200])
    with pytest.raises(EngineError, match="nlist=4096 exceeds the number of vectors"):
        IndexBench(parse_specs(["IVF_FLAT:nlist=4096:nprobe=8"]), graph_k=0).fit(clustered[:200])


def test_load_vectors_from_a_run_directory(clustered: np.ndarray, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "embeddings.npy", clustered[:50] * 3.0)  # normalised on load
    pd.DataFrame({"id": np.arange(50, dtype=np.int64) * 7, "text": ["t"] * 50}).to_parquet(
        run / "corpus.parquet"
    )
    vs = load_vectors(run, limit=40)
    assert vs.vectors.shape == (40, DIM) and vs.vectors.flags.writeable
    assert np.allclose(np.linalg.norm(vs.vectors, axis=1), 1.0, atol=1e-5)
    assert list(vs.ids[:3]) == [0, 7, 14]


def test_recommend_pareto_and_table() -> None:
    df = pd.DataFrame(
        {
            "config": ["FLAT", "HNSW ef=16", "HNSW ef=64", "IVF nprobe=1"],
            "index_type": ["FLAT", "HNSW", "HNSW", "IVF_FLAT"],
            "index_params": ["{}", '{"M": 16}', '{"M": 16}', '{"nlist": 32}'],
            "search_params": ["{}", '{"ef": 16}', '{"ef": 64}', '{"nprobe": 1}'],
            "recall": [1.0, 0.93, 0.99, 0.6],
            "qps": [100.0, 900.0, 500.0, 2000.0],
            "ari": [1.0, 0.97, 0.99, 0.5],
            "build_s": [0.1, 1.0, 1.0, 0.5],
            "size_source": ["estimate"] * 4,
            "index_mb": [1.0, 2.0, 2.0, 1.0],
        }
    )
    assert list(pareto_front(df)) == [True, True, True, True]
    assert recommend(df, target_recall=0.95)["config"] == "HNSW ef=64"
    assert recommend(df, target_ari=0.95)["config"] == "HNSW ef=16"
    rec = recommend(df, target_recall=0.98, target_ari=0.98)
    assert (
        rec["engine_run_options"]
        == """--index HNSW --index-params '{"M": 16}' --search-params '{"ef": 64}'"""
    )
    assert recommend(df, target_recall=1.01)["config"] is None
    assert recommend(df) is None
    table = format_table(df)
    assert "HNSW ef=64" in table and "1.0*" in table
    from engine.bench.plot import short_label

    assert short_label("HNSW M=16 efConstruction=200 | ef=32") == "HNSW M16 efC200 ef32"


@pytest.mark.server
@pytest.mark.slow
def test_bench_index_on_standalone_server(clustered: np.ndarray, request, tmp_path) -> None:
    """The same bench against the real Milvus standalone server (PyPI `milvus`), if it can run here."""
    uri = request.getfixturevalue("milvus_server")
    bench = IndexBench(
        parse_specs(["FLAT", "IVF_FLAT:nlist=32:nprobe=8", "HNSW:M=8:efConstruction=64:ef=32"]),
        uri,
        n_queries=100,
        latency_queries=10,
        graph_k=10,
        min_cluster_size=15,
        min_samples=5,
        probe_cache=str(tmp_path / "cache.json"),
        progress=False,
    ).fit(clustered)
    df = bench.results_
    assert not bench.server_version_.startswith("milvus_lite")
    assert list(df.index_type) == ["FLAT", "IVF_FLAT", "HNSW"]
    assert df.loc[0, "recall"] == 1.0 and df.loc[0, "ari"] == pytest.approx(1.0)
    assert (df.recall > 0.8).all() and (df.qps > 0).all() and (df.size_source == "estimate").all()
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        assert not [c for c in client.list_collections() if c.startswith(("engine_bench", "engine_probe"))]
    finally:
        client.close()


@pytest.mark.server
def test_bench_index_cli_takes_a_token_and_never_shows_it(clustered: np.ndarray, request, tmp_path) -> None:
    uri = request.getfixturevalue("milvus_server")
    token = "root:Bench-S3cret-4242"
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, clustered[:400])
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "bench-index",
            str(vectors),
            "--milvus-uri",
            uri,
            "--milvus-token",
            token,
        ]
        + ["--index", "FLAT", "--graph-k", "0", "--queries", "20", "--latency-queries", "5", "--repeats", "1"]
        + ["--no-probe", "--no-plots", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert token not in proc.stdout + proc.stderr
    assert all(token.encode() not in p.read_bytes() for p in out.rglob("*") if p.is_file())
