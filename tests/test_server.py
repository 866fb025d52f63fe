"""Integration tests against a real standalone Milvus server (PyPI ``milvus`` 2.3.x, no Docker).

One server per session (``milvus_server`` fixture, ≈4-8 s to start). Covers: start/health/stop,
raw pymilvus insert + IVF_FLAT/HNSW + search, ``MilvusStore`` + ``build_knn_graph`` on the
server, resume after the server is stopped and started mid-ingest, and the token never showing
up in messages or logs.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time

import numpy as np
import pytest

from engine.errors import EngineError
from engine.server import LocalMilvusServer, free_port, grpc_ping, http_health, milvus_server_version

pytestmark = pytest.mark.server

FAKE_TOKEN = "root:Sup3r-S3cret-T0ken-4242"


def clustered(n: int, dim: int, centers: int = 8, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres: approximate indexes get meaningful recall on them."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused at once)."""
    return free_port()


# ----------------------------------------------------------------------------------- no server needed
def test_missing_package_gives_engine_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "milvus", None)  # makes `import milvus` raise ImportError
    assert milvus_server_version() is None
    with pytest.raises(EngineError, match=r"pip install 'milvus"):
        LocalMilvusServer(tmp_path).start()


def test_uri_before_start_is_a_clear_error(tmp_path) -> None:
    server = LocalMilvusServer(tmp_path)
    assert not server.running
    with pytest.raises(EngineError, match="not started"):
        _ = server.uri
    server.stop()  # stopping a server that never started is a no-op


def test_busy_port_is_refused(tmp_path) -> None:
    pytest.importorskip("milvus")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EngineError, match=rf"port {port} is already in use"):
            LocalMilvusServer(tmp_path, port=port).start()


def test_unreachable_health_and_ping_are_false() -> None:
    port = closed_port()
    assert http_health(f"http://127.0.0.1:{port}/healthz", timeout=1) is False
    assert grpc_ping(f"http://127.0.0.1:{port}", timeout=1) is None


# ----------------------------------------------------------------------------------- real server
def test_server_is_healthy(milvus_server: str, milvus_server_handle, milvus_server_token) -> None:
    assert milvus_server.startswith("http://")
    version = grpc_ping(milvus_server, token=milvus_server_token)
    assert version is not None and version.startswith("v2.")
    if milvus_server_handle is not None:
        assert milvus_server_handle.running
        assert milvus_server_handle.is_healthy()
        assert milvus_server_handle.pid_file is not None and milvus_server_handle.pid_file.exists()
        assert milvus_server_handle.started_s_ < 180


def test_raw_client_insert_ivf_flat_hnsw_search(milvus_server: str, milvus_server_token) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=milvus_server, token=milvus_server_token or "")
    name = "t_raw_client"
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    client.create_collection(name, schema=schema)
    x = clustered(1500, 32)
    res = client.insert(name, [{"id": 1000 + i, "vector": x[i].tolist()} for i in range(len(x))])
    assert res["insert_count"] == 1500
    client.flush(name)
    for index_type, params, sp in [
        ("IVF_FLAT", {"nlist": 16}, {"nprobe": 16}),
        ("HNSW", {"M": 8, "efConstruction": 64}, {"ef": 32}),
    ]:
        client.release_collection(name)
        for idx in client.list_indexes(name):
            client.drop_index(name, idx)
        ip = client.prepare_index_params()
        ip.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=params)
        client.create_index(name, ip)
        client.load_collection(name)
        hits = client.search(
            name,
            x[:20].tolist(),
            limit=5,
            search_params={"metric_type": "COSINE", "params": sp},
            output_fields=[],
        )
        top = [h[0]["id"] for h in hits]
        assert top == [1000 + i for i in range(20)], index_type
        assert all(abs(h[0]["distance"] - 1.0) < 1e-4 for h in hits)
    rows = client.query(name, filter="id < 1010", output_fields=["id"])
    assert sorted(r["id"] for r in rows) == list(range(1000, 1010))
    client.drop_collection(name)
    client.close()


def _store(uri: str, token: str | None, collection: str, **kwargs):
    from engine.store import MilvusStore

    return MilvusStore(uri, token=token, collection=collection, **kwargs)


def test_store_and_knn_graph_on_server(milvus_server: str, milvus_server_token) -> None:
    from engine.graph import build_knn_graph, exact_knn

    n, dim, k = 1200, 48, 10
    x = clustered(n, dim, seed=1)
    x[7] = x[3]  # a duplicate document must survive with distance 0
    ids = np.arange(n, dtype=np.int64) * 7 + 11  # ids are not positions
    with _store(
        milvus_server, milvus_server_token, "t_store_graph", index_type="HNSW", max_retries=2
    ) as store:
        store.ensure_collection(dim, drop_existing=True)
        assert store.insert(ids, x, [f"doc {i}" for i in range(n)]) == n
        store.build_index()
        assert store.count() == n
        np.testing.assert_array_equal(store.existing_ids(), np.sort(ids))
        hit_ids, raw = store.search(x[:5], limit=3)
        assert hit_ids.dtype == np.int64 and raw.dtype == np.float32
        assert set(hit_ids[:, 0]) <= set(ids[:8].tolist())
        graph = build_knn_graph(store, x, ids, k=k, workers=2, batch_size=200, progress=False)
        exact = exact_knn(x, k, device="cpu", progress=False)
        assert graph.indices.shape == (n, k)
        assert graph.recall_against(exact) >= 0.95
        assert 7 in graph.indices[3] and graph.distances[3, 0] == 0.0
        store.drop()


def test_index_probe_accepts_ivf_and_hnsw(milvus_server: str, milvus_server_token) -> None:
    """doctor's index probe never blocks (per-call timeout) and sees what the server validates."""
    from engine.doctor import probe_milvus

    t0 = time.monotonic()
    info = probe_milvus(milvus_server, milvus_server_token, probe_indexes=True, timeout=10)
    assert info["reachable"] is True
    assert {"FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"} <= set(info["index_types_accepted"])
    assert time.monotonic() - t0 < 150


def test_resume_after_server_restart_mid_ingest(milvus_server_handle, milvus_server: str) -> None:
    """Stop and start the server between two ingest halves and *during* inserts: data persists, calls retry."""
    if milvus_server_handle is None:
        pytest.skip("MILVUS_TEST_URI points at an external server: not restarting it")
    n, dim = 1600, 32
    x = clustered(n, dim, seed=2)
    ids = np.arange(n, dtype=np.int64)
    half = n // 2
    store = _store(
        milvus_server, None, "t_resume", index_type="IVF_FLAT", max_retries=6, retry_backoff=0.5, timeout=20
    )
    store.ensure_collection(dim, drop_existing=True)
    store.insert(ids[:half], x[:half])
    store.flush()

    milvus_server_handle.restart()  # stopped and started on the same data dir and port

    # the old store object reconnects on its own (gRPC channel + retries on UNAVAILABLE)
    have = store.existing_ids()
    np.testing.assert_array_equal(have, ids[:half])

    # restart again while inserts are in flight: the store's retry/backoff must ride it out
    todo = ids[np.isin(ids, have, invert=True)]
    restarted = threading.Event()

    def bounce() -> None:
        time.sleep(0.5)
        milvus_server_handle.restart()
        restarted.set()

    thread = threading.Thread(target=bounce)
    thread.start()
    inserted = 0
    for start in range(0, todo.size, 100):
        chunk = todo[start : start + 100]
        inserted += store.insert(chunk, x[chunk])
        time.sleep(0.15)
    thread.join(timeout=120)
    assert restarted.is_set()
    assert inserted == todo.size
    store.flush()
    got = store.existing_ids()
    assert got.size >= n and np.array_equal(np.unique(got), ids)
    store.build_index()
    hit_ids, _ = store.search(x[:10], limit=1)
    assert hit_ids[:, 0].tolist() == ids[:10].tolist()
    store.drop()
    store.close()


def test_unreachable_server_message_hides_token(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    """A connection attempt with a token against a dead port: clear message, token nowhere."""
    from engine.store import MilvusStore

    caplog.set_level(logging.DEBUG)
    uri = f"http://127.0.0.1:{closed_port()}"
    store = MilvusStore(
        uri, token=FAKE_TOKEN, collection="t_unreachable", max_retries=1, retry_backoff=0.05, timeout=2
    )
    assert FAKE_TOKEN not in repr(store)
    with pytest.raises(EngineError) as info:
        store.ensure_collection(8)
    message = str(info.value)
    assert "cannot reach Milvus" in message and uri in message
    out, err = capfd.readouterr()
    for text in (message, caplog.text, out, err):
        assert FAKE_TOKEN not in text
        assert "Sup3r-S3cret" not in text


def test_uri_credentials_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    from engine.store import MilvusStore, mask_uri

    caplog.set_level(logging.DEBUG)
    uri = f"http://root:Sup3r-S3cret@127.0.0.1:{closed_port()}"
    assert "Sup3r-S3cret" not in mask_uri(uri)
    store = MilvusStore(uri, collection="t_masked", max_retries=0, timeout=2)
    with pytest.raises(EngineError) as info:
        store.count()
    assert "Sup3r-S3cret" not in str(info.value) and "Sup3r-S3cret" not in caplog.text
