"""The command line end to end: bad input exits 2 with one line; `engine run` on the 870 tutorial
headlines (real MiniLM model, real Milvus Lite) writes every output; stage commands re-run on saved outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def engine(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "does_not_exist.csv"], ["corpus file not found", "does_not_exist.csv"]),
        (["run", "{news}", "--text-column", "body"], ["--text-column 'body'", "title"]),
        (["run", "{news}", "--index-params", "{M:"], ["--index-params is not valid JSON"]),
        (
            ["run", "{news}", "--min-samples", "50", "--k", "10"],
            ["--min-samples (50) must not exceed --k (10)"],
        ),
        (["cluster", "--out", "{tmp}/never_ran"], ["knn_graph.npz not found", "engine graph"]),
        (["run", "{latin}"], ["cannot decode byte", "--encoding"]),
        (["run", "{empty}"], ["zero usable rows"]),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, shared_data_dir, args, needles):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("title,description\nCaf\xe9,x\n".encode("latin-1"))
    empty = tmp_path / "empty.csv"
    empty.write_text("title,description\n,\n")
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    subst = {"{news}": news, "{tmp}": str(tmp_path), "{latin}": str(latin), "{empty}": str(empty)}
    for key, value in subst.items():
        args = [a.replace(key, value) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    assert_one_line_error(engine(*args), *needles)


def test_missing_bge_m3_weights_is_a_clear_stop(tmp_path, shared_data_dir):
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    proc = engine("run", news, "--out", str(tmp_path / "o"), "--limit", "40")
    assert_one_line_error(proc, "BAAI/bge-m3")
    assert "all-MiniLM-L6-v2" in proc.stderr  # says which smaller model works offline
    assert not (tmp_path / "o" / "labels.parquet").exists()


@pytest.fixture(scope="module")
def news_run(tmp_path_factory, shared_data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("news_run")
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    proc = engine("run", news, "--out", str(out), "--model", "all-MiniLM-L6-v2", "--quiet")
    return out, proc


def test_end_to_end_on_tutorial_headlines(news_run):
    out, proc = news_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in [
        "map.html",
        "map.png",
        "labels.parquet",
        "clusters.json",
        "report.html",
        "knn_graph.npz",
        "embeddings.npy",
        "summary.json",
        "run.toml",
    ]:
        assert (out / name).stat().st_size > 0, name
    labels = pd.read_parquet(out / "labels.parquet")
    assert len(labels) == 870
    assert list(labels.columns)[:7] == ["id", "text", "cluster", "probability", "outlier_score", "x", "y"]
    assert labels["id"].is_unique
    assert labels["probability"].between(0, 1).all()
    assert np.isfinite(labels[["x", "y"]].to_numpy()).all()
    n_clusters = labels.loc[labels.cluster >= 0, "cluster"].nunique()
    assert n_clusters >= 5  # 870 headlines of many topics
    assert (labels.cluster < 0).mean() <= 0.25  # the primary leaves at most 25 % noise (issue 19)
    assert (
        labels["stability"].between(0, 1).all()
    )  # the share of the runs agreeing with the document's cluster

    graph = sp.load_npz(out / "knn_graph.npz")
    assert graph.shape == (870, 870)
    assert graph.nnz <= 870 * 30  # O(N k), self excluded
    assert (graph.diagonal() == 0).all()

    clusters = json.loads((out / "clusters.json").read_text())
    assert isinstance(clusters, dict)
    # default cluster space: layers on a node embedding, one column per layer, a tree in clusters.json
    layer_cols = [c for c in labels.columns if c.startswith("layer_")]
    assert len(layer_cols) >= 2 and len(clusters["layers"]) == len(layer_cols)
    primary = clusters["primary_layer"]
    assert (labels["cluster"] == labels[f"layer_{primary}"]).all()
    assert "assigned" not in labels.columns
    for i, layer in enumerate(clusters["layers"]):
        sizes = [c["size"] for c in layer["clusters"]]
        assert sizes == sorted(sizes, reverse=True) and [c["cluster"] for c in layer["clusters"]] == list(
            range(len(sizes))
        )
        for c in layer["clusters"]:
            assert c["name"] and c["keywords"] and c["representatives"]
            if i < len(layer_cols) - 1 and c["parent"] >= 0:
                assert c["cluster"] in clusters["layers"][i + 1]["clusters"][c["parent"]]["children"]
    assert "Topic tree" in (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["documents"] == 870 and summary["clusters"] == n_clusters
    assert "== engine summary ==" in proc.stdout and "map.html" in proc.stdout

    assert 'href="map.html"' in (out / "report.html").read_text()  # the first report links to the map
    html = (out / "map.html").read_text()
    assert "<script>alert" not in html
    assert f"layer {primary}: " in html  # the layer switch
    assert (out / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_rerun_on_saved_outputs(news_run):
    out, proc = news_run
    assert proc.returncode == 0
    before = pd.read_parquet(out / "labels.parquet")
    rerun = engine("cluster", "--out", str(out), "--min-cluster-size", "15", "--quiet")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = engine("report", "--out", str(out), "--quiet")
    assert report.returncode == 0, report.stderr[-2000:]
    after = pd.read_parquet(out / "labels.parquet")
    assert len(after) == 870
    assert (
        after.loc[after.cluster >= 0, "cluster"].nunique()
        <= before.loc[before.cluster >= 0, "cluster"].nunique()
    )
    # re-running embed on a finished run resumes: nothing is embedded twice, so the vector file
    # (written row by row for every embedded document) is neither rewritten nor changed
    vectors = out / "embeddings.npy"
    stamp, data = vectors.stat().st_mtime_ns, vectors.read_bytes()
    again = engine("embed", "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    assert vectors.stat().st_mtime_ns == stamp and vectors.read_bytes() == data


def test_readme_names_the_installed_download_command():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "hf download BAAI/bge-m3" in readme and "huggingface-cli" not in readme


def test_assign_noise_and_graph_space_reruns(news_run, tmp_path):
    out, proc = news_run
    assert proc.returncode == 0
    run = tmp_path / "copy"
    import shutil

    shutil.copytree(out, run, ignore=shutil.ignore_patterns("milvus.db", "milvus_server"))
    before = pd.read_parquet(run / "labels.parquet")
    assert engine("cluster", "--out", str(run), "--assign-noise", "--quiet").returncode == 0
    rep = engine("report", "--out", str(run))
    assert rep.returncode == 0, rep.stderr[-2000:]
    # the copy has no Milvus store: the report still works and says the labels did not reach Milvus
    assert "cluster labels are not stored in Milvus" in rep.stderr
    after = pd.read_parquet(run / "labels.parquet")
    assert after["assigned"].dtype == bool
    assert (after["cluster"] >= 0).all() and (after["assigned"] == (before["cluster"] < 0)).all()
    assert "before --assign-noise" in rep.stdout
    # the raw-graph HDBSCAN* stays available: one layer, no layer columns
    assert engine("cluster", "--out", str(run), "--cluster-space", "graph", "--quiet").returncode == 0
    assert engine("report", "--out", str(run), "--quiet").returncode == 0
    graph_labels = pd.read_parquet(run / "labels.parquet")
    assert not [c for c in graph_labels.columns if c.startswith("layer_")]
