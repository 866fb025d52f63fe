"""Every Milvus Lite workaround, in one place.

Milvus Lite (the in-process Milvus behind a ``*.db`` path) differs from a server in ways that
cost hours when met one at a time (FIELD-NOTES): pymilvus pings it more often than it allows,
one process at a time may open a data directory, it reads index parameters only from a nested
``params`` key, its L2 brute force allocates (nq, n, dim), and searching through its local gRPC
server is 2.5-5x slower than calling the in-process collection. The last needs a private
attribute of milvus_lite (``server_manager_instance._servers``): there is no public accessor, so it
is used only here, falls back to gRPC when it is missing, and pyproject.toml bounds milvus-lite
to the tested minor version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import EngineError

#: pymilvus pings every 10 s, even with no call in flight; Milvus Lite's in-process gRPC server allows
#: a ping only every 5 minutes without data and answers more with GOAWAY ``too_many_pings`` (logged by
#: gRPC during a long embedding). The connection is in-process: ping no more often than the server allows.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 360_000, "grpc.keepalive_permit_without_calls": False}
#: Max bytes Lite's L2 brute force may allocate per search call ((nq, n, dim) float32).
L2_BRUTE_BUDGET = 512 * 1024**2
#: Lite memtable segments hold at most this many rows (milvus_lite.constants.MAX_SEGMENT_ROWS).
MAX_SEGMENT_ROWS = 100_000


def connect(uri: str, db_name: str | None = None) -> Any:
    """A ``MilvusClient`` on the Lite file ``uri`` (its directory is created); clear errors when locked."""
    from pymilvus import MilvusClient

    path = os.path.abspath(uri)
    if not path.endswith(".db"):
        raise EngineError(f"Milvus Lite uri must end in .db, got {uri!r} (parameter uri)")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if db_name not in (None, "", "default"):
        raise EngineError("Milvus Lite has only the 'default' database (parameter db_name)")
    try:
        return MilvusClient(uri=path, grpc_options=GRPC_OPTIONS)
    except Exception as exc:
        if dir_locked(path):
            raise EngineError(
                f"Milvus Lite data directory {path} is open in another process (DataDirLockedError); "
                "stop that process, or run `milvus-lite server --data-dir DIR --port N` and use "
                "http://127.0.0.1:N as the uri"
            ) from None
        raise EngineError(f"cannot open Milvus Lite at {path} (parameter uri): {exc}") from None


def release(uri: str) -> None:
    """Stop Lite's in-process server for ``uri`` so the directory is unlocked for the next process."""
    try:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(os.path.abspath(uri))
    except Exception:  # closing must never mask the real error
        pass


def in_process_collection(uri: str, collection: str) -> Any:
    """The in-process Lite ``Collection`` behind a connection to ``uri``, or None (then use gRPC).

    Private API (no public accessor exists in milvus-lite 3.2): ``server_manager_instance._servers``
    maps the absolute data path to ``(server, db, port)``.
    """
    try:
        from milvus_lite.server_manager import server_manager_instance

        entry = server_manager_instance._servers.get(os.path.abspath(uri))
        col = entry[1].get_collection(collection) if entry else None
    except Exception:  # no such collection yet, or another Lite version
        return None
    if all(callable(getattr(col, m, None)) for m in ("search", "create_index", "load", "flush")):
        return col
    return None


def wire_index_params(params: dict[str, Any], lite: bool) -> dict[str, Any]:
    """Build params as the client must send them.

    pymilvus 3.x flattens ``params`` into top-level key/value pairs, but Milvus Lite 3.2.x reads
    only a JSON ``params`` key and silently ignores the rest (nlist, M, efConstruction fell back
    to its defaults; measured). Sending the nested copy too makes Lite honour them.
    """
    params = dict(params)
    if lite and params:
        params["params"] = dict(params)
    return params


def index_bytes(uri: str, collection: str) -> int:
    """Bytes of the index files Lite wrote for ``collection`` (0 when none are found)."""
    path = Path(uri) / "collections" / collection
    return sum(f.stat().st_size for f in path.rglob("*.idx") if f.is_file()) if path.exists() else 0


def l2_max_nq(n_rows: int, dim: int) -> int:
    """Largest nq whose L2 brute force on Lite stays within ``L2_BRUTE_BUDGET``."""
    per_query = max(1, min(n_rows, MAX_SEGMENT_ROWS)) * max(1, dim) * 4
    return L2_BRUTE_BUDGET // per_query


def dir_locked(path: str) -> bool:
    """True when another process holds Milvus Lite's LOCK file in ``path``."""
    lock = os.path.join(path, "LOCK")
    if not os.path.exists(lock):
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
