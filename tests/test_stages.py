"""Stage contracts (engine/stages.py): each stage writes its own files, reads back what it wrote, and
decides its own policy from its own settings section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine import stages
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.graph import exact_knn
from engine.rundir import RunPaths


def blobs(n_per: int = 60, centers: int = 4, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim)) * 4
    x = np.concatenate([means[c] + rng.normal(size=(n_per, dim)) * 0.3 for c in range(centers)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(centers), n_per)


@pytest.fixture(scope="module")
def graph_and_vectors():
    x, truth = blobs()
    return exact_knn(x, 15, device="cpu", progress=False), x, truth


@pytest.mark.parametrize("space", ["communities", "embedding"])
def test_cluster_stage_saves_what_it_returns_and_loads_it_back(tmp_path, graph_and_vectors, space) -> None:
    graph, x, _ = graph_and_vectors
    paths = RunPaths(tmp_path)
    settings = EngineConfig.from_flat(k=15, cluster_space=space).cluster
    result = stages.cluster(graph, lambda: x, settings, seed=42, paths=paths)
    described = "layers of communities" if space == "communities" else "layers on a"
    assert result.detail.startswith(f"{result.layers.n_layers} {described}")
    saved = stages.load_clusters(paths)
    for key, value in stages.cluster_arrays(result).items():
        np.testing.assert_array_equal(saved[key], value)
    assert "assigned" not in saved  # only --assign-noise adds the column
    assert "stability" in saved
    # only the embedding space leaves a node embedding for the map to start from
    assert paths.cluster_embedding.exists() == (space == "embedding")


def test_graph_space_removes_a_stale_embedding_and_the_layout_makes_its_own(tmp_path, graph_and_vectors):
    graph, x, _ = graph_and_vectors
    paths = RunPaths(tmp_path)
    cfg = EngineConfig.from_flat(k=15, cluster_space="graph", cluster_backend="cpu", map_backend="cpu")
    stages.cluster(graph, x, EngineConfig.from_flat(k=15, cluster_space="embedding").cluster, paths=paths)
    assert paths.cluster_embedding.exists()
    result = stages.cluster(graph, x, cfg.cluster, paths=paths)
    assert result.detail == "HDBSCAN* on the kNN graph (cpu)"
    assert not paths.cluster_embedding.exists()
    coords, detail = stages.layout(graph, cfg.map, seed=42, paths=paths, vectors=x)
    assert detail == "graph layout started from the topics' places" and coords.shape == (len(x), 2)
    np.testing.assert_array_equal(stages.load_coords(paths), coords)
    coords, detail = stages.layout(graph, cfg.map, seed=42, vectors=x)  # no run directory: its own embedding
    assert detail == "node embedding of the graph" and coords.shape == (len(x), 2)
    umap_cfg = EngineConfig.from_flat(k=15, map_method="umap", map_backend="cpu")
    coords, detail = stages.layout(graph, umap_cfg.map, seed=42, paths=paths)
    assert detail == "UMAP of the graph" and coords.shape == (len(x), 2)


def test_label_frame_refuses_outputs_of_another_corpus(graph_and_vectors) -> None:
    graph, x, _ = graph_and_vectors
    corpus = stages.CorpusData(pd.DataFrame({"id": np.arange(len(x)), "text": ["t"] * len(x)}))
    clusters = {"labels": np.zeros(len(x) - 1, np.int64)}
    with pytest.raises(EngineError, match="do not match the corpus size"):
        stages.label_frame(corpus, clusters, np.zeros((len(x), 2)))


def test_a_missing_input_names_the_command_that_makes_it(tmp_path) -> None:
    with pytest.raises(EngineError, match=r"clusters.npz not found: run `engine cluster --out"):
        stages.load_clusters(RunPaths(tmp_path))
