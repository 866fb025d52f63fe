"""Readers of a run (search, assign, serve) never harm it, and their inputs fail cleanly (issue 20).

One real run (120 headlines, ids from a column of *negative* integers, real all-MiniLM-L6-v2, real
Milvus Lite) is shared by the module; tests that change a run work on a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.rundir import RunLock
from tests.fixtures.processes import EngineProcess
from tests.test_cli import ENV, assert_one_line_error, engine

N = 120


@pytest.fixture(scope="module")
def neg_corpus(tmp_path_factory, shared_data_dir) -> Path:
    """Headlines whose ``nid`` column holds negative int64 ids (hashes, external keys look like this)."""
    frame = pd.read_csv(os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv"), nrows=N)
    frame["nid"] = -(np.arange(N, dtype=np.int64) * 7919 + 13)
    path = tmp_path_factory.mktemp("neg") / "neg.csv"
    frame[["nid", "title", "description"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def neg_run(tmp_path_factory, neg_corpus) -> Path:
    out = tmp_path_factory.mktemp("negrun") / "run"
    proc = engine(
        "run", str(neg_corpus), "--id-column", "nid", "--text-template", "{title}", "--out", str(out),
        "--model", "all-MiniLM-L6-v2", "--k", "10", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".engine.lock"))
    return out


# ------------------------------------------------------------------------------ defect 2: negative ids
@pytest.mark.slow
def test_negative_ids_keep_every_neighbour_and_label(neg_run, neg_corpus):
    from engine.graph import KnnGraph

    graph = KnnGraph.load(neg_run)
    assert graph.n == N and graph.n_missing() == 0  # the old `hit_ids >= 0` dropped every hit
    labels = pd.read_parquet(neg_run / "labels.parquet")
    ids = labels["engine_id"] if "engine_id" in labels else labels["id"]
    assert (ids.to_numpy() < 0).all()
    assert (labels["cluster"] >= 0).any()


@pytest.mark.slow
def test_assign_votes_with_negative_neighbour_ids(neg_run, neg_corpus, tmp_path):
    """Documents identical to stored ones are duplicates of them (old code: every neighbour 'missing')."""
    run = copy_run(neg_run, tmp_path)
    new = pd.read_csv(neg_corpus).head(5)
    new.to_csv(tmp_path / "new.csv", index=False)
    proc = engine("assign", str(tmp_path / "new.csv"), "--out", str(run), "--k", "10")
    assert proc.returncode == 0, proc.stderr
    out = pd.read_parquet(run / "assigned" / "new.parquet")
    assert out["cluster_reason"].tolist() == ["duplicate"] * 5
    assert out["nearest_id"].tolist() == new["nid"].tolist()
    labels = pd.read_parquet(run / "labels.parquet")
    labels = labels.set_index("engine_id" if "engine_id" in labels else "id")
    assert out["cluster"].tolist() == labels.loc[new["nid"], "cluster"].tolist()
    assert "model load" in proc.stderr  # the per-call cost is shown


def labels_cols(run: Path) -> list[str]:
    return pd.read_parquet(run / "labels.parquet").columns.tolist()


# --------------------------------------------------------------------------------- defect 4: --filter
@pytest.mark.slow
def test_filter_can_only_narrow_the_cluster(neg_run):
    labels = pd.read_parquet(neg_run / "labels.parquet")
    cluster = int(labels.loc[labels.cluster >= 0, "cluster"].value_counts().index[0])
    escape = engine(
        "search", "election", "--out", str(neg_run), "--cluster", str(cluster), "--k", "50",
        "--filter", "id >= -1000000000) or (id <= 0", "--json", "--quiet",
    )  # fmt: skip
    assert_one_line_error(escape, "does not parse", "unbalanced")
    narrow = engine(
        "search", "election", "--out", str(neg_run), "--cluster", str(cluster), "--k", "50",
        "--filter", "id <= -13", "--json", "--quiet",
    )  # fmt: skip
    assert narrow.returncode == 0, narrow.stderr
    rows = [json.loads(line) for line in narrow.stdout.splitlines()]
    assert rows and {r["cluster"] for r in rows} == {cluster}


@pytest.mark.slow
def test_filter_on_an_unknown_field_or_bad_syntax_is_one_error_naming_the_fields(neg_run):
    unknown = engine("search", "election", "--out", str(neg_run), "--filter", "cluster_1 == 0", "--quiet")
    assert_one_line_error(unknown, "'cluster_1'", "cluster", "layer_0", "id")
    assert "loading" not in unknown.stderr  # refused before the model loads
    bad = engine("search", "election", "--out", str(neg_run), "--filter", "cluster >>> 0", "--quiet")
    assert_one_line_error(bad, "--filter", "does not parse in Milvus")


# ------------------------------------------------------------------------ defect 13: stale layer fields
@pytest.mark.slow
def test_recluster_with_fewer_layers_leaves_only_current_fields_in_milvus(neg_run, tmp_path):
    from tests.test_use_clusters import lite_client

    run = copy_run(neg_run, tmp_path)
    assert any(c.startswith("layer_") for c in labels_cols(run))
    proc = engine("cluster", "--out", str(run), "--cluster-space", "graph", "--quiet")
    assert proc.returncode == 0, proc.stderr
    with lite_client(run / "milvus.db") as client:
        client.load_collection("engine_docs")
        rows = client.query("engine_docs", filter="id < 0", output_fields=["*"], limit=1000)
    assert len(rows) == N
    assert not [k for r in rows for k in r if k.startswith("layer_")]
    clusters = np.load(run / "clusters.npz")["labels"]
    by_id = {r["id"]: r["cluster"] for r in rows}
    ids = pd.read_parquet(run / "corpus.parquet")["id"].to_numpy()
    assert [by_id[int(i)] for i in ids] == clusters.tolist()
    stale = engine("search", "election", "--out", str(run), "--filter", "layer_1 == 0", "--quiet")
    assert_one_line_error(stale, "'layer_1'", "its fields: id, text, cluster, assigned")


# -------------------------------------------------------------- defects 1 and 11: a run holds the directory
@pytest.mark.slow
def test_search_on_a_locked_lite_run_refuses_before_loading_anything(neg_run):
    with RunLock(neg_run, "run"):
        t = time.perf_counter()
        for args in (["search", "election"], ["assign", str(neg_run / "corpus.parquet")]):
            proc = engine(*args, "--out", str(neg_run))
            assert_one_line_error(proc, f"a run is in progress in {neg_run}", "try again when it ends")
            assert "loading" not in proc.stderr and "milvus_lite" not in proc.stderr
        assert time.perf_counter() - t < 120


def test_cheap_preconditions_fail_before_the_model_loads(tmp_path, shared_data_dir):
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    proc = engine("run", news, "--out", str(tmp_path / "a"), "--milvus-uri", "gopher://example.org/x")
    assert_one_line_error(proc, "--milvus-uri", "unknown scheme 'gopher'")
    assert "loading" not in proc.stderr and not (tmp_path / "a").exists()
    env_k = subprocess.run(
        [sys.executable, "-m", "engine", "run", news, "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        env={**ENV, "ENGINE_K": "abc"},
        timeout=300,
    )
    assert_one_line_error(env_k, "ENGINE_K", "--k must be an integer", "'abc'")


# ------------------------------------------------------------------------------------------ engine serve
def request(url: str, body: object | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_engine_serve_answers_search_and_assign_over_http(neg_run, neg_corpus, tmp_path):
    run = copy_run(neg_run, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--out", str(run), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        line = ""
        deadline = time.monotonic() + 300
        while "listening on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "engine serve exited"
        assert "model and collection loaded in" in line
        base = line.split("listening on ")[1].split()[0]
        status, health = request(f"{base}/health")
        assert status == 200 and health["documents"] == N and "layer_0" in health["fields"]

        labels = pd.read_parquet(run / "labels.parquet")
        cluster = int(labels.loc[labels.cluster >= 0, "cluster"].value_counts().index[0])
        status, found = request(f"{base}/search", {"query": "election", "k": 5, "cluster": cluster})
        assert status == 200 and 0 < len(found["hits"]) <= 5
        assert {h["cluster"] for h in found["hits"]} == {cluster} and all(h["id"] < 0 for h in found["hits"])

        new = pd.read_csv(neg_corpus).head(3)
        docs = [{"id": "a", "text": new["title"][0]}, new["title"][1], new["title"][2]]
        status, placed = request(f"{base}/assign", {"documents": docs, "k": 10})
        assert status == 200 and [a["cluster_reason"] for a in placed["assignments"]] == ["duplicate"] * 3
        assert [a["nearest_id"] for a in placed["assignments"]] == new["nid"].tolist()[:3]

        # clear 4xx errors, and the server keeps serving
        assert request(f"{base}/search", raw=b"{not json")[0] == 400
        assert request(f"{base}/search", {"query": ""})[0] == 400
        assert request(f"{base}/search", {"query": "x", "k": "many"})[0] == 400
        status, err = request(f"{base}/search", {"query": "x", "filter": "cluster_1 == 0"})
        assert status == 400 and "layer_0" in err["error"]
        status, err = request(f"{base}/search", {"query": "x", "cluster": 0, "filter": "id < 0) or (id > 0"})
        assert status == 400 and "does not parse" in err["error"]
        assert request(f"{base}/assign", {"documents": []})[0] == 400
        assert request(f"{base}/nothing")[0] == 404
        assert request(f"{base}/search")[0] == 405
        assert request(f"{base}/health")[0] == 200

        # serve is a reader holding the Lite run: a second reader is refused, never harms it
        other = engine("search", "election", "--out", str(run), "--quiet")
        assert_one_line_error(other, "a run is in progress", "engine serve")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode in (0, 130)
    assert not RunLock(run, "x").owner()  # released on the way out


# -------------------------------------------------------------- defect 1: a search during a server run
@pytest.mark.slow
@pytest.mark.server
def test_search_during_a_local_server_run_never_harms_the_run(neg_corpus, tmp_path):
    pytest.importorskip("milvus", reason="PyPI package `milvus` (standalone server) not installed")
    out = tmp_path / "run"
    args = [
        "run", str(neg_corpus), "--id-column", "nid", "--text-template", "{title}", "--out", str(out),
        "--model", "all-MiniLM-L6-v2", "--k", "10", "--milvus-uri", "local-server",
    ]  # fmt: skip
    first = engine(*args, "--quiet")
    assert first.returncode == 0, first.stderr
    before = pd.read_parquet(out / "labels.parquet")
    rerun = EngineProcess(args, ENV)
    assert rerun.wait_for("[graph] started"), rerun.text
    search = engine("search", "election", "--out", str(out), "--json", "--quiet")
    assert rerun.wait(timeout=900) == 0, rerun.text
    assert "Traceback" not in search.stderr, search.stderr
    if search.returncode == 0:  # it used the run's own server
        assert [json.loads(line)["id"] < 0 for line in search.stdout.splitlines()] == [True] * 10
    else:  # or refused / lost the server when the run ended: one clean line
        assert_one_line_error(search)
    after = pd.read_parquet(out / "labels.parquet")
    assert after["cluster"].tolist() == before["cluster"].tolist()
    assert not (out / "milvus_server" / "engine-server.json").exists()
