"""The Python API: Pipeline runs the stages in-process and exposes pandas results; stage re-runs reuse outputs."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.graph import exact_knn
from engine.milvus.indexes import choose_index
from engine.pipeline import Pipeline


def headlines(shared_data_dir: str) -> str:
    return os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")


def test_choose_index_auto():
    assert choose_index("auto", 1_000, None) == ("FLAT", None)
    assert choose_index("auto", 200_000, None) == ("HNSW", {"M": 16, "efConstruction": 200})
    assert choose_index("ivf_flat", 10, {"nlist": 8}) == ("IVF_FLAT", {"nlist": 8})


def test_api_returns_pandas_and_exact_graph_matches_milvus_flat(tmp_path, shared_data_dir):
    config = EngineConfig.from_flat(
        corpus=headlines(shared_data_dir),
        out=str(tmp_path / "run"),
        model="all-MiniLM-L6-v2",
        limit=200,
        k=15,
        graph_source="exact",
    )
    with Pipeline(config, progress=False) as pipe:
        summary = pipe.run()
    assert isinstance(pipe.labels_, pd.DataFrame) and len(pipe.labels_) == 200
    assert isinstance(pipe.report_.clusters, pd.DataFrame)
    assert summary.documents == 200
    assert summary.clusters == pipe.labels_.loc[pipe.labels_.cluster >= 0, "cluster"].nunique()
    exact = pipe.graph_

    # the Milvus (FLAT) graph stage on the same run directory gives the same neighbours
    milvus_pipe = Pipeline(config.copy_with(graph_source="milvus", corpus=None), progress=False)
    graph = milvus_pipe.build_graph()
    same = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(graph.indices, exact.indices, strict=True)])
    assert same > 0.99  # ties at equal distance may order differently
    np.testing.assert_allclose(np.sort(graph.distances, axis=1), np.sort(exact.distances, axis=1), atol=1e-5)


def test_stage_without_its_inputs_names_the_missing_step(tmp_path):
    pipe = Pipeline(EngineConfig.from_flat(out=str(tmp_path / "empty")), progress=False)
    with pytest.raises(EngineError, match="embeddings.npy not found: run `engine embed CORPUS"):
        pipe.build_graph()


@pytest.mark.server
@pytest.mark.skipif(importlib.util.find_spec("milvus") is None, reason="PyPI package `milvus` not installed")
def test_engine_managed_local_server(tmp_path, shared_data_dir):
    config = EngineConfig.from_flat(
        corpus=headlines(shared_data_dir),
        out=str(tmp_path / "run"),
        model="all-MiniLM-L6-v2",
        limit=120,
        k=10,
        milvus_uri="local-server",
    )
    pipe = Pipeline(config, progress=False)
    summary = pipe.run()
    assert pipe._server is None  # stopped when the run ended
    assert summary.documents == 120
    assert (tmp_path / "run" / "milvus_server").is_dir()
    assert len(pd.read_parquet(tmp_path / "run" / "labels.parquet")) == 120


def test_embedded_default_by_corpus_size_and_existing_store(tmp_path, monkeypatch):
    from engine.milvus import embedded as pipeline

    monkeypatch.setattr(pipeline, "local_server_available", lambda: True)
    root = tmp_path / "run"
    root.mkdir()
    assert pipeline.choose_embedded_milvus(root, 870) == str(root / "milvus.db")
    assert pipeline.choose_embedded_milvus(root, 1_000_000) == "local-server"
    # a store already in the run directory wins, whatever the size (resume, later stage commands)
    (root / "milvus.db").mkdir()
    assert pipeline.choose_embedded_milvus(root, 1_000_000) == str(root / "milvus.db")
    other = tmp_path / "other"
    (other / "milvus_server").mkdir(parents=True)
    assert pipeline.choose_embedded_milvus(other, 10) == "local-server"
    # without the server package a large corpus stays on Lite (with a warning)
    monkeypatch.setattr(pipeline, "local_server_available", lambda: False)
    assert pipeline.choose_embedded_milvus(tmp_path / "third", 1_000_000) == str(
        tmp_path / "third" / "milvus.db"
    )


def test_graph_stage_tunes_and_reports_recall(tmp_path, shared_data_dir):
    config = EngineConfig.from_flat(
        corpus=headlines(shared_data_dir),
        out=str(tmp_path / "run"),
        model="all-MiniLM-L6-v2",
        limit=300,
        k=10,
        index="HNSW",
        index_params={"M": 8, "efConstruction": 32},
        recall_sample=150,
        target_recall=0.97,
    )
    with Pipeline(config, progress=False) as pipe:
        pipe.load_corpus()
        pipe.embed()
        graph = pipe.build_graph()
    check = graph.meta["recall_check"]
    assert check["sample"] == 150 and check["trials"][0]["search_params"] == {"ef": 32}
    # 300 documents: the ef ladder (up to 768) reaches the target, and the cheapest value that does is kept
    assert check["met"] is True and check["recall"] >= 0.97, check
    assert check["search_params"] == check["trials"][-1]["search_params"]
    assert all(t["recall"] < 0.97 for t in check["trials"][:-1]), check["trials"]
    # the graph was searched with that setting: its recall against exact neighbours is as measured
    exact = exact_knn(pipe.vectors(), 10, device="cpu", progress=False)
    found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(graph.indices, exact.indices, strict=True)])
    assert found >= 0.95, found
    assert "recall@10" in pipe.details_["graph"]
    # a knob the user set is kept and only measured
    fixed = Pipeline(config.copy_with(search_params={"ef": 11}, corpus=None), progress=False)
    graph = fixed.build_graph()
    assert [t["search_params"] for t in graph.meta["recall_check"]["trials"]] == [{"ef": 11}]
