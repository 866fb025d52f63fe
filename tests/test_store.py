"""MilvusStore on a real Milvus Lite in tmp_path (no mocks)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from engine.errors import EngineError
from engine.graph.distances import to_euclidean
from engine.milvus.client import is_lite_uri, mask_uri
from engine.milvus.indexes import default_index_params, default_search_params
from engine.milvus.store import MilvusStore, truncate_utf8


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def vecs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = unit(rng, 400, 16)
    ids = (rng.permutation(400).astype(np.int64) * 5 + 11).astype(np.int64)
    return ids, x


def test_truncate_utf8_never_splits_a_character() -> None:
    text = "中文新闻标题" * 10  # 3 bytes per character
    for limit in range(1, 40):
        out = truncate_utf8(text, limit)
        assert len(out.encode("utf-8")) <= limit
        assert text.startswith(out)
        assert len(out) == limit // 3
    assert truncate_utf8("short", 100) == "short"


def test_uri_helpers() -> None:
    assert is_lite_uri("./out/milvus.db")
    assert not is_lite_uri("http://localhost:19530")
    assert mask_uri("http://root:pw@host:19530") == "http://***@host:19530"


def test_create_insert_count_existing_search_drop(tmp_path, vecs) -> None:
    ids, x = vecs
    texts = ["北京新闻：" + "长" * 5000 if i % 2 else f"doc {i}" for i in range(len(ids))]
    with MilvusStore(
        str(tmp_path / "m.db"), index_type="FLAT", text_max_bytes=256, insert_batch_size=150
    ) as st:
        st.ensure_collection(16)
        assert st.insert(ids, x, texts) == 400
        assert st.count() == 400
        st.build_index()
        got = st.existing_ids()
        np.testing.assert_array_equal(got, np.sort(ids))
        hit_ids, raw = st.search(x[:5], limit=3)
        assert hit_ids.shape == (5, 3) and raw.dtype == np.float32
        np.testing.assert_array_equal(hit_ids[:, 0], ids[:5])  # FLAT: each vector finds itself first
        np.testing.assert_allclose(to_euclidean(raw[:, 0], "COSINE"), 0.0, atol=1e-3)
        rows = st.client.query(st.collection, filter=f"id == {int(ids[1])}", output_fields=["text"])
        assert len(rows[0]["text"].encode("utf-8")) <= 256 and rows[0]["text"].startswith("北京新闻")
        st.ensure_collection(16)  # idempotent: keeps the rows
        assert st.count_rows() == 400
        st.drop()
        assert not st.has_collection()
        assert st.existing_ids().size == 0


def test_drop_existing_and_dim_mismatch(tmp_path, vecs) -> None:
    ids, x = vecs
    with MilvusStore(str(tmp_path / "m.db"), index_type="FLAT") as st:
        st.ensure_collection(16)
        st.insert(ids[:10], x[:10])
        with pytest.raises(EngineError, match="dim"):
            st.ensure_collection(32)
        st.ensure_collection(16, drop_existing=True)
        assert st.count_rows() == 0


def test_lite_insert_existing_id_replaces_row(tmp_path, vecs) -> None:
    """Milvus Lite 3.2.2 treats an insert on an existing primary key as an upsert (resume-safe)."""
    ids, x = vecs
    with MilvusStore(str(tmp_path / "m.db"), index_type="FLAT") as st:
        st.ensure_collection(16)
        st.insert(ids[:50], x[:50])
        st.insert(ids[:10], x[50:60])
        st.build_index()
        assert st.count_rows() == 50
        hit_ids, _ = st.search(x[50:51], limit=1)
        assert hit_ids[0, 0] == ids[0]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"index_type": "NOPE"}, "index_type"),
        ({"index_type": "DISKANN"}, "index_type"),  # server-only: Lite refuses it
        ({"metric": "HAMMING"}, "metric"),
        ({"collection": "bad name!"}, "collection"),
    ],
)
def test_bad_parameters_raise_engine_error(tmp_path, kwargs, param) -> None:
    with pytest.raises(EngineError, match=param):
        MilvusStore(str(tmp_path / "m.db"), **kwargs)


def test_server_index_names_accepted_for_server_uri() -> None:
    st = MilvusStore("http://127.0.0.1:1", index_type="diskann")
    assert st.index_type == "DISKANN" and not st.is_lite


def test_default_params_scale_with_k_and_n() -> None:
    assert default_search_params("HNSW", 31, {})["ef"] >= 31
    assert default_search_params("HNSW", 200, {})["ef"] >= 200
    assert default_search_params("IVF_FLAT", 31, {"nlist": 1024})["nprobe"] >= 16
    assert default_index_params("IVF_SQ8", 1_000_000)["nlist"] == 4000
    assert default_index_params("HNSW", 10)["M"] == 16


def test_token_never_in_repr_errors_or_logs(caplog) -> None:
    secret = "root:S3cr3t-T0ken-value"
    st = MilvusStore("http://127.0.0.1:1", token=secret, max_retries=1, retry_backoff=0.01, timeout=2)
    assert secret not in repr(st) and "***" in repr(st)
    with caplog.at_level(logging.DEBUG), pytest.raises(EngineError, match="cannot reach Milvus") as err:
        st.count()
    assert secret not in str(err.value)
    assert secret not in caplog.text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(st)


def test_lite_l2_flat_guard_and_squared_distances(tmp_path, vecs, monkeypatch) -> None:
    ids, x = vecs
    with MilvusStore(str(tmp_path / "m.db"), index_type="FLAT", metric="L2") as st:
        st.ensure_collection(16)
        st.insert(ids, x)
        st.build_index()
        # Tiny budget forces the search into many small nq chunks: results must be unchanged.
        monkeypatch.setattr("engine.milvus.lite.L2_BRUTE_BUDGET", 400 * 16 * 4 * 3)
        hit_ids, raw = st.search(x[:10], limit=2)
        assert hit_ids.shape == (10, 2)
        order = np.argsort(ids)
        exact = np.linalg.norm(x[:10] - x[order[np.searchsorted(ids[order], hit_ids[:, 1])]], axis=1)
        np.testing.assert_allclose(to_euclidean(raw[:, 1], "L2"), exact, atol=1e-4)  # Lite L2 is squared
        monkeypatch.setattr("engine.milvus.lite.L2_BRUTE_BUDGET", 10)
        with pytest.raises(EngineError, match="metric COSINE or IP"):
            st.search(x[:2], limit=2)


def test_locked_data_dir_gives_clear_error(tmp_path) -> None:
    db = tmp_path / "locked.db"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pymilvus import MilvusClient
        c = MilvusClient(uri={str(db)!r})
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        st = MilvusStore(str(db))
        t0 = time.time()
        with pytest.raises(EngineError, match="another process"):
            st.count()
        assert time.time() - t0 < 30
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("index_type", "metric"), [("FLAT", "COSINE"), ("HNSW", "IP"), ("FLAT", "L2")])
def test_lite_direct_search_equals_grpc(tmp_path, vecs, index_type, metric) -> None:
    """The in-process fast path returns exactly what Lite's gRPC server returns."""
    ids, x = vecs
    with MilvusStore(str(tmp_path / "m.db"), index_type=index_type, metric=metric) as st:
        st.ensure_collection(16)
        st.insert(ids, x)
        st.build_index()
        assert st._lite_collection() is not None
        a_ids, a_raw = st.search(x[:20], limit=7)
        st.lite_direct, st._direct = False, None
        b_ids, b_raw = st.search(x[:20], limit=7)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_raw, b_raw, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("direct", [True, False])
def test_reindex_existing_collection_with_another_type(tmp_path, vecs, direct) -> None:
    """Build params reach Lite on both paths (nlist=4 with nprobe=4 scans every list: exact)."""
    ids, x = vecs
    path = str(tmp_path / "m.db")
    with MilvusStore(path, index_type="FLAT") as st:
        st.ensure_collection(16)
        st.insert(ids, x)
        st.build_index()
        flat_ids, _ = st.search(x[:5], limit=4)
    with MilvusStore(path, index_type="IVF_FLAT", index_params={"nlist": 8}, lite_direct=direct) as st:
        st.ensure_collection(16)  # resume: the rows are kept
        assert st.count() == 400
        params = st.build_index({"nlist": 4})
        assert params["nlist"] == 4
        got = st.client.list_indexes(st.collection)
        assert got
        ivf_ids, _ = st.search(x[:5], limit=4, search_params={"nprobe": 4})  # nprobe == nlist: exact
    np.testing.assert_array_equal(np.sort(ivf_ids, axis=1), np.sort(flat_ids, axis=1))


def test_existing_ids_then_search_still_builds_the_index(tmp_path, vecs) -> None:
    """Resume flow on one store: existing_ids() must not leave search on Lite's silent brute force."""
    ids, x = vecs
    with MilvusStore(str(tmp_path / "m.db"), index_type="HNSW") as st:
        st.ensure_collection(16)
        st.insert(ids[:200], x[:200])
        assert st.existing_ids().size == 200
        st.insert(ids[200:], x[200:])
        hit_ids, _ = st.search(x[:3], limit=2)
        assert st.client.list_indexes(st.collection)  # search built the index first
        np.testing.assert_array_equal(hit_ids[:, 0], ids[:3])


def check_read_vectors(st: MilvusStore, tmp_path) -> None:
    """What ``read_vectors`` owes the engine on any Milvus: the inserted float32 values, bit for bit, in
    the order asked for, stored rows not asked for skipped, a missing id one error with the count."""
    rng = np.random.default_rng(7)
    n, dim = 1300, 24
    x = unit(rng, n, dim)
    x[5] = x[9]  # a duplicate vector stays two rows
    ids = rng.permutation(n).astype(np.int64) * 13 - 4000  # negative and positive, not positions
    st.ensure_collection(dim, drop_existing=True)
    st.insert(ids, x, [f"doc {i}" for i in range(n)])
    st.flush()
    st.upsert(ids[:50], x[:50])  # replaced rows (what storing labels does) are read once
    st.flush()
    assert st.count_live() == n
    want = rng.permutation(n)[:1000]  # a shuffled subset: 300 stored rows are not asked for
    got = st.read_vectors(ids[want], batch_size=128)  # 11 batches
    assert got.dtype == np.float32 and got.shape == (1000, dim)
    np.testing.assert_array_equal(got.view(np.uint32), x[want].view(np.uint32))
    # into a float32 .npy memory map (large N stays on disk), and through a writer callback
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    assert st.read_vectors(ids, out=mm, batch_size=500) is mm
    mm.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy").view(np.uint32), x.view(np.uint32))
    seen = np.zeros(n, dtype=int)

    def write(rows: np.ndarray, vectors: np.ndarray) -> None:
        assert (np.diff(rows) > 0).all()
        seen[rows] += 1
        np.testing.assert_array_equal(vectors, x[rows])

    assert st.read_vectors(ids, write=write, batch_size=400) is None
    assert (seen == 1).all()
    with pytest.raises(EngineError, match=r"^2 of the 5 requested vectors are not in Milvus collection"):
        st.read_vectors(np.concatenate([ids[:3], [123_456_789, -987_654_321]]))
    with pytest.raises(EngineError, match="ids must be unique"):
        st.read_vectors(ids[[1, 1]])
    empty = st.sibling("never_created")
    with pytest.raises(EngineError, match="2 of the 2 requested vectors"):
        empty.read_vectors(ids[:2])


def test_read_vectors_returns_the_inserted_floats_in_the_requested_order(tmp_path) -> None:
    with MilvusStore(str(tmp_path / "m.db")) as st:
        check_read_vectors(st, tmp_path)
