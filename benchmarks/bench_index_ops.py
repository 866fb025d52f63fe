"""pytest-benchmark suite: insert, index build and search per index type (Milvus Lite, small sizes).

Why: regressions in Milvus Lite/pymilvus (or in how we call them) show up as slower inserts,
builds or searches long before a full `engine bench-index` run would notice.

    pytest benchmarks/bench_index_ops.py --benchmark-json benchmarks/results/bench_index_ops.json
    MILVUS_BENCH_URI=http://127.0.0.1:19530 pytest benchmarks/bench_index_ops.py   # a server instead

Sizes: BENCH_N (default 5,000) clustered unit vectors of BENCH_DIM (default 64) dimensions.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from engine.bench.index_catalog import (
    create_vector_collection,
    drop_all_indexes,
    get_index_class,
    probe_support,
    server_version,
    wire_index_params,
)

N = int(os.environ.get("BENCH_N", "5000"))
DIM = int(os.environ.get("BENCH_DIM", "64"))
NQ, K = 100, 10
TYPES = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": 64, "nprobe": 8},
    "IVF_SQ8": {"nlist": 64, "nprobe": 8},
    "IVF_PQ": {"nlist": 64, "m": 16, "nprobe": 8},
    "HNSW": {"M": 16, "efConstruction": 100, "ef": 32},
    "HNSW_SQ": {"M": 16, "efConstruction": 100, "ef": 32},
    "SCANN": {"nlist": 64, "nprobe": 8},
    "AUTOINDEX": {},
}


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    v = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from pymilvus import MilvusClient

    uri = os.environ.get("MILVUS_BENCH_URI") or str(tmp_path_factory.mktemp("bench") / "ops.db")
    c = MilvusClient(uri=uri)
    yield c
    c.close()


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _vectors(N, DIM)


@pytest.fixture(scope="module")
def support(client) -> dict[str, str | None]:
    return probe_support(client, list(TYPES), timeout=60)


def _create(client, name: str) -> None:
    create_vector_collection(client, name, DIM)


def _rows(v: np.ndarray) -> list[dict]:
    return [{"id": i, "vector": v[i]} for i in range(v.shape[0])]


def _build(client, name: str, index_type: str, lite: bool) -> None:
    cfg = get_index_class(index_type)(**TYPES[index_type])
    drop_all_indexes(client, name)
    p = client.prepare_index_params()
    p.add_index(
        "vector",
        index_type=index_type,
        metric_type="COSINE",
        params=wire_index_params(cfg.index_params(), lite),
    )
    client.create_index(name, p, timeout=None)
    while int((client.describe_index(name, "vector") or {}).get("pending_index_rows", 0) or 0):
        time.sleep(0.1)


def test_insert(benchmark, client, data) -> None:
    """Insert N rows in batches of 1,000 into a fresh collection, then flush."""
    name = "bench_ops_insert"
    rows = _rows(data)

    def insert() -> None:
        for s in range(0, len(rows), 1000):
            client.insert(name, rows[s : s + 1000])
        client.flush(name)

    benchmark.pedantic(insert, setup=lambda: _create(client, name), rounds=3, iterations=1)
    assert client.get_collection_stats(name)["row_count"] == N
    client.drop_collection(name)


@pytest.fixture(scope="module")
def filled(client, data) -> str:
    name = "bench_ops_data"
    _create(client, name)
    rows = _rows(data)
    for s in range(0, len(rows), 1000):
        client.insert(name, rows[s : s + 1000])
    client.flush(name)
    yield name
    client.drop_collection(name)


@pytest.mark.parametrize("index_type", list(TYPES))
def test_build(benchmark, client, filled, support, index_type) -> None:
    """create_index until built (the index is dropped before each round)."""
    if support.get(index_type):
        pytest.skip(f"{index_type} not supported here: {support[index_type]}")
    lite = "lite" in server_version(client) and not server_version(client).startswith("v2")
    benchmark.pedantic(lambda: _build(client, filled, index_type, lite), rounds=2, iterations=1)
    assert (client.describe_index(filled, "vector") or {}).get("index_type") == index_type


@pytest.mark.parametrize("index_type", list(TYPES))
def test_search(benchmark, client, filled, support, data, index_type) -> None:
    """Batched search, nq=100, k=10; benchmark.extra_info holds recall@10 against exact."""
    if support.get(index_type):
        pytest.skip(f"{index_type} not supported here: {support[index_type]}")
    lite = "lite" in server_version(client) and not server_version(client).startswith("v2")
    _build(client, filled, index_type, lite)
    client.load_collection(filled)
    cfg = get_index_class(index_type)(**TYPES[index_type])
    q = data[:NQ]
    params = {"metric_type": "COSINE", "params": cfg.search_params()}

    def search():
        return client.search(filled, data=q, limit=K, search_params=params, output_fields=[])

    res = benchmark(search)
    exact = np.argsort(-(q @ data.T), axis=1)[:, :K]
    recall = np.mean([len(set(h.ids) & set(exact[i].tolist())) / K for i, h in enumerate(res)])
    benchmark.extra_info.update(recall=float(recall), nq=NQ, k=K, n=N, dim=DIM)
    assert recall > 0.5
