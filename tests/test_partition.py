"""The partitioned join (``--graph-source partition``): exact within the probed lists, true distances,
and the graph stage measuring, refining and reporting it like a Milvus graph."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from engine.config import GraphSettings
from engine.graph import exact_knn
from engine.graph.partition import assign_lists, partition_knn, split_large_lists, train_lists
from engine.stages import PARTITION_FROM, build_graph, graph_source
from tests.test_graph import clustered


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    x = clustered(3000, 48, 30, seed=11, spread=0.6)
    x[5] = x[6]  # an exact duplicate must come out at distance exactly 0
    return x


@pytest.fixture(scope="module")
def exact(vectors: np.ndarray):
    return exact_knn(vectors, 15, device="cpu", progress=False)


def test_probing_every_list_is_brute_force(vectors, exact) -> None:
    g = partition_knn(vectors, 15, probes=10_000, n_lists=12, progress=False)
    assert g.meta["probes"] == g.meta["lists"]  # capped at the number of lists
    assert g.recall_against(exact) == 1.0
    np.testing.assert_allclose(g.distances, exact.distances, atol=1e-6)
    assert g.indices[5, 0] == 6 and g.distances[5, 0] == 0.0
    assert (g.indices != np.arange(len(vectors))[:, None]).all()  # never itself


def test_small_score_blocks_and_half_precision_input_give_the_same_graph(vectors, exact, monkeypatch) -> None:
    """The reused product buffers: many small blocks (a list larger than a block grows the buffer) and a
    float16 vector file (gathered by copy, not ``np.take``) change nothing."""
    from engine.graph import partition

    full = partition_knn(vectors, 15, probes=3, n_lists=3, progress=False)
    assert full.recall_against(exact) == 1.0
    monkeypatch.setattr(partition, "SCORE_BLOCK", 2048)  # 512 floats: fewer than one list's members
    small = partition_knn(vectors, 15, probes=3, n_lists=3, progress=False)
    assert np.array_equal(small.indices, full.indices)
    np.testing.assert_allclose(small.distances, full.distances, atol=1e-6)
    half = vectors.astype(np.float16)
    g16 = partition_knn(half, 15, probes=3, n_lists=3, progress=False)
    ref = exact_knn(half.astype(np.float32), 15, device="cpu", progress=False)
    assert g16.recall_against(ref) > 0.999  # ties among rounded vectors may swap equal-distance neighbours
    np.testing.assert_allclose(g16.distances, ref.distances, atol=1e-5)


def test_recall_grows_with_probes_and_distances_are_true(vectors, exact) -> None:
    recalls = [
        partition_knn(vectors, 15, probes=p, seed=0, progress=False).recall_against(exact) for p in (1, 3, 8)
    ]
    assert recalls[0] < recalls[1] < recalls[2] <= 1.0
    g = partition_knn(vectors, 15, probes=3, seed=0, progress=False)
    valid = g.indices >= 0
    true = np.linalg.norm(vectors[np.where(valid, g.indices, 0)] - vectors[:, None, :], axis=2)
    np.testing.assert_allclose(g.distances[valid], true[valid], atol=1e-5)
    assert (np.diff(g.distances, axis=1) >= 0).all()  # rows sorted nearest first


def test_same_seed_same_graph(vectors) -> None:
    a = partition_knn(vectors, 15, probes=3, seed=4, progress=False)
    b = partition_knn(vectors, 15, probes=3, seed=4, progress=False)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.distances, b.distances)


def test_lists_are_unit_centres_and_large_lists_are_split() -> None:
    # one tight blob of 900 rows and 100 scattered ones: a 4-list k-means leaves one list far over
    # the mean size; splitting it keeps every list near N / lists
    rng = np.random.default_rng(0)
    blob = rng.standard_normal(64) + 0.05 * rng.standard_normal((900, 64))
    x = np.vstack([blob, rng.standard_normal((100, 64))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centres = train_lists(x, 4, seed=0)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    before = np.bincount(assign_lists(x, centres, 1, progress=False)[0][:, 0], minlength=len(centres))
    split = split_large_lists(x, centres, seed=0)
    after = np.bincount(assign_lists(x, split, 1, progress=False)[0][:, 0], minlength=len(split))
    assert before.max() > 2 * len(x) / 4 and len(split) > len(centres)
    assert after.max() < before.max()


def test_lists_still_over_size_after_a_split_are_split_again(monkeypatch) -> None:
    # 60 % of the rows in a tight core: the first split leaves the core in one part (its centres land
    # outside it); later rounds split that part again, as on the 1M synthetic set's largest cluster
    from engine.graph import partition

    rng = np.random.default_rng(0)
    a = rng.standard_normal(32)
    x = np.vstack(
        [
            a + 0.01 * rng.standard_normal((1500, 32)),
            a + 0.3 * rng.standard_normal((500, 32)),
            rng.standard_normal((500, 32)),
        ]
    ).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centres = train_lists(x, 10, seed=0)

    def largest(split: np.ndarray) -> int:
        return int(np.bincount(assign_lists(x, split, 1, progress=False)[0][:, 0]).max())

    monkeypatch.setattr(partition, "SPLIT_ROUNDS", 1)
    once = split_large_lists(x, centres, seed=0)
    monkeypatch.undo()
    rounds = split_large_lists(x, centres, seed=0)
    assert largest(once) > 2 * len(x) / 10  # one round leaves an oversized list
    assert len(rounds) > len(once) and largest(rounds) < 0.6 * largest(once)


def test_far_rows_are_joined_with_each_other(monkeypatch) -> None:
    # tight topics plus 5 % rows uniform on the sphere: a far row's neighbours are other far rows in
    # lists it does not probe; the far rows' own join finds them
    from engine.graph import partition
    from engine.graph.partition import far_rows

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 64))
    topics = centres[rng.integers(0, 40, 3800)] + 0.15 * rng.standard_normal((3800, 64))
    x = np.vstack([topics, rng.standard_normal((200, 64))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    background = np.arange(3800, 4000)
    exact = exact_knn(x, 10, rows=background, progress=False)
    with_far = partition_knn(x, 10, probes=2, progress=False)
    monkeypatch.setattr(partition, "FAR_MADS", np.inf)  # no row is far
    without = partition_knn(x, 10, probes=2, progress=False)
    assert with_far.meta["far_rows"] >= 150 and without.meta["far_rows"] == 0
    assert (
        with_far.recall_against(exact, rows=background)
        > without.recall_against(exact, rows=background) + 0.15
    )
    for row in with_far.indices:  # a candidate met twice (own list and far join) is kept once
        assert len(set(row.tolist())) == len(row)
    assert far_rows(np.full(100, 0.8, dtype=np.float32)).size == 0  # equally close rows: none is far


def test_auto_joins_partitions_from_the_threshold(monkeypatch) -> None:
    from engine import hardware

    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    assert graph_source("auto", PARTITION_FROM - 1) == "milvus"
    assert graph_source("auto", PARTITION_FROM) == "partition"
    assert graph_source("exact", 10**7) == "exact" and graph_source("milvus", 10**7) == "milvus"
    monkeypatch.setattr(hardware, "cuda_available", lambda: True)  # a GPU: exact search on it
    assert graph_source("auto", PARTITION_FROM) == "exact" and graph_source("auto", 1000) == "milvus"


def test_graph_stage_refines_the_join_to_the_target(vectors, exact, caplog) -> None:
    # one probe would not do: every row sees only its own list, and neighbours of neighbours stay inside it
    settings = GraphSettings(
        graph_source="partition", partition_probes=2, k=15, target_recall=0.97, recall_sample=300
    )
    with caplog.at_level(logging.WARNING):
        graph = build_graph(vectors, None, settings, store=None, progress=False)
    assert graph.meta["recall_check"]["recall"] < 0.97  # two probes alone miss the target ...
    assert graph.meta["recall"] >= 0.97 and graph.recall_against(exact) >= 0.97  # ... refinement reaches it
    assert (
        graph.meta["detail"].startswith("partition join k=15") and "refinement passes" in graph.meta["detail"]
    )
    assert {"join", "recall_check", "refine"} <= set(graph.meta["seconds"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("engine")]


def test_graph_stage_below_target_names_the_probes_in_one_line(vectors, caplog) -> None:
    settings = GraphSettings(
        graph_source="partition",
        partition_probes=1,
        k=15,
        target_recall=0.99,
        recall_sample=300,
        refine_budget=0,
    )
    with caplog.at_level(logging.WARNING):
        graph = build_graph(vectors, None, settings, store=None, progress=False)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("engine")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "\n" not in line and "below the target 0.990 on 300 sampled queries" in line
    assert "'probes': 1" in line and "--partition-probes" in line and "refinement off" in line
    assert graph.meta["recall_met"] is False and "BELOW target" in graph.meta["detail"]


def test_a_run_with_the_partitioned_join_end_to_end(tmp_path, shared_data_dir) -> None:
    """`--graph-source partition` through the pipeline: no Milvus search, the summary names the join."""
    from engine.config import EngineConfig
    from engine.pipeline import Pipeline
    from tests.test_pipeline import headlines

    config = EngineConfig.from_flat(
        corpus=headlines(shared_data_dir),
        out=str(tmp_path / "run"),
        model="all-MiniLM-L6-v2",
        limit=300,
        k=15,
        graph_source="partition",
    )
    with Pipeline(config, progress=False) as pipe:
        summary = pipe.run()
    assert summary.documents == 300 and len(pipe.labels_) == 300
    graph = pipe.graph_
    assert graph.meta["detail"].startswith("partition join k=15") and graph.meta["recall_met"] is True
    assert graph.recall_against(exact_knn(pipe.vectors(), 15, progress=False)) >= 0.97
