"""Milvus vector store: one collection of (id, vector, text) rows, local Lite or a server.

Why a wrapper: every later stage needs the same few operations (batched insert, resume by
ids, index build, batched search returning numpy arrays), and Milvus Lite has pitfalls that
must be handled in one place (L2 brute force allocating (nq, n, dim), one process per data
directory, unflushed rows searched by brute force, vectors returned unless
``output_fields=[]``). Server mode adds retries with exponential backoff and a token that is
never printed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from engine import logs
from engine.errors import EngineError

log = logging.getLogger(__name__)

T = TypeVar("T")

METRICS = ("COSINE", "IP", "L2")
#: Index types Milvus Lite 3.x accepts (FIELD-NOTES: it refuses IVF_PQ, DISKANN, SCANN).
LITE_INDEX_TYPES = ("AUTOINDEX", "FLAT", "BRUTE_FORCE", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
#: Index types a Milvus server accepts for FLOAT_VECTOR (GPU_* need the GPU image).
SERVER_INDEX_TYPES = (
    "AUTOINDEX",
    "FLAT",
    "IVF_FLAT",
    "IVF_SQ8",
    "IVF_PQ",
    "HNSW",
    "HNSW_SQ",
    "HNSW_PQ",
    "HNSW_PRQ",
    "SCANN",
    "DISKANN",
    "GPU_BRUTE_FORCE",
    "GPU_IVF_FLAT",
    "GPU_IVF_PQ",
    "GPU_CAGRA",
)
#: Max bytes Lite's L2 brute force may allocate per search call ((nq, n, dim) float32).
LITE_L2_BRUTE_BUDGET = 512 * 1024**2
#: pymilvus pings every 10 s, even with no call in flight; Milvus Lite's in-process gRPC server allows
#: a ping only every 5 minutes without data and answers more with GOAWAY ``too_many_pings`` (logged by
#: gRPC during a long embedding). The connection is in-process: ping no more often than the server allows.
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 360_000, "grpc.keepalive_permit_without_calls": False}
#: Milvus caps a query() window at 16,384 rows.
QUERY_WINDOW = 16_384
#: Lite memtable segments hold at most this many rows (milvus_lite.constants.MAX_SEGMENT_ROWS).
LITE_MAX_SEGMENT_ROWS = 100_000


def is_lite_uri(uri: str) -> bool:
    """A local path (``./out/milvus.db``) means Milvus Lite; http(s)/tcp/unix means a server."""
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def mask_uri(uri: str) -> str:
    """Hide ``user:password@`` credentials embedded in a URI."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def strip_uri_credentials(uri: str) -> tuple[str, str | None]:
    """``http://user:pw@host:19530`` -> (``http://host:19530``, ``"user:pw"``); other URIs unchanged.

    Why: the URI is saved to ``run.toml``; credentials travel as the token instead, which is never saved.
    """
    if "://" not in uri:
        return uri, None
    scheme, rest = uri.split("://", 1)
    netloc, sep, path = rest.partition("/")
    if "@" not in netloc:
        return uri, None
    userinfo, host = netloc.rsplit("@", 1)
    return f"{scheme}://{host}{sep}{path}", userinfo or None


#: Milvus collection names: a letter or ``_`` first, then letters, digits, ``_``; at most 255 characters.
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def check_collection_name(name: str) -> None:
    """Raise EngineError unless ``name`` is a valid Milvus collection name (checked before any work)."""
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
        raise EngineError(
            f"--collection {name!r} is not a valid Milvus collection name: start with a letter or _, then "
            "only letters, digits and _ (at most 255 characters)"
        )


#: Integer ranges of the index build / search parameters Milvus documents, per parameter name.
#: Values outside them reach Faiss/Knowhere unchecked: measured, HNSW M=-5 grew the process to 21 GB
#: and M=0 aborted with a Faiss assertion. Parameters not listed here are passed through unchecked.
PARAM_RANGES: dict[str, tuple[int, int]] = {
    "M": (2, 2048),
    "efConstruction": (1, 2**31 - 1),
    "ef": (1, 32768),
    "nlist": (1, 65536),
    "nprobe": (1, 65536),
    "m": (1, 65536),
    "nbits": (1, 16),
    "reorder_k": (1, 2**31 - 1),
    "search_list": (1, 65535),
    "intermediate_graph_degree": (1, 1024),
    "graph_degree": (1, 1024),
    "itopk_size": (1, 65536),
    "search_width": (1, 65536),
    "level": (1, 5),
}


def check_index_params(
    params: dict[str, Any] | None, option: str, index_type: str | None = None, dim: int | None = None
) -> None:
    """Raise EngineError naming ``option`` and the key when a known parameter is not an integer in range."""
    for key, value in (params or {}).items():
        if key not in PARAM_RANGES:
            continue
        low, high = PARAM_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise EngineError(f"{option}: {key!r} must be an integer in {low}..{high}, got {value!r}")
        if not low <= value <= high:
            raise EngineError(f"{option}: {key!r} must be an integer in {low}..{high}, got {value!r}")
    if index_type in ("IVF_PQ", "GPU_IVF_PQ") and dim and "m" in (params or {}):
        if dim % int(params["m"]):  # type: ignore[index]
            raise EngineError(f"{option}: 'm' ({params['m']}) must divide the vector dimension ({dim})")  # type: ignore[index]


def default_index_params(index_type: str, n_rows: int) -> dict[str, Any]:
    """Build parameters that give recall >= 0.95 on clustered 1024-d data at k <= 50."""
    if index_type in ("HNSW", "HNSW_SQ", "HNSW_PQ", "HNSW_PRQ"):
        return {"M": 16, "efConstruction": 200}
    if index_type.startswith("IVF") or index_type in ("SCANN", "GPU_IVF_FLAT", "GPU_IVF_PQ"):
        nlist = int(min(65536, max(16, 4 * math.sqrt(max(n_rows, 1)))))
        params: dict[str, Any] = {"nlist": nlist}
        if index_type in ("IVF_PQ", "GPU_IVF_PQ"):
            params.update({"m": 64, "nbits": 8})
        return params
    if index_type == "GPU_CAGRA":
        return {"intermediate_graph_degree": 64, "graph_degree": 32}
    return {}


def default_search_params(index_type: str, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
    """Search knobs derived from ``limit``: HNSW ef = max(128, 8*limit), IVF nprobe ~ nlist/8.

    Measured on clustered 1024-d vectors, k=30 (benchmarks/results/graph_*.json): at 20k HNSW
    ef=64 gives recall@30 0.945-0.951, ef=128 0.97; at 100k ef=128 gives 0.943-0.957 and ef=256
    0.961-0.965 (so k=30 -> ef=248). IVF_SQ8 nprobe=32 of 489 lists gives 0.94 at 20k.
    """
    if index_type in ("HNSW", "HNSW_SQ", "HNSW_PQ", "HNSW_PRQ", "AUTOINDEX"):
        return {"ef": max(128, 8 * limit)}
    if index_type.startswith("IVF") or index_type in ("SCANN", "GPU_IVF_FLAT", "GPU_IVF_PQ"):
        nlist = int(index_params.get("nlist", 128))
        return {"nprobe": int(min(nlist, max(16, nlist // 8)))}
    if index_type == "GPU_CAGRA":
        return {"itopk_size": max(64, 2 * limit), "search_width": 4}
    return {}


def _is_transient(exc: BaseException) -> bool:
    """gRPC UNAVAILABLE / DEADLINE_EXCEEDED, connection resets, server busy: worth a retry."""
    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus depends on grpcio
        grpc = None  # type: ignore[assignment]
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if grpc is not None and isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        return code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "unavailable",
            "deadline exceeded",
            "connection refused",
            "connection reset",
            "rate limit",
            "service not ready",  # a standalone server recovering its embedded etcd (measured under load)
            # what a restarting standalone server answers until its coordinators are back
            "find no available rootcoord",
            "empty grpc client",
            "node not match",
            "session not found",
            "node not found",
        )
    )


class MilvusStore:
    """One Milvus collection holding the corpus: int64 ``id`` (primary key), ``vector``, ``text``.

    Parameters follow ARCHITECTURE.md. ``uri`` ending in a local path selects Milvus Lite
    (the directory is created, one process at a time may open it); ``http://host:19530``
    selects a server, with ``token`` (never printed) and ``db_name``.
    ``search_params`` overrides the per-index defaults (``ef`` >= limit+1, ``nprobe``).
    ``lite_direct``: Lite searches call the in-process Lite collection directly instead of
    going through its local gRPC server (same results, 2.5-5x the queries per second measured
    on 2 cores; falls back to gRPC when Lite's internals differ).
    """

    def __init__(
        self,
        uri: str,
        token: str | None = None,
        collection: str = "engine_docs",
        dim: int | None = None,
        metric: str = "COSINE",
        index_type: str = "AUTOINDEX",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        db_name: str | None = None,
        text_max_bytes: int = 8192,
        insert_batch_size: int = 5000,
        timeout: float = 60.0,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
        lite_direct: bool = True,
    ) -> None:
        if not uri:
            raise EngineError("milvus uri is empty (parameter uri)")
        self.uri = uri
        self._token = token or None
        self.collection = collection
        self.dim = dim
        self.metric = str(metric).upper()
        self.index_type = str(index_type).upper()
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self.db_name = db_name
        self.text_max_bytes = int(text_max_bytes)
        self.insert_batch_size = int(insert_batch_size)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.retry_backoff = float(retry_backoff)
        self.is_lite = is_lite_uri(uri)
        self.lite_direct = bool(lite_direct)
        self._validate()
        self._client: Any = None
        self._direct: Any = None
        self._loaded = False
        self._count_cache: int | None = None
        #: Set by the owner of an engine-run server: retries stop at once when it returns False.
        self.alive: Callable[[], bool] | None = None
        self._rebuilding = False

    # ------------------------------------------------------------------ setup
    def _validate(self) -> None:
        if self.metric not in METRICS:
            raise EngineError(f"unknown metric {self.metric!r} (parameter metric); expected one of {METRICS}")
        allowed = LITE_INDEX_TYPES if self.is_lite else SERVER_INDEX_TYPES
        if self.index_type not in allowed:
            where = "Milvus Lite" if self.is_lite else "a Milvus server"
            raise EngineError(
                f"unknown index type {self.index_type!r} for {where} (parameter index_type); "
                f"expected one of {', '.join(allowed)}"
            )
        check_collection_name(self.collection)
        check_index_params(self.index_params, "index_params", self.index_type, self.dim)
        check_index_params(self.search_params, "search_params", self.index_type)
        if self.dim is not None and int(self.dim) <= 0:
            raise EngineError(f"dim must be positive, got {self.dim} (parameter dim)")
        if self.text_max_bytes < 1 or self.text_max_bytes > 65535:
            raise EngineError(f"text_max_bytes must be in 1..65535, got {self.text_max_bytes}")
        if self.insert_batch_size < 1:
            raise EngineError(f"insert_batch_size must be >= 1, got {self.insert_batch_size}")

    def __repr__(self) -> str:
        token = "'***'" if self._token else "None"
        return (
            f"MilvusStore(uri={mask_uri(self.uri)!r}, token={token}, collection={self.collection!r}, "
            f"dim={self.dim}, metric={self.metric!r}, index_type={self.index_type!r}, db_name={self.db_name!r})"
        )

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("MilvusStore holds a live connection and a secret token; do not pickle it")

    @property
    def client(self) -> Any:
        """The connected ``MilvusClient`` (connects on first use)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        logs.apply()  # pymilvus set its own log levels when it was imported

        if self.is_lite:
            return self._connect_lite(MilvusClient)
        kwargs: dict[str, Any] = {"uri": self.uri, "timeout": min(self.timeout, 30.0)}
        if self._token:
            kwargs["token"] = self._token
        if self.db_name:
            kwargs["db_name"] = self.db_name
        last: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return MilvusClient(**kwargs)
            except Exception as exc:  # pymilvus raises MilvusException on an unreachable server
                last = exc
                if "database" in str(exc).lower() and "not" in str(exc).lower():
                    raise EngineError(
                        f"Milvus database {self.db_name!r} does not exist at {mask_uri(self.uri)} (parameter db_name)"
                    ) from None
                if attempt < self.max_retries:
                    delay = self.retry_backoff * 2**attempt
                    log.warning("Milvus at %s unreachable, retrying in %.1fs", mask_uri(self.uri), delay)
                    time.sleep(delay)
        reason = self._scrub(str(last)).splitlines()[0][:200] if last else "unknown"
        raise EngineError(
            f"cannot reach Milvus server at {mask_uri(self.uri)} (parameter uri) after "
            f"{self.max_retries + 1} attempts: {reason}"
        )

    def _connect_lite(self, client_cls: Any) -> Any:
        path = os.path.abspath(self.uri)
        if not path.endswith(".db"):
            raise EngineError(f"Milvus Lite uri must end in .db, got {self.uri!r} (parameter uri)")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if self.db_name not in (None, "", "default"):
            raise EngineError("Milvus Lite has only the 'default' database (parameter db_name)")
        try:
            return client_cls(uri=path, grpc_options=LITE_GRPC_OPTIONS)
        except Exception as exc:
            if _lite_dir_locked(path):
                raise EngineError(
                    f"Milvus Lite data directory {path} is open in another process (DataDirLockedError); "
                    "stop that process, or run `milvus-lite server --data-dir DIR --port N` and use "
                    "http://127.0.0.1:N as the uri"
                ) from None
            raise EngineError(f"cannot open Milvus Lite at {path} (parameter uri): {exc}") from None

    def _scrub(self, text: str) -> str:
        """Remove the token from any text (error messages may echo connection parameters)."""
        if self._token and self._token in text:
            text = text.replace(self._token, "***")
        return text

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client call; retry transient errors with exponential backoff (server mode)."""
        attempts = 1 if self.is_lite else self.max_retries + 1
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except EngineError:
                raise
            except Exception as exc:
                gone = self.alive is not None and not self.alive()
                if attempt + 1 < attempts and _is_transient(exc) and not gone:
                    delay = self.retry_backoff * 2**attempt
                    log.warning("Milvus %s failed transiently, retry %d in %.1fs", what, attempt + 1, delay)
                    time.sleep(delay)
                    continue
                msg = self._scrub(str(exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__
                raise EngineError(f"Milvus {what} on collection {self.collection!r} failed: {msg}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (and, for Lite, the in-process server so the directory is unlocked)."""
        if self._client is None:
            return
        try:
            self._client.close()
        except Exception:  # closing must never mask the real error
            pass
        self._client = None
        self._direct = None
        self._loaded = False
        if self.is_lite:
            try:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(os.path.abspath(self.uri))
            except Exception:
                pass

    # ------------------------------------------------------------- collection
    def has_collection(self) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, self.collection))

    def ensure_collection(self, dim: int | None = None, drop_existing: bool = False) -> None:
        """Create the collection (id, vector, text) unless it exists; check its dim if it does."""
        from pymilvus import DataType, MilvusClient

        dim = int(dim if dim is not None else (self.dim or 0))
        if dim <= 0:
            raise EngineError("vector dimension unknown (parameter dim)")
        self.dim = dim
        exists = self.has_collection()
        if exists and drop_existing:
            self.drop()
            exists = False
        if exists:
            have = self._collection_dim()
            if have is not None and have != dim:
                raise EngineError(
                    f"collection {self.collection!r} holds {have}-d vectors but the embeddings are {dim}-d "
                    "(parameter dim); use another collection or drop_existing/restart"
                )
            return
        # Dynamic fields: cluster labels (``cluster``, ``layer_0`` ...) are written onto the rows
        # after clustering without a schema change (Milvus 2.3 servers cannot add fields).
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=self.text_max_bytes)
        self._call("create_collection", self.client.create_collection, self.collection, schema=schema)
        self._direct = None
        self._loaded = False
        self._count_cache = None
        log.info("created collection %s (dim=%d, metric=%s)", self.collection, dim, self.metric)

    def _collection_dim(self) -> int | None:
        desc = self._call("describe_collection", self.client.describe_collection, self.collection)
        for f in desc.get("fields", []):
            if f.get("name") == "vector":
                params = f.get("params", {})
                if "dim" in params:
                    return int(params["dim"])
        return None

    def drop(self) -> None:
        """Drop the collection if it exists."""
        if self.has_collection():
            self._call("drop_collection", self.client.drop_collection, self.collection)
        self._direct = None
        self._loaded = False
        self._count_cache = None

    # ----------------------------------------------------------------- writes
    def insert(
        self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, texts: Sequence[str] | None = None
    ) -> int:
        """Insert rows in batches of ``insert_batch_size``; returns the number inserted.

        On Milvus Lite 3.2.2 inserting an existing id replaces the row (measured); a server
        keeps both rows, so callers resuming an ingest must skip ``existing_ids()`` first.
        """
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != ids_arr.shape[0]:
            raise EngineError(
                f"insert: {ids_arr.shape[0]} ids but vectors of shape {vecs.shape} (parameter vectors)"
            )
        if texts is not None and len(texts) != ids_arr.shape[0]:
            raise EngineError(f"insert: {ids_arr.shape[0]} ids but {len(texts)} texts (parameter texts)")
        if ids_arr.size == 0:
            return 0
        if self.dim is None:
            self.dim = int(vecs.shape[1])
        if vecs.shape[1] != self.dim:
            raise EngineError(
                f"insert: vectors are {vecs.shape[1]}-d, collection is {self.dim}-d (parameter dim)"
            )
        if not np.isfinite(vecs).all():
            bad = int(np.where(~np.isfinite(vecs).all(axis=1))[0][0])
            raise EngineError(f"insert: vector for id {int(ids_arr[bad])} has NaN/inf values")
        n = 0
        for start in range(0, ids_arr.size, self.insert_batch_size):
            stop = min(start + self.insert_batch_size, ids_arr.size)
            rows = [
                {
                    "id": int(ids_arr[i]),
                    "vector": vecs[i],
                    "text": truncate_utf8(str(texts[i]), self.text_max_bytes) if texts is not None else "",
                }
                for i in range(start, stop)
            ]
            self._call("insert", self.client.insert, self.collection, rows, timeout=self.timeout)
            n += stop - start
        self._count_cache = None
        return n

    def delete(self, ids: Sequence[int] | np.ndarray, batch: int = 10_000) -> int:
        """Delete rows by primary key (a resumed ingest drops rows whose text changed or vanished)."""
        ids_arr = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        for start in range(0, ids_arr.size, batch):
            chunk = [int(i) for i in ids_arr[start : start + batch]]
            self._call("delete", self.client.delete, self.collection, ids=chunk, timeout=self.timeout)
        self._count_cache = None
        return int(ids_arr.size)

    def has_dynamic_field(self) -> bool:
        """True when the collection accepts scalar fields beyond id/vector/text (created by this engine)."""
        desc = self._call("describe_collection", self.client.describe_collection, self.collection)
        return bool(desc.get("enable_dynamic_field", False))

    def upsert_labels(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        labels: dict[str, np.ndarray],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Rewrite rows with integer label fields (``{"cluster": labels, ...}``) so searches can filter on them.

        Upsert replaces whole rows, so vectors and texts are sent again (from embeddings.npy, not
        read back from Milvus). Re-running replaces the previous labels; rows not given keep theirs.
        """
        if not self.has_dynamic_field():
            raise EngineError(
                f"collection {self.collection!r} was created without dynamic fields (by an older engine), "
                "so cluster labels cannot be stored on it; re-run `engine run` with --restart"
            )
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        columns = {name: np.asarray(values, dtype=np.int64) for name, values in labels.items()}
        n = 0
        for start in range(0, ids_arr.size, self.insert_batch_size):
            stop = min(start + self.insert_batch_size, ids_arr.size)
            block = np.asarray(vectors[start:stop], dtype=np.float32)
            rows = []
            for i in range(start, stop):
                row: dict[str, Any] = {
                    "id": int(ids_arr[i]),
                    "vector": block[i - start],
                    "text": truncate_utf8(str(texts[i]), self.text_max_bytes),
                }
                for name, values in columns.items():
                    row[name] = int(values[i])
                rows.append(row)
            self._call("upsert", self.client.upsert, self.collection, rows, timeout=self.timeout)
            n += stop - start
            if progress is not None:
                progress(stop - start)
        self._count_cache = None
        return n

    def search_hits(
        self,
        vectors: np.ndarray,
        limit: int,
        filter: str = "",
        output_fields: Sequence[str] = (),
        search_params: dict[str, Any] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Search with a Milvus boolean ``filter`` (e.g. ``cluster == 3``) evaluated inside Milvus.

        Returns per query a list of ``{"id", "distance", **output_fields}`` (nearest first).
        """
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        self.load()
        params = default_search_params(self.index_type, limit, self.index_params)
        params.update(self.search_params)
        params.update(search_params or {})
        res = self._call(
            "search",
            self.client.search,
            self.collection,
            data=q,
            limit=limit,
            filter=filter,
            output_fields=list(output_fields),
            search_params={"metric_type": self.metric, "params": params},
            anns_field="vector",
            timeout=self.timeout,
        )
        out: list[list[dict[str, Any]]] = []
        for hits in res:
            rows = []
            for hit in hits:
                entity = dict(hit.get("entity", {}) or {})
                rows.append({"id": int(hit["id"]), "distance": float(hit["distance"]), **entity})
            out.append(rows)
        return out

    def query(
        self, filter: str, output_fields: Sequence[str] = ("id",), limit: int = QUERY_WINDOW
    ) -> list[dict]:
        """Rows matching a Milvus boolean ``filter`` (at most ``limit``; servers cap one window at 16,384)."""
        self.load_for_query()
        rows = self._call(
            "query",
            self.client.query,
            self.collection,
            filter=filter,
            output_fields=list(output_fields),
            limit=min(int(limit), QUERY_WINDOW) if not self.is_lite else int(limit),
        )
        return [dict(r) for r in rows]

    def flush(self) -> None:
        """Seal in-memory rows into segments so they get indexed (Lite brute-forces unflushed rows)."""
        col = self._lite_collection()
        if col is not None:
            self._lite_op("flush", col.flush)
            return
        self._call("flush", self.client.flush, self.collection, timeout=max(self.timeout, 600.0))

    def _lite_op(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except Exception as exc:
            raise EngineError(f"Milvus Lite {what} on collection {self.collection!r} failed: {exc}") from None

    def _lite_build_index(self, col: Any, params: dict[str, Any]) -> None:
        """Index lifecycle in-process: a long HNSW build over Lite's gRPC hit keepalive GOAWAYs,
        pymilvus retried create_index and Lite answered 'index already exists' (measured at 100k)."""
        if self._lite_op("has_index", col.has_index, "vector"):
            self._lite_op("release", col.release)
            self._lite_op("drop_index", col.drop_index, "vector")
        spec = {"index_type": self.index_type, "metric_type": self.metric, "params": dict(params)}
        self._lite_op("create_index", col.create_index, "vector", spec)
        self._lite_op("load", col.load)  # builds the per-segment indexes

    def build_index(self, index_params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flush, (re)create the vector index, wait until it is built, and load the collection.

        Returns the build parameters used. Unknown parameters are passed through to Milvus.
        """
        self.flush()  # first: a server's row count includes only flushed segments
        params = dict(default_index_params(self.index_type, self.count_rows()))
        params.update(self.index_params)
        params.update(index_params or {})
        self.index_params = params
        client = self.client
        col = self._lite_collection()
        if col is not None:
            self._lite_build_index(col, params)
            self._loaded = False
            self.load()
            return params
        existing = self._call("list_indexes", client.list_indexes, self.collection)
        if existing:
            try:
                client.release_collection(self.collection)
            except Exception:  # not loaded
                pass
            for name in existing:
                self._call("drop_index", client.drop_index, self.collection, name)
        ip = client.prepare_index_params()
        # pymilvus 3 flattens params into one key per parameter, but Milvus Lite 3.2.2 reads only
        # a JSON "params" key and silently builds with defaults otherwise (measured: nlist=128
        # whatever was asked). Send both forms to Lite.
        wire = {**params, "params": dict(params)} if self.is_lite and params else params
        ip.add_index(field_name="vector", index_type=self.index_type, metric_type=self.metric, params=wire)
        self._call("create_index", client.create_index, self.collection, ip, timeout=None)
        if not self.is_lite:
            self._wait_index_built()
        self._loaded = False
        self.load()
        return params

    def _wait_index_built(self, poll: float = 1.0, stall_timeout: float | None = None) -> None:
        """A server builds indexes asynchronously per segment: poll until no rows are pending.

        Some builds never finish (DISKANN and GPU_IVF_FLAT on the 2.3.5 standalone server retry
        forever inside the server), so waiting stops with an error once ``pending_index_rows``
        has not gone down for ``stall_timeout`` seconds, or when the server reports a failure.
        Pending rows only go down when a whole segment is done, and the engine's local server keeps
        ~1M+ rows per segment (one 1M x 1024 HNSW segment took 1,331 s on 2 cores), so the default
        timeout grows with the pending work: max(900 s, 3x that measured rate).
        """
        last_pending: int | None = None
        last_progress = time.monotonic()
        while True:
            info = self._call("describe_index", self.client.describe_index, self.collection, "vector")
            if not info:
                return
            state = str(info.get("state", "")).lower()
            if "fail" in state:
                reason = info.get("index_state_fail_reason") or info.get("fail_reason") or state
                raise EngineError(
                    f"Milvus could not build the {self.index_type} index (parameter index): {reason}"
                )
            pending = int(info.get("pending_index_rows", 0) or 0)
            if pending == 0:
                return
            if stall_timeout is None:
                stall_timeout = max(900.0, 3 * 1.3e-6 * pending * int(self.dim or 1024))
            if last_pending is None or pending < last_pending:
                last_pending, last_progress = pending, time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout:
                raise EngineError(
                    f"the {self.index_type} index build made no progress for {stall_timeout:.0f} s "
                    f"({pending} rows pending); this server may not support it (parameter index)"
                )
            time.sleep(poll)

    def load(self) -> None:
        """Load the collection into memory for search (a no-op once loaded)."""
        if self._loaded:
            return
        if not self._call("list_indexes", self.client.list_indexes, self.collection):
            self.build_index()
            return
        col = self._lite_collection()
        if col is not None:  # in-process: loading a big HNSW index can outlast gRPC keepalives
            self._lite_op("load", col.load)
        else:
            try:
                self._call("load_collection", self.client.load_collection, self.collection, timeout=None)
            except EngineError:
                # A server killed while it built the index can leave it unloadable (measured:
                # "unrecoverable error" on the next run). The rows are intact: build the index again.
                if self._rebuilding or (self.alive is not None and not self.alive()):
                    raise
                log.warning("milvus: collection %r does not load; rebuilding its index", self.collection)
                self._rebuilding = True
                try:
                    self.build_index()
                finally:
                    self._rebuilding = False
                return
        self._loaded = True

    # ------------------------------------------------------------------ reads
    def count_rows(self) -> int:
        """Row count from collection statistics (fast, includes unflushed rows on Lite)."""
        stats = self._call("get_collection_stats", self.client.get_collection_stats, self.collection)
        return int(stats.get("row_count", 0))

    def count(self) -> int:
        """Number of rows in the collection."""
        if self._count_cache is None:
            self._count_cache = self.count_rows()
        return self._count_cache

    def existing_ids(self, batch_size: int = QUERY_WINDOW) -> np.ndarray:
        """All stored ids, sorted int64. Used to resume an interrupted ingest.

        Only the ``id`` field is transferred. Lite has no 16,384-row query window, and one
        ``query(limit=count)`` is ~3x faster than ``query_iterator`` (100k ids: 2.1 s vs 6.4 s);
        Lite's ``query(limit=...)`` does not return the smallest ids, so keyset paging is not
        an option there. A server caps query windows, so it uses ``query_iterator``.
        """
        if not self.has_collection():
            return np.empty(0, dtype=np.int64)
        self.load_for_query()
        if self.is_lite:
            n = self.count_rows()
            if n == 0:
                return np.empty(0, dtype=np.int64)
            rows = self._call(
                "query", self.client.query, self.collection, filter="", output_fields=["id"], limit=n + 1
            )
            ids = np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows))
        else:
            chunks: list[np.ndarray] = []
            it = self._call(
                "query_iterator",
                self.client.query_iterator,
                self.collection,
                batch_size=min(int(batch_size), QUERY_WINDOW),
                output_fields=["id"],
            )
            try:
                while True:
                    rows = self._call("query_iterator.next", it.next)
                    if not rows:
                        break
                    chunks.append(np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows)))
            finally:
                it.close()
            ids = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        ids.sort()
        return ids

    def load_for_query(self) -> None:
        """Make scalar queries possible without committing to an index.

        Does not mark the store loaded for search: ``search()`` still goes through ``load()``,
        which builds the vector index first when there is none (Lite would otherwise
        brute-force every search silently). A server cannot load an index-less collection,
        so there the index is built now.
        """
        if self._loaded:
            return
        try:
            state = self.client.get_load_state(self.collection)
            name = getattr(state.get("state"), "name", str(state.get("state")))
            if "Loaded" in name and "Not" not in name:
                return
        except Exception:
            pass
        if self.is_lite:
            self._call("load_collection", self.client.load_collection, self.collection, timeout=None)
        else:
            self.load()

    def _lite_collection(self) -> Any:
        """The in-process Milvus Lite ``Collection`` behind our gRPC connection, or None."""
        if not (self.is_lite and self.lite_direct):
            return None
        if self._direct is not None:
            return self._direct
        _ = self.client  # starts Lite's in-process server
        try:
            from milvus_lite.server_manager import server_manager_instance

            entry = server_manager_instance._servers.get(os.path.abspath(self.uri))
            col = entry[1].get_collection(self.collection) if entry else None
        except Exception:  # no such collection yet, or another Lite version: use gRPC
            return None
        if all(callable(getattr(col, m, None)) for m in ("search", "create_index", "load", "flush")):
            self._direct = col
            return col
        return None

    def _search_direct(
        self, col: Any, q: np.ndarray, limit: int, params: dict[str, Any]
    ) -> list[list[dict[str, Any]]]:
        try:
            return col.search(
                query_vectors=list(q),
                top_k=limit,
                metric_type=self.metric,
                output_fields=[],
                anns_field="vector",
                search_params=params,
            )
        except Exception as exc:
            raise EngineError(f"Milvus Lite search on collection {self.collection!r} failed: {exc}") from None

    def _lite_l2_max_nq(self) -> int:
        """Largest nq whose L2 brute force on Lite stays within LITE_L2_BRUTE_BUDGET."""
        n = min(self.count(), LITE_MAX_SEGMENT_ROWS)
        per_query = max(1, n) * int(self.dim or 1) * 4
        return LITE_L2_BRUTE_BUDGET // per_query

    def search(
        self, vectors: np.ndarray, limit: int, search_params: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``limit`` neighbours of each query: (ids int64 (nq, limit), raw scores float32 (nq, limit)).

        Raw scores are what Milvus returns (COSINE/IP similarity, L2 squared distance); convert
        with ``engine.graph.distances.to_euclidean``. Missing hits are id -1, score NaN.
        """
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if limit < 1:
            raise EngineError(f"search limit must be >= 1, got {limit} (parameter limit)")
        if self.dim is not None and q.shape[1] != self.dim:
            raise EngineError(f"search: queries are {q.shape[1]}-d, collection is {self.dim}-d")
        self.load()
        params = default_search_params(self.index_type, limit, self.index_params)
        params.update(self.search_params)
        params.update(search_params or {})
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), limit)
        step = q.shape[0]
        if self.is_lite and self.metric == "L2" and self.index_type in ("FLAT", "BRUTE_FORCE"):
            step = self._lite_l2_max_nq()
            if step < 1:
                raise EngineError(
                    "metric L2 with a FLAT index on Milvus Lite allocates an (nq, n, dim) array "
                    f"({self.count()} rows x {self.dim} dims per query is over the "
                    f"{LITE_L2_BRUTE_BUDGET // 1024**2} MiB guard); use metric COSINE or IP (same neighbours "
                    "on unit vectors) or an HNSW/IVF index (parameter metric)"
                )
        ids = np.full((q.shape[0], limit), -1, dtype=np.int64)
        raw = np.full((q.shape[0], limit), np.nan, dtype=np.float32)
        direct = self._lite_collection()
        for s in range(0, q.shape[0], step):
            e = min(s + step, q.shape[0])
            if direct is not None:
                for j, hits in enumerate(self._search_direct(direct, q[s:e], limit, params)):
                    m = len(hits)
                    if m:
                        ids[s + j, :m] = [h["id"] for h in hits]
                        raw[s + j, :m] = [h["distance"] for h in hits]
                continue
            res = self._call(
                "search",
                self.client.search,
                self.collection,
                data=q[s:e],
                limit=limit,
                output_fields=[],
                search_params={"metric_type": self.metric, "params": params},
                anns_field="vector",
                timeout=self.timeout,
            )
            for j, hits in enumerate(res):
                hid = hits.ids
                m = len(hid)
                if m:
                    ids[s + j, :m] = hid
                    raw[s + j, :m] = hits.distances
        return ids, raw


def _lite_dir_locked(path: str) -> bool:
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
