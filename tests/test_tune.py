"""Search tuning: the cheapest ef/nprobe that reaches a recall target, measured against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError
from engine.graph import build_knn_graph, exact_knn, tune_search_params
from engine.graph.tune import sample_rows
from engine.milvus.indexes import search_ladder
from engine.milvus.store import MilvusStore
from tests.test_graph import clustered


@pytest.fixture(scope="module")
def weak_hnsw(tmp_path_factory):
    """A deliberately weak HNSW (M=4, efConstruction=16) so that low ef loses neighbours."""
    x = clustered(3000, 64, 30, seed=11, spread=0.6)
    ids = np.arange(3000, dtype=np.int64) * 3 + 5
    store = MilvusStore(
        str(tmp_path_factory.mktemp("tune") / "t.db"),
        index_type="HNSW",
        index_params={"M": 4, "efConstruction": 16},
    )
    store.ensure_collection(64)
    store.insert(ids, x)
    store.build_index()
    yield store, x, ids
    store.close()


def test_ladder_per_index_type() -> None:
    knob, values = search_ladder("HNSW", 30)
    assert knob == "ef" and values[0] == 32 and values == sorted(values)
    assert search_ladder("HNSW", 50)[1][0] == 51  # Milvus needs ef >= limit = k + 1
    assert search_ladder("IVF_SQ8", 30)[0] == "nprobe"
    assert search_ladder("FLAT", 30) == (None, [])


def test_sample_rows_is_seeded_sorted_and_bounded() -> None:
    a, b = sample_rows(1000, 50, seed=3), sample_rows(1000, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (np.diff(a) > 0).all() and len(a) == 50
    assert len(sample_rows(10, 50)) == 10
    with pytest.raises(EngineError, match="sample"):
        sample_rows(10, 0)


def test_tuning_stops_at_the_smallest_ef_that_reaches_the_target(weak_hnsw) -> None:
    """On a real weak HNSW: ef is raised rung by rung until measured recall reaches the target, and the
    chosen ef is the smallest rung that does (the rung below it, measured independently, does not)."""
    store, x, ids = weak_hnsw
    target = 0.95  # this weak index reaches 0.95 around ef=384-512, and never 0.99 on the ladder
    result = tune_search_params(store, x, ids, k=10, target_recall=target, sample=300, progress=False)
    _, ladder = search_ladder("HNSW", 10)
    efs = [t["search_params"]["ef"] for t in result.trials]
    assert efs == ladder[: len(efs)]  # walked up the ladder in order from its first rung
    rows = sample_rows(len(ids), 300, seed=0)
    exact = exact_knn(x, 10, rows=rows, progress=False)

    def measured(ef: int) -> float:
        graph = build_knn_graph(store, x, ids, k=10, search_params={"ef": ef}, rows=rows, progress=False)
        return graph.recall_against(exact)

    assert result.met, "the ladder reaches 0.95 on this index"
    chosen = result.search_params["ef"]
    assert chosen > ladder[0]  # the weak index needs more than the lowest ef
    assert measured(chosen) >= target
    assert measured(ladder[ladder.index(chosen) - 1]) < target
    # The reported recall is what a graph searched with those parameters really has on the sample.
    assert measured(chosen) == pytest.approx(result.recall, abs=1e-4)


def test_easy_target_stops_at_the_first_rung(weak_hnsw) -> None:
    store, x, ids = weak_hnsw
    result = tune_search_params(store, x, ids, k=10, target_recall=0.3, sample=200, progress=False)
    assert result.met and len(result.trials) == 1 and result.search_params == {"ef": 32}


def test_fixed_parameters_are_only_measured(weak_hnsw) -> None:
    store, x, ids = weak_hnsw
    result = tune_search_params(
        store, x, ids, k=10, target_recall=0.999, sample=200, search_params={"ef": 40},
        progress=False,
    )  # fmt: skip
    assert len(result.trials) == 1 and result.search_params == {"ef": 40}
    assert not result.met or result.recall >= 0.999


def test_bad_target_is_refused(weak_hnsw) -> None:
    store, x, ids = weak_hnsw
    with pytest.raises(EngineError, match="target recall"):
        tune_search_params(store, x, ids, k=10, target_recall=1.5, progress=False)
