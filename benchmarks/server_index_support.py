"""Which index types does a Milvus server accept? Build each one for real and search it.

Why: Milvus Lite, the pip `milvus` standalone server and a Docker/GPU server all accept different
index types, and some fail late (DISKANN ``create_index`` on the 2.3.5 wheel never returns). This
builds every candidate on a small clustered collection, each in a thread with a timeout so a hang
is recorded instead of blocking, and writes benchmarks/results/server_index_support.json.

    python benchmarks/server_index_support.py                 # starts a local server (PyPI `milvus`)
    python benchmarks/server_index_support.py --uri http://host:19530 [--token-env MILVUS_TOKEN]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.logs import quiet_libraries  # noqa: E402
from engine.milvus.indexes import CATALOG  # noqa: E402
from engine.timeouts import run_with_timeout as _run_with_timeout  # noqa: E402

SERVER_INDEX_CLASSES = [(name, cls) for name, cls in CATALOG.items() if cls.SERVER]

#: Small-size values over the spec defaults of engine.milvus.indexes.
OVERRIDES = {"nlist": 64, "nprobe": 16, "m": 16, "M": 16, "efConstruction": 100, "ef": 64, "itopk_size": 64}
#: Every type a server may build; those known to loop forever go last (on the 2.3.5 wheel DISKANN's
#: build loops forever inside the server).
CANDIDATES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (name, cfg.index_params(), cfg.search_params())
    for name, cls in sorted(SERVER_INDEX_CLASSES, key=lambda item: bool(item[1].BUILD_HANGS))
    for cfg in [cls(**{k: v for k, v in OVERRIDES.items() if k in {f.name for f in dataclasses.fields(cls)}})]
]


def clustered(n: int, dim: int, centers: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres (uniform random vectors make every ANN index look bad)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_with_timeout(fn: Any, timeout: float) -> tuple[str, Any]:
    """('ok', value) | ('error', message) | ('timeout', None) (engine.milvus.client's helper, message text)."""
    status, value = _run_with_timeout(fn, timeout)
    if status == "error":
        return "error", f"{type(value).__name__}: {value}"[:300]
    return status, value


def probe(
    uri: str,
    token: str | None,
    n: int,
    dim: int,
    k: int,
    timeout: float,
    on_hang: Any = None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    """Build and search every candidate through the store's one create-index path.

    ``on_hang()`` (restart our own server) returns the new URI after a build that never finishes.
    """
    from engine.milvus.client import server_version
    from engine.milvus.store import MilvusStore

    vectors = clustered(n, dim)
    queries = vectors[:50]
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    # no retries, no rebuild-on-load-failure: a refusal is the answer, not something to work around
    options = dict(dim=dim, metric="COSINE", max_retries=0, lite_direct=False, rebuild_on_load_failure=False)
    base = MilvusStore(uri, token=token, collection="probe_base", **options)
    out: dict[str, Any] = {"server_version": server_version(base.client), "indexes": {}}
    for index_type, params, search_params in CANDIDATES:
        if types and index_type not in types:
            continue
        store = base.sibling(f"probe_{index_type.lower()}", **options)
        store.ensure_collection(dim, drop_existing=True)
        store.insert(np.arange(n, dtype=np.int64), vectors)
        store.flush()
        entry: dict[str, Any] = {"params": params}
        t0 = time.perf_counter()
        status, value = run_with_timeout(
            lambda s=store, t=index_type, p=params: s.create_index(t, p, timeout=timeout), timeout + 15
        )
        if status == "ok":
            status, value = run_with_timeout(lambda s=store, sp=search_params: s.load(), timeout)
        entry["build_s"] = round(time.perf_counter() - t0, 2)
        if status == "ok":
            status, value = run_with_timeout(
                lambda s=store, sp=search_params: s.search(queries, k, search_params=sp), timeout
            )
            if status == "ok":
                got = value[0]
                entry["recall_at_k"] = round(
                    float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth, strict=True)])), 4
                )
        entry["status"] = {"ok": "accepted", "error": "refused", "timeout": "hangs"}[status]
        if status != "ok":
            entry["detail"] = value if status == "error" else f"no answer within {timeout:.0f} s"
        out["indexes"][index_type] = entry
        print(index_type, entry, flush=True)
        # dropping the collection cancels a build that loops forever inside the server
        dropped, _ = run_with_timeout(store.drop, 60)
        if status == "timeout" and dropped != "ok":
            if on_hang is None:
                break  # a remote server stuck on a build: later answers would be meaningless
            base = MilvusStore(on_hang(), token=token, collection="probe_base", **options)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--uri", default=None, help="a running server; default: start the local `milvus` package server"
    )
    parser.add_argument("--token-env", default="MILVUS_TOKEN", help="name of the env var holding the token")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per index build/search")
    parser.add_argument(
        "--types", default=None, help="comma-separated index types (default: every server type)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "server_index_support.json"))
    args = parser.parse_args(argv)
    quiet_libraries()  # refusals are the expected answer here: no pymilvus tracebacks
    token = os.environ.get(args.token_env)
    server = None
    started = time.perf_counter()
    if args.uri is None:
        from engine.milvus.server import LocalMilvusServer, milvus_server_version

        tmp = tempfile.mkdtemp(prefix="milvus-probe-")
        server = LocalMilvusServer(tmp, port=0).start()
        uri, backend = server.uri, f"pip milvus {milvus_server_version()} (local standalone)"
    else:
        uri, backend = args.uri, "remote"
    try:
        on_hang = None
        if server is not None:

            def on_hang() -> str:
                server.restart()
                return server.uri

        types = [t.strip().upper() for t in args.types.split(",")] if args.types else None
        result = probe(uri, token, args.n, args.dim, args.k, args.timeout, on_hang, types)
    finally:
        if server is not None:
            server.stop()  # also ends a DISKANN busy loop
    import pymilvus

    result.update(
        backend=backend,
        pymilvus=pymilvus.__version__,
        metric="COSINE",
        n=args.n,
        dim=args.dim,
        k=args.k,
        data="clustered unit vectors (20 centres)",
        machine=f"{platform.machine()}, {os.cpu_count()} cpus",
        accepted=[k for k, v in result["indexes"].items() if v["status"] == "accepted"],
        refused=[k for k, v in result["indexes"].items() if v["status"] == "refused"],
        hangs=[k for k, v in result["indexes"].items() if v["status"] == "hangs"],
        total_s=round(time.perf_counter() - started, 1),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("server_version", "accepted", "refused", "hangs")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
