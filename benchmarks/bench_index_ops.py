"""pytest-benchmark suite: insert, index build and search per index type (Milvus Lite, small sizes).

Why: regressions in Milvus Lite/pymilvus (or in how we call them) show up as slower inserts,
builds or searches long before a full `engine bench-index` run would notice.

    pytest benchmarks/bench_index_ops.py --benchmark-json benchmarks/results/bench_index_ops.json
    MILVUS_BENCH_URI=http://127.0.0.1:19530 pytest benchmarks/bench_index_ops.py   # a server instead

Sizes: BENCH_N (default 5,000) clustered unit vectors of BENCH_DIM (default 64) dimensions.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from engine.milvus.indexes import CATALOG, IndexConfig
from engine.milvus.probe import probe_support
from engine.milvus.store import MilvusStore

N = int(os.environ.get("BENCH_N", "5000"))
DIM = int(os.environ.get("BENCH_DIM", "64"))
NQ, K = 100, 10
#: Every CPU index type whose build is known to finish (types this Milvus refuses are skipped).
TYPES = [name for name, cls in CATALOG.items() if not cls.GPU and not cls.BUILD_HANGS]
#: Small-size values over the spec defaults (nlist fits N rows, m divides DIM).
OVERRIDES = {"nlist": 64, "nprobe": 8, "m": 16, "M": 16, "efConstruction": 100, "ef": 32}


def config(index_type: str) -> IndexConfig:
    cls = CATALOG[index_type]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in OVERRIDES.items() if k in names})


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    v = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = os.environ.get("MILVUS_BENCH_URI") or str(tmp_path_factory.mktemp("bench") / "ops.db")
    s = MilvusStore(uri, collection="bench_ops_data", dim=DIM, index_type="FLAT", insert_batch_size=1000)
    yield s
    s.close()


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _vectors(N, DIM)


@pytest.fixture(scope="module")
def support(store) -> dict[str, str | None]:
    return probe_support(store, TYPES, timeout=60)


def test_insert(benchmark, store, data) -> None:
    """Insert N rows in batches of 1,000 into a fresh collection, then flush."""
    target = store.sibling("bench_ops_insert", dim=DIM, insert_batch_size=1000)

    def insert() -> None:
        target.insert(np.arange(N), data)
        target.flush()

    benchmark.pedantic(
        insert, setup=lambda: target.ensure_collection(DIM, drop_existing=True), rounds=3, iterations=1
    )
    assert target.count_rows() == N
    target.drop()


@pytest.fixture(scope="module")
def filled(store, data) -> MilvusStore:
    store.ensure_collection(DIM, drop_existing=True)
    store.insert(np.arange(N), data)
    store.flush()
    yield store
    store.drop()


@pytest.mark.parametrize("index_type", TYPES)
def test_build(benchmark, filled, support, index_type) -> None:
    """create_index until built (the store drops the previous index first)."""
    if support.get(index_type):
        pytest.skip(f"{index_type} not supported here: {support[index_type]}")
    params = config(index_type).index_params()
    benchmark.pedantic(lambda: filled.create_index(index_type, params), rounds=2, iterations=1)
    assert filled.describe_index().get("index_type") == index_type


@pytest.mark.parametrize("index_type", TYPES)
def test_search(benchmark, filled, support, data, index_type) -> None:
    """Batched search, nq=100, k=10; benchmark.extra_info holds recall@10 against exact."""
    if support.get(index_type):
        pytest.skip(f"{index_type} not supported here: {support[index_type]}")
    cfg = config(index_type)
    filled.create_index(index_type, cfg.index_params())
    filled.load()
    filled.search_params = cfg.search_params()
    q = data[:NQ]
    hit_ids, _ = benchmark(lambda: filled.search(q, K))
    exact = np.argsort(-(q @ data.T), axis=1)[:, :K]
    recall = np.mean([len(set(hit_ids[i].tolist()) & set(exact[i].tolist())) / K for i in range(NQ)])
    benchmark.extra_info.update(recall=float(recall), nq=NQ, k=K, n=N, dim=DIM)
    assert recall > 0.5
