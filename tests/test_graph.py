"""kNN graph from Milvus Lite (real, in tmp_path) against exact brute force; KnnGraph views and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.errors import EngineError
from engine.graph import KnnGraph, build_knn_graph, exact_knn, to_euclidean
from engine.graph.rows import map_ids_to_positions
from engine.milvus.store import MilvusStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clustered(n: int, d: int, n_clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """600 clustered vectors with 3 exact duplicates; shuffled, non-contiguous ids."""
    x = clustered(600, 32, 12, seed=3)
    x[10] = x[20]
    x[30] = x[20]
    x[100] = x[200]
    ids = np.random.default_rng(4).permutation(600).astype(np.int64) * 7 + 1_000_003
    return x, ids


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory, data):
    x, ids = data
    st = MilvusStore(str(tmp_path_factory.mktemp("flat") / "m.db"), index_type="FLAT")
    st.ensure_collection(x.shape[1])
    # Insert in a shuffled order: Milvus' storage order must not matter.
    perm = np.random.default_rng(5).permutation(len(ids))
    st.insert(ids[perm], x[perm])
    st.build_index()
    yield st
    st.close()


def neighbour_sets_equal_up_to_ties(a: KnnGraph, b: KnnGraph, tol: float = 1e-5) -> None:
    for i in range(a.n):
        sa, sb = set(a.indices[i].tolist()), set(b.indices[i].tolist())
        if sa != sb:  # differing members must be tied with the k-th distance
            kth = b.distances[i, -1]
            for j, d in zip(a.indices[i], a.distances[i], strict=True):
                if j not in sb:
                    assert abs(d - kth) <= tol, (i, j, d, kth)


def test_to_euclidean_per_metric() -> None:
    s = np.array([1.0, 0.5, -1.0, 1.0000001, np.nan], dtype=np.float32)
    d = to_euclidean(s, "COSINE")
    np.testing.assert_allclose(d[:4], [0.0, 1.0, 2.0, 0.0], atol=1e-6)
    assert np.isinf(d[4])
    np.testing.assert_allclose(to_euclidean(s[:3], "ip"), d[:3])
    np.testing.assert_allclose(to_euclidean(np.array([4.0, -1e-7], np.float32), "L2"), [2.0, 0.0])
    with pytest.raises(EngineError, match="metric"):
        to_euclidean(s, "JACCARD")


def test_map_ids_to_positions_handles_unknown_and_missing() -> None:
    ids = np.array([50, 10, 40, 20], dtype=np.int64)
    order = np.argsort(ids)
    hits = np.array([[10, 40, 99, -1], [50, 20, 5, 10]])
    pos = map_ids_to_positions(hits, ids[order], order)
    np.testing.assert_array_equal(pos, [[1, 2, -1, -1], [0, 3, -1, 1]])


def test_flat_graph_equals_exact(flat_store, data) -> None:
    x, ids = data
    g = build_knn_graph(flat_store, x, ids, k=10, workers=2, batch_size=64, progress=False)
    ex = exact_knn(x, 10, progress=False)
    assert g.indices.dtype == np.int32 and g.distances.dtype == np.float32 and g.indices.shape == (600, 10)
    neighbour_sets_equal_up_to_ties(g, ex)
    np.testing.assert_allclose(g.distances, ex.distances, atol=1e-5)
    assert g.recall_against(ex) == 1.0
    # self excluded, rows ascending
    assert not (g.indices == np.arange(600)[:, None]).any()
    assert (np.diff(g.distances, axis=1) >= 0).all()


def test_ids_map_back_to_positions(flat_store, data) -> None:
    """Neighbours are positions in the caller's order, whatever the ids and insert order."""
    x, ids = data
    g = build_knn_graph(flat_store, x, ids, k=5, workers=1, batch_size=100, progress=False)
    rows = np.arange(0, 600, 37)
    true = np.linalg.norm(x[rows, None, :] - x[g.indices[rows]], axis=2)
    np.testing.assert_allclose(g.distances[rows], true, atol=1e-5)


def test_duplicates_keep_zero_distance_edges(flat_store, data) -> None:
    x, ids = data
    g = build_knn_graph(flat_store, x, ids, k=5, progress=False)
    for a, b in [(10, 20), (20, 30), (30, 10), (100, 200), (200, 100)]:
        row = g.indices[a].tolist()
        assert b in row and g.distances[a, row.index(b)] == 0.0
    csr = g.to_csr()
    assert csr.nnz == 600 * 5  # explicit zeros survive
    assert csr[100, 200] == 0.0 and csr.has_canonical_format in (True, False)
    assert (csr.data == 0).sum() >= 5


def test_scores_path_without_rerank(flat_store, data) -> None:
    x, ids = data
    g = build_knn_graph(flat_store, x, ids, k=8, rerank=False, progress=False)
    ex = exact_knn(x, 8, progress=False)
    assert g.recall_against(ex) >= 0.99
    np.testing.assert_allclose(g.distances, ex.distances, atol=2e-3)  # float32 2-2s cancellation near 0


def test_rows_subset_and_workers_agree(flat_store, data) -> None:
    x, ids = data
    full = build_knn_graph(flat_store, x, ids, k=6, workers=1, batch_size=600, progress=False)
    rows = np.array([599, 3, 250, 10])
    sub = build_knn_graph(flat_store, x, ids, k=6, workers=3, batch_size=2, progress=False, rows=rows)
    np.testing.assert_array_equal(sub.indices, full.indices[rows])
    assert sub.meta["queries"] == 4


def test_bad_inputs(flat_store, data) -> None:
    x, ids = data
    with pytest.raises(EngineError, match="k"):
        build_knn_graph(flat_store, x, ids, k=0, progress=False)
    with pytest.raises(EngineError, match="vectors"):
        build_knn_graph(flat_store, x[:10], ids, progress=False)
    dup = ids.copy()
    dup[1] = dup[0]
    with pytest.raises(EngineError, match="twice"):
        build_knn_graph(flat_store, x, dup, progress=False)


class _FailingSearch:
    """The real store, whose third search request fails (fault injection; every other call is real)."""

    def __init__(self, store: MilvusStore) -> None:
        self.store, self.calls = store, 0
        self.is_lite, self.metric, self.index_type = store.is_lite, store.metric, store.index_type

    def count(self) -> int:
        return self.store.count()

    def load(self) -> None:
        self.store.load()

    def search(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 3:
            raise EngineError("Milvus search failed (injected)")
        return self.store.search(*args, **kwargs)


def test_failed_search_stops_the_graph_build_without_running_the_queue(flat_store, data) -> None:
    x, ids = data
    failing = _FailingSearch(flat_store)
    with pytest.raises(EngineError, match="injected"):
        build_knn_graph(failing, x, ids, k=5, workers=2, batch_size=4, progress=False)  # 150 batches
    assert failing.calls <= 3 + 2 * 2 + 2, failing.calls  # the failure + what was in flight, not all 150


def test_hnsw_recall_on_clustered_data(tmp_path) -> None:
    x = clustered(3000, 64, 30, seed=7, spread=0.5)
    ids = np.arange(3000, dtype=np.int64)[::-1].copy() * 2
    with MilvusStore(
        str(tmp_path / "h.db"), index_type="HNSW", index_params={"M": 8, "efConstruction": 64}
    ) as st:
        st.ensure_collection(64)
        st.insert(ids, x)
        st.build_index()
        g = build_knn_graph(st, x, ids, k=10, search_params={"ef": 32}, progress=False)
    ex = exact_knn(x, 10, progress=False)
    assert g.recall_against(ex) >= 0.9
    assert not (g.indices == np.arange(3000)[:, None]).any()


def test_knn_graph_views_and_files(tmp_path) -> None:
    idx = np.array([[1, 2], [0, -1], [0, 1], [4, -1], [3, -1]])
    dist = np.array([[0.0, 0.5], [0.0, np.inf], [0.5, 0.7], [0.2, np.inf], [0.2, np.inf]])
    g = KnnGraph(idx, dist, {"source": "test"})
    assert g.n_missing() == 3 and g.n_components() == 2
    csr = g.to_csr()
    assert csr.shape == (5, 5) and csr.nnz == 7 and csr.dtype == np.float32
    assert csr[0, 1] == 0.0 and csr.indptr[1] - csr.indptr[0] == 2  # explicit zero kept
    si, sd = g.with_self()
    assert si[:, 0].tolist() == [0, 1, 2, 3, 4] and (sd[:, 0] == 0).all()
    g.save(tmp_path)
    assert (tmp_path / "knn_graph.npz").exists()
    back = KnnGraph.load(tmp_path)
    np.testing.assert_array_equal(back.indices, g.indices)
    np.testing.assert_array_equal(back.distances, g.distances)
    assert back.meta == {"source": "test"}
    import scipy.sparse as sp

    assert sp.load_npz(tmp_path / "knn_graph.npz").nnz == 7
    with pytest.raises(EngineError, match="no kNN graph"):
        KnnGraph.load(tmp_path / "missing")
    assert g.truncate(1).k == 1
    with pytest.raises(EngineError):
        KnnGraph(idx, dist[:, :1])


def test_recall_against_counts_ties_and_samples() -> None:
    ex = KnnGraph(np.array([[1, 2], [0, 2]]), np.array([[0.1, 0.3], [0.1, 0.2]]))
    approx = KnnGraph(np.array([[1, 3], [0, 3], [0, 1]]), np.array([[0.1, 0.3], [0.1, 0.9], [0.3, 0.3]]))
    # row 0: 3 is tied with exact's 2nd distance -> hit; row 1: 3 is farther -> miss
    assert approx.recall_against(ex, rows=np.array([0, 1])) == pytest.approx(0.75)


def test_synthetic_generator_is_seeded_and_chunked(tmp_path) -> None:
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import synthetic

    a, la = synthetic.generate(3000, str(tmp_path / "a"), dim=64, seed=1, chunk_size=700)
    b, lb = synthetic.generate(3000, str(tmp_path / "b"), dim=64, seed=1, chunk_size=700)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert isinstance(a, np.memmap) and a.dtype == np.float32 and a.shape == (3000, 64)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    sizes = np.bincount(la[la >= 0])
    assert sizes.max() > 5 * sizes.min()  # very unequal clusters
    assert 0.03 < (la == -1).mean() < 0.07  # background noise
    same = la[:300, None] == la[None, :300]
    s = a[:300] @ a[:300].T
    assert s[same & (la[:300, None] >= 0)].mean() > s[~same].mean() + 0.1
    # Parquet of real vectors is streamed to a .npy memmap
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"vector": [row.tolist() for row in np.asarray(a[:50])]}), tmp_path / "v.parquet")
    v = synthetic.load_vectors(str(tmp_path / "v.parquet"))
    np.testing.assert_allclose(v, a[:50], atol=1e-6)


def test_bench_graph_smoke(tmp_path) -> None:
    """The benchmark script runs end to end on a tiny Lite collection (so it cannot rot)."""
    out = tmp_path / "g.json"
    cmd = [
        sys.executable, os.path.join(ROOT, "benchmarks", "bench_graph.py"), "--n", "1200", "--k", "10",
        "--sample", "100", "--sweep-queries", "50", "--backends", "lite", "--shapes", "1x256",
        "--ef", "16", "--work", str(tmp_path / "w"), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    res = json.loads(out.read_text())
    r = res["results"][0]
    assert r["backend"] == "lite:HNSW" and r["recall@10"] >= 0.9 and r["insert_rate_vps"] > 0
