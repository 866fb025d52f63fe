"""A run without ``embeddings.npy`` gets its vectors back from Milvus (issue 22, item 3).

The file may be deleted to save disk, or never written on this machine (the corpus was embedded on a
Ray cluster or another box into the user's own Milvus server). The later stages need the vectors
(NN-descent refinement, node embedding, keywords): they are read back from the run's collection, never
embedded again, and give the same graph. Real Milvus throughout: Lite through the Python API (fast), the
engine-run server through the CLI on the 870 headlines (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.graph import KnnGraph
from engine.milvus.store import MilvusStore
from engine.pipeline import Pipeline
from tests.test_cli import engine

READ_BACK = "embeddings.npy not found: reading the run's 870 vectors back from Milvus"
# the model's load line (engine.embed.models): absent when nothing is embedded
MODEL_LOADS = "loading "


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def _same_graph(a: Path, b: KnnGraph) -> None:
    _same_graph_as(KnnGraph.load(a), b)


def test_lite_run_without_embeddings_npy_rebuilds_it_and_a_partial_collection_is_one_error(
    tmp_path, shared_data_dir, tiny_bge_m3_path
):
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    out = tmp_path / "run"
    config = EngineConfig.from_flat(corpus=news, out=str(out), model=str(tiny_bge_m3_path), limit=200, k=10)
    with Pipeline(config, progress=False) as pipe:
        pipe.load_corpus()
        pipe.embed()
        graph = pipe.build_graph()
    vectors = np.load(out / "embeddings.npy")
    stages = config.copy_with(corpus=None)  # what `engine graph --out DIR` runs with

    (out / "embeddings.npy").unlink()
    with Pipeline(stages, progress=False) as pipe:
        _same_graph_as(pipe.build_graph(), graph)
    np.testing.assert_array_equal(np.load(out / "embeddings.npy").view(np.uint32), vectors.view(np.uint32))

    # Milvus lacks 7 of the documents: one error naming the count and the command; no file, no temp file
    (out / "embeddings.npy").unlink()
    ids = pd.read_parquet(out / "corpus.parquet")["id"].to_numpy()
    with MilvusStore(str(out / "milvus.db")) as store:
        store.delete(ids[:7])
    with Pipeline(stages, progress=False) as pipe, pytest.raises(EngineError) as err:
        pipe.build_graph()
    assert str(err.value).startswith(
        f"{out / 'embeddings.npy'} not found, and Milvus cannot stand in for it: 7 of "
    )
    assert "run `engine embed CORPUS" in str(err.value)
    assert sorted(p.name for p in out.iterdir() if "embeddings" in p.name) == [
        "embeddings.fingerprints.npz",
        "embeddings.json",
    ]
    # the embed stage resumes: the 193 stored vectors are read back, only the 7 missing are embedded
    with Pipeline(config, progress=False) as pipe:
        pipe.load_corpus()
        result = pipe.embed()
    assert (result.n_embedded, result.n_from_milvus, result.n_existing) == (7, 193, 193)
    again = np.load(out / "embeddings.npy")
    np.testing.assert_array_equal(again[7:].view(np.uint32), vectors[7:].view(np.uint32))
    # embedded again, in another batch: close, not bitwise (measured up to 1.2e-4 apart between runs)
    np.testing.assert_allclose(again[:7], vectors[:7], atol=1e-3)


def _same_graph_as(got: KnnGraph, want: KnnGraph) -> None:
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.distances.view(np.uint32), want.distances.view(np.uint32))


@pytest.mark.server
@pytest.mark.slow  # four engine commands, each starting a standalone Milvus: ~2-3 min on 2 cores
def test_graph_cluster_and_run_without_embeddings_npy_read_milvus_and_give_the_same_graph(
    tmp_path, shared_data_dir, tiny_bge_m3_path
):
    pytest.importorskip("milvus")
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    out = tmp_path / "run"
    # a target recall of 1.0 is above what the Milvus search gives on these vectors (ties of the tiny
    # model's near-duplicates): the graph stage refines (NN-descent on the vectors), so the refinement
    # itself runs on the vectors read back from Milvus
    graph_opts = [
        "--milvus-uri", "local-server", "--index", "IVF_FLAT", "--index-params", '{"nlist": 32}',
        "--search-params", '{"nprobe": 1}', "--k", "10", "--recall-sample", "300", "--target-recall", "1.0",
    ]  # fmt: skip
    first = _ok(engine("run", news, "--out", str(out), "--model", str(tiny_bge_m3_path), *graph_opts))
    assert MODEL_LOADS in first.stderr  # the check below means something
    graph = KnnGraph.load(out)
    assert graph.meta["refine"]["passes"], graph.meta  # refinement ran
    vectors = np.load(out / "embeddings.npy")
    assert vectors.shape == (870, 64)

    (out / "embeddings.npy").unlink()
    again = _ok(engine("graph", "--out", str(out)))
    assert READ_BACK in again.stderr and MODEL_LOADS not in again.stderr
    assert KnnGraph.load(out).meta["refine"]["passes"]
    _same_graph(out, graph)
    np.testing.assert_array_equal(np.load(out / "embeddings.npy").view(np.uint32), vectors.view(np.uint32))

    labels = np.load(out / "clusters.npz")["labels"]
    (out / "embeddings.npy").unlink()
    cluster = _ok(engine("cluster", "--out", str(out)))
    assert READ_BACK in cluster.stderr and MODEL_LOADS not in cluster.stderr
    np.testing.assert_array_equal(np.load(out / "embeddings.npy").view(np.uint32), vectors.view(np.uint32))
    # the same graph and vectors reach the cluster stage; its consensus is not bit-stable under load (one
    # run in four: 2 of 2,610 layer_strengths one consensus run in 16 apart, labels equal), so labels by ARI
    assert adjusted_rand_score(labels, np.load(out / "clusters.npz")["labels"]) > 0.99

    # `engine run` on the same directory: the embed stage resumes from Milvus (the model loads, embeds 0)
    (out / "embeddings.npy").unlink()
    rerun = _ok(engine("run", news, "--out", str(out), "--model", str(tiny_bge_m3_path), *graph_opts))
    assert "reading them back from Milvus" in rerun.stderr
    ingest = json.loads((out / "summary.json").read_text())["details"]["ingest"]
    assert ingest.startswith("0 embedded") and "870 vectors read back from Milvus" in ingest, ingest
    _same_graph(out, graph)
    np.testing.assert_array_equal(np.load(out / "embeddings.npy").view(np.uint32), vectors.view(np.uint32))
