"""Using a finished run: labels in Milvus (filter), `engine search`, `engine assign`, the user's columns.

One real run on BBC News (its own `id`/`text` columns, real all-MiniLM-L6-v2, real Milvus Lite),
shared by the tests of this module; one on the standalone server for the filter on a server.
"""

from __future__ import annotations

import importlib.util
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymilvus import MilvusClient

from tests.test_cli import engine

N = 160


@contextmanager
def lite_client(path: Path):
    """A raw pymilvus client on the run's Lite file, released afterwards (Lite allows one process)."""
    from engine.milvus import lite

    client = MilvusClient(str(path))
    try:
        yield client
    finally:
        client.close()
        lite.release(str(path))


@pytest.fixture(scope="module")
def bbc_run(tmp_path_factory, shared_data_dir) -> Path:
    out = tmp_path_factory.mktemp("bbc") / "run"
    corpus = os.path.join(shared_data_dir, "bbc_news", "bbc_news.csv")
    proc = engine(
        "run", corpus, "--text-template", "{title}\n{text}", "--out", str(out), "--model", "all-MiniLM-L6-v2",
        "--limit", str(N), "--k", "10", "--max-length", "96", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out


@pytest.mark.slow
def test_bbc_labels_keep_id_as_given_and_category(bbc_run, shared_data_dir):
    labels = pd.read_parquet(bbc_run / "labels.parquet")
    raw = pd.read_csv(os.path.join(shared_data_dir, "bbc_news", "bbc_news.csv"), nrows=N)
    assert labels["id"].tolist() == raw["id"].tolist()  # "business/001" ..., not hashes
    assert labels["category"].tolist() == raw["category"].tolist()
    assert (
        labels["title"].tolist() == raw["title"].tolist() and labels["text"].tolist() == raw["text"].tolist()
    )
    assert labels["engine_id"].tolist() == list(range(N))
    assert labels["engine_text"].iloc[0].startswith(raw["title"].iloc[0] + "\n")


def clusters_of(labels: pd.DataFrame) -> list[int]:
    sizes = labels.loc[labels.cluster >= 0, "cluster"].value_counts()
    return sizes.index.tolist()


def check_filter(client: MilvusClient, collection: str, labels: pd.DataFrame, id_col: str) -> None:
    client.load_collection(collection)
    for c in clusters_of(labels)[:4]:
        rows = client.query(
            collection, filter=f"cluster == {c}", output_fields=["id", "cluster"], limit=16384
        )
        assert {r["cluster"] for r in rows} == {c}
        assert sorted(r["id"] for r in rows) == sorted(labels.loc[labels.cluster == c, id_col].tolist())


@pytest.mark.slow
def test_milvus_filter_on_cluster_returns_that_clusters_rows_lite(bbc_run):
    labels = pd.read_parquet(bbc_run / "labels.parquet")
    assert len(clusters_of(labels)) >= 2
    with lite_client(bbc_run / "milvus.db") as client:
        check_filter(client, "engine_docs", labels, "engine_id")
        noise = client.query("engine_docs", filter="cluster == -1", output_fields=["id"], limit=16384)
        assert len(noise) == int((labels.cluster < 0).sum())


@pytest.mark.slow
def test_engine_search_with_and_without_cluster(bbc_run):
    labels = pd.read_parquet(bbc_run / "labels.parquet")
    proc = engine("search", "mobile phone technology", "--out", str(bbc_run), "--k", "8", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(hits) == 8 and hits[0]["score"] >= hits[-1]["score"]
    by_id = labels.set_index("engine_id")
    assert all(by_id.loc[h["id"], "cluster"] == h["cluster"] for h in hits)
    target = next(c for c in clusters_of(labels) if c not in {h["cluster"] for h in hits[:3]})
    proc = engine(
        "search",
        "mobile phone technology",
        "--out",
        str(bbc_run),
        "--k",
        "5",
        "--cluster",
        str(target),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(hits) == min(5, int((labels.cluster == target).sum()))
    assert {h["cluster"] for h in hits} == {target}
    table = engine("search", "football", "--out", str(bbc_run), "--k", "3")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3 and "cluster" in table.stdout


@pytest.mark.slow
def test_engine_assign_places_held_out_documents_and_store_is_resume_safe(bbc_run, shared_data_dir, tmp_path):
    labels = pd.read_parquet(bbc_run / "labels.parquet")
    raw = pd.read_csv(os.path.join(shared_data_dir, "bbc_news", "bbc_news.csv"))
    clustered = labels.index[labels.cluster >= 0][:20]
    # 20 stored documents sent again (their nearest stored duplicate decides) + 30 never seen
    new = pd.concat([raw.iloc[clustered], raw.iloc[N : N + 30]]).assign(id=lambda d: "new/" + d["id"])
    path = tmp_path / "more_news.csv"
    new.to_csv(path, index=False)
    proc = engine("assign", str(path), "--out", str(bbc_run), "--store", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "50 documents" in proc.stdout
    out = pd.read_parquet(bbc_run / "assigned" / "more_news.parquet")
    assert len(out) == 50 and out["id"].tolist() == new["id"].tolist()  # user's ids and columns kept
    assert out["category"].tolist() == new["category"].tolist()
    dup = out.iloc[:20]
    assert (dup["cluster_reason"] == "duplicate").all()
    assert dup["cluster"].tolist() == labels.loc[clustered, "cluster"].tolist()
    assert (dup["cluster_confidence"] == 1.0).all()
    unseen = out.iloc[20:]
    assert set(unseen["cluster_reason"]) <= {"vote", "far", "disagree", "noise"}
    assert ((unseen["cluster"] >= 0) == (unseen["cluster_reason"] == "vote")).all()
    assert unseen["cluster_confidence"].between(0, 1).all()
    # placed documents mostly share the category of their cluster's majority
    majority = labels[labels.cluster >= 0].groupby("cluster")["category"].agg(lambda s: s.mode()[0])
    placed = unseen[unseen.cluster >= 0]
    if len(placed):
        agree = (placed["cluster"].map(majority) == placed["category"]).mean()
        assert agree >= 0.6, agree
    # --store again (a resumed or repeated command): same ids, same answer, no duplicate rows
    again = engine("assign", str(path), "--out", str(bbc_run), "--store", "-q")
    assert again.returncode == 0, again.stderr
    out2 = pd.read_parquet(bbc_run / "assigned" / "more_news.parquet")
    pd.testing.assert_frame_equal(out, out2)
    client = MilvusClient(str(bbc_run / "milvus.db"))
    try:
        client.load_collection("engine_docs")
        rows = client.query(
            "engine_docs", filter="assigned == 1", output_fields=["id", "cluster"], limit=1000
        )
        assert sorted(r["id"] for r in rows) == sorted(out["engine_id"].tolist())
        assert len(client.query("engine_docs", filter="", output_fields=["id"], limit=10_000)) == N + 50
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.skipif(importlib.util.find_spec("milvus") is None, reason="PyPI package `milvus` not installed")
def test_milvus_filter_on_cluster_on_the_server(tmp_path, shared_data_dir, milvus_server):
    from engine.config import EngineConfig
    from engine.pipeline import Pipeline

    config = EngineConfig.from_flat(
        corpus=os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv"),
        out=str(tmp_path / "run"),
        model="all-MiniLM-L6-v2",
        limit=200,
        k=10,
        max_length=64,
        milvus_uri=milvus_server,
        collection=f"labels_{os.getpid()}",
    )
    with Pipeline(config, progress=False) as pipe:
        pipe.run()
        labels = pipe.labels_
        assert len(clusters_of(labels)) >= 2
        client = MilvusClient(milvus_server)
        try:
            check_filter(client, config.store.collection, labels, "id")
            # re-clustering rewrites the fields, without duplicating rows
            shifted = labels.assign(cluster=np.where(labels.cluster >= 0, labels.cluster + 100, -1))
            pipe.labels_ = shifted
            pipe.store_labels()
            check_filter(client, config.store.collection, shifted, "id")
            rows = client.query(config.store.collection, filter="id >= 0", output_fields=["id"], limit=16384)
            assert len(rows) == 200
        finally:
            client.drop_collection(config.store.collection)
            client.close()


@pytest.mark.slow
def test_time_column_gives_counts_per_period_and_the_chart(tmp_path, shared_data_dir):
    corpus = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    out = tmp_path / "run"
    proc = engine(
        "run", corpus, "--out", str(out), "--model", "all-MiniLM-L6-v2", "--limit", "300", "--k", "10",
        "--max-length", "64", "--time-column", "published_at", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "clusters.json").read_text())
    over = data["over_time"]
    assert over["column"] == "published_at" and over["period"] == "day"
    n_periods = len(over["periods"])
    assert n_periods >= 3 and over["periods"] == sorted(over["periods"])
    labels = pd.read_parquet(out / "labels.parquet")
    assert labels["published_at"].tolist() == pd.read_csv(corpus, nrows=300)["published_at"].tolist()
    for cluster in data["clusters"]:
        assert len(cluster["over_time"]) == n_periods
        assert sum(cluster["over_time"]) <= cluster["size"]
    counted = sum(sum(c["over_time"]) for c in data["clusters"]) + sum(over["noise"])
    assert counted + over["before"] + over["after"] + over["missing"] == 300
    page = (out / "report.html").read_text()
    assert "Topics over time" in page and page.count('class="spark"') == len(data["clusters"])
    assert '<svg class="chart"' in page
    bad = engine("report", "--out", str(out), "--time-column", "venue")
    assert bad.returncode == 2 and "--time-column 'venue'" in bad.stderr and "not dates" in bad.stderr


@pytest.mark.slow
def test_chinese_titles_keywords_are_words_and_the_model_warning_appears(tmp_path, shared_data_dir):
    source = os.path.join(shared_data_dir, "thucnews_titles_zh", "test.txt")
    titles = pd.read_csv(source, sep="\t", header=None, names=["title", "label"], quoting=3)
    sample = titles.sample(240, random_state=0)
    corpus = tmp_path / "zh.csv"
    sample.to_csv(corpus, index=False)
    out = tmp_path / "run"
    proc = engine(
        "run", str(corpus), "--text-column", "title", "--out", str(out), "--model", "all-MiniLM-L6-v2",
        "--k", "10", "--max-length", "48",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warned = proc.stderr.find("all-MiniLM-L6-v2 is English-only")
    assert warned >= 0, proc.stderr
    # issue 20: the warning comes from the corpus sample, before the model loads and embeds
    assert warned < proc.stderr.index("[embed] started")
    assert proc.stderr.count("is English-only") == 1
    assert "English-only" in proc.stdout  # in the summary too
    data = json.loads((out / "clusters.json").read_text())
    assert data["warnings"] and "han" in data["warnings"][0]
    assert "Warning:" in (out / "report.html").read_text()
    keywords = [k for c in data["clusters"] for k in c["keywords"]] + data["noise"]["keywords"]
    assert len(keywords) >= 10
    whole = set(sample["title"])
    assert not set(keywords) & whole
    assert max(len(k) for k in keywords) <= 6 and min(len(k) for k in keywords) >= 2, keywords
    labels = pd.read_parquet(out / "labels.parquet")
    assert labels["label"].astype(int).tolist() == sample["label"].tolist()  # the source's class column kept
