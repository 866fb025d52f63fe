"""Integration tests against a real standalone Milvus server (PyPI ``milvus`` 2.3.x, no Docker).

One server per session (``milvus_server`` fixture, ≈4-8 s to start). Covers: start/health/stop,
raw pymilvus insert + IVF_FLAT/HNSW + search, ``MilvusStore`` + ``build_knn_graph`` on the
server, resume after the server is stopped and started mid-ingest, and the token never showing
up in messages or logs.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.milvus.server import LocalMilvusServer, free_port, grpc_ping, http_health, milvus_server_version

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
    pytest.importorskip("milvus", exc_type=ImportError)
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
    from engine.milvus.store import MilvusStore

    return MilvusStore(uri, token=token, collection=collection, **kwargs)


def test_read_vectors_on_server(milvus_server: str, milvus_server_token, tmp_path) -> None:
    from tests.test_store import check_read_vectors

    with _store(milvus_server, milvus_server_token, "t_read_vectors", index_type="HNSW") as store:
        check_read_vectors(store, tmp_path)
        store.drop()


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


@pytest.mark.slow
def test_index_probe_accepts_ivf_and_hnsw(milvus_server: str, milvus_server_token) -> None:
    """doctor's index probe never blocks (per-call timeout) and sees what the server validates."""
    from engine.doctor import probe_milvus

    t0 = time.monotonic()
    info = probe_milvus(milvus_server, milvus_server_token, probe_indexes=True, timeout=10)
    assert info["reachable"] is True
    assert {"FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"} <= set(info["index_types_accepted"])
    assert time.monotonic() - t0 < 150


@pytest.mark.slow
def test_resume_after_server_restart_mid_ingest(milvus_server_handle, milvus_server: str) -> None:
    """Stop and start the server mid-ingest: flushed *and* unflushed rows persist, the old store
    object reconnects, and the ingest resumes from ``existing_ids()``."""
    if milvus_server_handle is None:
        pytest.skip("MILVUS_TEST_URI points at an external server: not restarting it")
    n, dim = 1600, 32
    x = clustered(n, dim, seed=2)
    ids = np.arange(n, dtype=np.int64) + 500
    quarter = n // 4
    store = _store(milvus_server, None, "t_resume", index_type="IVF_FLAT", max_retries=6, timeout=30)
    store.ensure_collection(dim, drop_existing=True)
    store.insert(ids[:quarter], x[:quarter])
    store.flush()
    store.insert(ids[quarter : 2 * quarter], x[quarter : 2 * quarter])  # in the WAL only

    milvus_server_handle.restart()  # same data dir and ports; waits until flushes work again

    have = store.existing_ids()  # the same store object: the gRPC channel reconnects
    np.testing.assert_array_equal(have, ids[: 2 * quarter])
    todo = np.isin(ids, have, invert=True)
    assert store.insert(ids[todo], x[todo]) == n - 2 * quarter
    store.build_index()
    assert store.count() == n
    np.testing.assert_array_equal(store.existing_ids(), ids)
    hit_ids, _ = store.search(x[:10], limit=1)
    assert hit_ids[:, 0].tolist() == ids[:10].tolist()
    store.drop()
    store.close()


@pytest.mark.slow
def test_store_rides_out_a_restart_during_inserts(milvus_server_handle, milvus_server: str) -> None:
    """Inserts keep going while the server restarts: the store's retry/backoff must cover ≈10 s."""
    if milvus_server_handle is None:
        pytest.skip("MILVUS_TEST_URI points at an external server: not restarting it")
    n, dim = 1200, 16
    x = clustered(n, dim, seed=4)
    ids = np.arange(n, dtype=np.int64)
    store = _store(milvus_server, None, "t_bounce", index_type="FLAT", max_retries=6, timeout=30)
    store.ensure_collection(dim, drop_existing=True)
    restarted = threading.Event()

    def bounce() -> None:
        time.sleep(0.3)
        milvus_server_handle.restart(wait_ready=0)
        restarted.set()

    thread = threading.Thread(target=bounce)
    thread.start()
    try:
        inserted = 0
        for start in range(0, n, 100):
            inserted += store.insert(ids[start : start + 100], x[start : start + 100])
            time.sleep(0.1)
    finally:
        thread.join(timeout=180)
        milvus_server_handle.wait_flushable(120)  # leave a usable server to later tests
    assert restarted.is_set() and inserted == n
    store.flush()
    np.testing.assert_array_equal(np.unique(store.existing_ids()), ids)
    store.drop()
    store.close()


def test_unreachable_server_message_hides_token(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    """A connection attempt with a token against a dead port: clear message, token nowhere."""
    from engine.milvus.store import MilvusStore

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
    from engine.milvus.client import mask_uri
    from engine.milvus.store import MilvusStore

    caplog.set_level(logging.DEBUG)
    uri = f"http://root:Sup3r-S3cret@127.0.0.1:{closed_port()}"
    assert "Sup3r-S3cret" not in mask_uri(uri)
    store = MilvusStore(uri, collection="t_masked", max_retries=0, timeout=2)
    with pytest.raises(EngineError) as info:
        store.count()
    assert "Sup3r-S3cret" not in str(info.value) and "Sup3r-S3cret" not in caplog.text


@pytest.mark.slow  # ≈60 s: embeds 12 rows, then the store's 6 connection attempts with backoff
def test_cli_run_with_env_token_against_dead_server(tiny_bge_m3_path, tmp_path) -> None:
    """``engine run`` with MILVUS_URI/MILVUS_TOKEN from the environment and an unreachable server:
    exit 2, one ``error: cannot reach Milvus ...`` line, and the token in no output or file."""
    import os
    import subprocess

    corpus = tmp_path / "c.csv"
    corpus.write_text(
        "title,description\n" + "".join(f"headline {i},about topic {i % 3}\n" for i in range(12))
    )
    out = tmp_path / "run"
    uri = f"http://127.0.0.1:{closed_port()}"
    env = dict(os.environ, MILVUS_URI=uri, MILVUS_TOKEN=FAKE_TOKEN, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "run",
        str(corpus),
        "--out",
        str(out),
        "--model",
        str(tiny_bge_m3_path),
        "--k",
        "5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-2000:]
    assert "cannot reach Milvus" in text and uri in text
    assert "Traceback" not in text
    assert FAKE_TOKEN not in text and "Sup3r-S3cret" not in text
    for path in out.rglob("*") if out.exists() else []:
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert b"Sup3r-S3cret" not in path.read_bytes(), path


def test_server_config_favours_few_large_segments(milvus_server_handle) -> None:
    """The engine's segment settings reach milvus.yaml (fewer segments -> fewer indexes per query)."""
    if milvus_server_handle is None:
        pytest.skip("external server: its config is not ours")
    from engine.milvus.server import SERVER_SETTINGS

    text = (Path(milvus_server_handle.data_dir) / "configs" / "milvus.yaml").read_text()
    for key, value in SERVER_SETTINGS.items():
        leaf = key.rsplit(".", 1)[1]
        assert re.search(rf"^\s*{leaf}: {value}\b", text, flags=re.M), key
