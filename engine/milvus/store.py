"""Milvus vector store: one collection of (id, vector, text) rows, local Lite or a server.

Why a wrapper: every later stage needs the same few operations (batched insert, resume by
ids, index build, batched search returning numpy arrays), and Milvus Lite has pitfalls that
must be handled in one place (L2 brute force allocating (nq, n, dim), one process per data
directory, unflushed rows searched by brute force, vectors returned unless
``output_fields=[]``). Server mode adds retries with exponential backoff and a token that is
never printed. Index types and their parameters: :mod:`engine.milvus.indexes`; Lite workarounds:
:mod:`engine.milvus.lite`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from engine import logs
from engine.errors import EngineError
from engine.milvus import lite
from engine.milvus.client import (
    check_collection_name,
    connect_server,
    is_lite_uri,
    is_transient,
    mask_uri,
    redact,
    retrying,
)
from engine.milvus.indexes import (
    METRICS,
    allowed_index_types,
    check_index_params,
    default_index_params,
    default_search_params,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Milvus caps a query() window at 16,384 rows.
QUERY_WINDOW = 16_384


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


class MilvusStore:
    """One Milvus collection holding the corpus: int64 ``id`` (primary key), ``vector``, ``text``.

    Parameters follow ARCHITECTURE.md. ``uri`` ending in a local path selects Milvus Lite
    (the directory is created, one process at a time may open it); ``http://host:19530``
    selects a server, with ``token`` (never printed) and ``db_name``.
    ``search_params`` overrides the per-index defaults (``ef`` >= limit+1, ``nprobe``).
    ``lite_direct``: Lite searches call the in-process Lite collection directly instead of
    going through its local gRPC server (same results, 2.5-5x the queries per second measured
    on 2 cores; falls back to gRPC when Lite's internals differ).
    ``rebuild_on_load_failure``: a collection that does not load gets its index rebuilt once (a
    server killed mid-build); the support probe turns this off, a refusal is its answer.
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
        rebuild_on_load_failure: bool = True,
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
        self._owns_client = True
        self._direct: Any = None
        self._loaded = False
        self._count_cache: int | None = None
        #: Set by the owner of an engine-run server: retries stop at once when it returns False.
        self.alive: Callable[[], bool] | None = None
        self._rebuilding = not rebuild_on_load_failure

    # ------------------------------------------------------------------ setup
    def _validate(self) -> None:
        if self.metric not in METRICS:
            raise EngineError(f"unknown metric {self.metric!r} (parameter metric); expected one of {METRICS}")
        allowed = allowed_index_types(self.is_lite)
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
        from pymilvus import MilvusClient  # noqa: F401 - imported first so logs.apply() wins

        logs.apply()  # pymilvus set its own log levels when it was imported
        if self.is_lite:
            return lite.connect(self.uri, self.db_name)
        return connect_server(
            self.uri,
            self._token,
            self.db_name,
            timeout=min(self.timeout, 30.0),
            attempts=self.max_retries + 1,
            backoff=self.retry_backoff,
        )

    def sibling(self, collection: str, **overrides: Any) -> MilvusStore:
        """Another collection on this store's connection (closing it leaves the connection open)."""
        kwargs: dict[str, Any] = dict(
            uri=self.uri,
            token=self._token,
            collection=collection,
            metric=self.metric,
            db_name=self.db_name,
            timeout=self.timeout,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
            lite_direct=self.lite_direct,
        )
        kwargs.update(overrides)
        other = MilvusStore(**kwargs)
        other._client = self.client
        other._owns_client = False
        return other

    def _scrub(self, text: str) -> str:
        """Remove the token from any text (error messages may echo connection parameters)."""
        return redact(text, self._token)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, idempotent: bool = True, **kwargs: Any) -> T:
        """Run one client call; on a server retry transient errors of idempotent calls (exponential backoff)."""
        attempts = self.max_retries + 1 if idempotent and not self.is_lite else 1

        def worth_retry(exc: BaseException) -> bool:
            gone = self.alive is not None and not self.alive()
            return not isinstance(exc, EngineError) and is_transient(exc) and not gone

        try:
            for attempt in retrying(what, attempts, self.retry_backoff, worth_retry):
                with attempt:
                    return fn(*args, **kwargs)
        except EngineError:
            raise
        except Exception as exc:
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
        if not self._owns_client:  # a sibling: the owner closes the connection
            self._client = None
            self._direct = None
            self._loaded = False
            return
        try:
            self._client.close()
        except Exception:  # closing must never mask the real error
            pass
        self._client = None
        self._direct = None
        self._loaded = False
        if self.is_lite:
            lite.release(self.uri)

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

    def vector_dim(self) -> int | None:
        """The stored vectors' dimension; None when the collection does not exist."""
        return self._collection_dim() if self.has_collection() else None

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
    def connection_kwargs(self) -> dict[str, Any]:
        """What another process needs to open this store (``MilvusStore(**kwargs)``): Ray workers.

        Holds the token: pass it only to processes of the same trusted cluster, never log it.
        """
        return dict(
            uri=self.uri,
            token=self._token,
            collection=self.collection,
            dim=self.dim,
            metric=self.metric,
            index_type=self.index_type,
            index_params=self.index_params,
            search_params=self.search_params,
            db_name=self.db_name,
            text_max_bytes=self.text_max_bytes,
            insert_batch_size=self.insert_batch_size,
            timeout=self.timeout,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
        )

    def upsert(
        self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, texts: Sequence[str] | None = None
    ) -> int:
        """Like :meth:`insert`, but a row whose id is stored replaces it (retried: idempotent).

        Ray workers write with it: a block retried after a lost worker rewrites its rows, never
        duplicates them. Servers only (Milvus Lite is refused with --ray).
        """
        return self.insert(ids, vectors, texts, upsert=True)

    def insert(
        self,
        ids: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str] | None = None,
        upsert: bool = False,
    ) -> int:
        """Insert rows in batches of ``insert_batch_size``; returns the number inserted.

        On Milvus Lite 3.2.2 inserting an existing id replaces the row (measured); a server
        keeps both rows, so callers resuming an ingest must skip ``existing_ids()`` first
        (or pass ``upsert=True``).
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
            if upsert:
                self._call("upsert", self.client.upsert, self.collection, rows, timeout=self.timeout)
            else:
                self._insert_batch(rows)
            n += stop - start
        self._count_cache = None
        return n

    def _insert_batch(self, rows: list[dict[str, Any]]) -> None:
        """Insert once; after a transient failure on a server, upsert the batch (retried).

        Why not retry the insert: a server keeps both rows of a duplicated id, and a failed call may
        still have landed. An upsert replaces whatever landed, so the retry cannot duplicate rows.
        """
        client = self.client
        try:
            client.insert(self.collection, rows, timeout=self.timeout)
            return
        except Exception as exc:
            gone = self.alive is not None and not self.alive()
            if self.is_lite or gone or not is_transient(exc):
                msg = self._scrub(str(exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__
                raise EngineError(f"Milvus insert on collection {self.collection!r} failed: {msg}") from None
            log.warning("Milvus insert failed transiently; upserting the batch instead (no duplicate rows)")
        self._call("upsert", client.upsert, self.collection, rows, timeout=self.timeout)

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
        replace: bool = False,
    ) -> int:
        """Rewrite rows with integer label fields (``{"cluster": labels, ...}``) so searches can filter on them.

        Upsert sends whole rows, so vectors and texts are sent again (from embeddings.npy, not
        read back from Milvus). Re-running replaces the previous labels; rows not given keep theirs.
        ``replace``: delete each batch's rows first, because an upsert keeps dynamic fields the new row
        lacks (measured on Milvus Lite: a ``layer_2`` of an earlier clustering survived the upsert).
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
            if replace:
                self.delete(ids_arr[start:stop])
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

    def check_filter(self, expr: str) -> None:
        """EngineError naming the filter when Milvus does not parse it (one row is fetched, at most)."""
        self.load_for_query()
        try:
            self._call(
                "query", self.client.query, self.collection, filter=expr, output_fields=["id"], limit=1
            )
        except EngineError as exc:
            detail = str(exc).split(" failed: ", 1)[-1]
            detail = re.sub(r"^<\w+: \(code=\d+, message=(.*?)\)?>?$", r"\1", detail)
            raise EngineError(f"--filter {expr!r} does not parse in Milvus: {detail}") from None

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

    def build_index(self, index_params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flush, (re)create the vector index with the defaults for this size, wait until built, load.

        Returns the build parameters used. Unknown parameters are passed through to Milvus.
        """
        self.flush()  # first: a server's row count includes only flushed segments
        params = dict(default_index_params(self.index_type, self.count_rows()))
        params.update(self.index_params)
        params.update(index_params or {})
        self.create_index(self.index_type, params)
        self.load()
        return params

    def create_index(
        self,
        index_type: str | None = None,
        index_params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Drop any vector index, create this one, and wait until it is built (not loaded for search).

        The one index-build path: ``engine run``, ``engine bench-index`` and the support probe use it.
        ``index_type`` is sent as given (the probe asks Milvus about types it may refuse);
        ``timeout`` bounds the whole build (None: until it stops making progress).
        """
        if index_type is not None:
            self.index_type = str(index_type).upper()
        params = dict(self.index_params if index_params is None else index_params)
        self.index_params = params
        self._loaded = False
        client = self.client
        col = self._lite_collection()
        if col is not None:
            # Index lifecycle in-process: a long HNSW build over Lite's gRPC hit keepalive GOAWAYs,
            # pymilvus retried create_index and Lite answered 'index already exists' (measured at 100k).
            if self._lite_op("has_index", col.has_index, "vector"):
                self._lite_op("release", col.release)
                self._lite_op("drop_index", col.drop_index, "vector")
            spec = {"index_type": self.index_type, "metric_type": self.metric, "params": dict(params)}
            self._lite_op("create_index", col.create_index, "vector", spec)
            self._lite_op("load", col.load)  # builds the per-segment indexes
            return
        self.drop_index()
        ip = client.prepare_index_params()
        wire = lite.wire_index_params(params, self.is_lite)
        ip.add_index(field_name="vector", index_type=self.index_type, metric_type=self.metric, params=wire)
        self._call("create_index", client.create_index, self.collection, ip, timeout=timeout)
        if not self.is_lite:
            self._wait_index_built(deadline_s=timeout)

    def drop_index(self) -> None:
        """Release the collection (if loaded) and drop its vector indexes."""
        client = self.client
        existing = self._call("list_indexes", client.list_indexes, self.collection)
        if existing:
            try:
                client.release_collection(self.collection)
            except Exception:  # not loaded
                pass
            for name in existing:
                self._call("drop_index", client.drop_index, self.collection, name)
        self._loaded = False

    def describe_index(self) -> dict[str, Any]:
        """Milvus's description of the vector index (type, params, state); {} when there is none."""
        try:
            return dict(
                self._call("describe_index", self.client.describe_index, self.collection, "vector") or {}
            )
        except EngineError:
            return {}

    def _wait_index_built(
        self, poll: float = 1.0, stall_timeout: float | None = None, deadline_s: float | None = None
    ) -> None:
        """A server builds indexes asynchronously per segment: poll until no rows are pending.

        Some builds never finish (DISKANN and GPU_IVF_FLAT on the 2.3.5 standalone server retry
        forever inside the server), so waiting stops with an error once ``pending_index_rows``
        has not gone down for ``stall_timeout`` seconds, or when the server reports a failure.
        Pending rows only go down when a whole segment is done, and the engine's local server keeps
        ~1M+ rows per segment (one 1M x 1024 HNSW segment took 1,331 s on 2 cores), so the default
        timeout grows with the pending work: max(900 s, 3x that measured rate). ``deadline_s`` bounds
        the whole wait.
        """
        last_pending: int | None = None
        last_progress = t0 = time.monotonic()
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
            if deadline_s is not None and time.monotonic() - t0 > deadline_s:
                raise EngineError(
                    f"the {self.index_type} index was not built after {deadline_s:g} s ({pending} rows pending)"
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

    def count_live(self) -> int:
        """Rows a query returns (``count(*)``): a server's statistics still count rows deleted or
        replaced by an upsert until compaction (measured on 2.3.5: 400 after upserting 100 of 300)."""
        self.load_for_query()
        try:
            rows = self._call(
                "query", self.client.query, self.collection, filter="", output_fields=["count(*)"]
            )
            return int(rows[0]["count(*)"])
        except (EngineError, LookupError, TypeError, ValueError):
            return self.count_rows()

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

    def iter_vectors(
        self, batch_size: int = QUERY_WINDOW, progress: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored row as ``(ids int64 (m,), vectors float32 (m, dim))`` batches, in no set order.

        ``query_iterator`` on the primary key with the vector field as output, on Lite and servers
        alike (one ``query(limit=n)`` would hold every vector as Python floats at once). A batch is
        at most ``batch_size`` rows and ~16 MiB of vectors, whatever the dimension (≈4M Python floats
        while pymilvus decodes it: peak RSS rose by at most 120 MB, benchmarks/RESULTS.md §16). The floats come
        back exactly as inserted (measured bitwise on Lite 3.2.2 and the 2.3.5 server).
        ``progress``: a bar over the row count.
        """
        from tqdm.auto import tqdm

        if not self.has_collection():
            return
        dim = self._collection_dim() or int(self.dim or 1)
        step = max(1, min(int(batch_size), QUERY_WINDOW, (16 << 20) // (4 * dim)))
        self.load_for_query()
        total = self.count_live() if progress else None
        it = self._call(
            "query_iterator",
            self.client.query_iterator,
            self.collection,
            batch_size=step,
            output_fields=["id", "vector"],
        )
        bar = tqdm(total=total, desc="read vectors from Milvus", unit="vec", disable=not progress)
        try:
            while True:
                rows = self._call("query_iterator.next", it.next)
                if not rows:
                    break
                ids = np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), dim)
                bar.update(len(rows))
                yield ids, vectors
        finally:
            bar.close()
            it.close()

    def read_vectors(
        self,
        ids: Sequence[int] | np.ndarray,
        out: np.ndarray | None = None,
        write: Callable[[np.ndarray, np.ndarray], None] | None = None,
        progress: bool = False,
        batch_size: int = QUERY_WINDOW,
    ) -> np.ndarray | None:
        """The stored vectors of ``ids``, row ``i`` holding the vector of ``ids[i]`` (float32, bitwise as stored).

        Why: a run whose ``embeddings.npy`` is gone (deleted, or embedded on another machine into the
        same Milvus) gets its vectors back without embedding again. Every stored row is read once
        (:meth:`iter_vectors`); rows whose id is not in ``ids`` (documents placed by ``engine assign
        --store``) are skipped. Where the rows go: ``out`` (an (len(ids), dim) float32 array, e.g. a
        ``np.lib.format.open_memmap`` file, so memory stays O(batch) for large N, returned), or
        ``write(positions, vectors)`` (positions index ``ids``, sorted; returns None), or else a new
        array (returned). ``batch_size``: rows per query_iterator batch. An id not stored is one
        EngineError saying how many are missing.
        """
        want = np.asarray(ids, dtype=np.int64).reshape(-1)
        order = np.argsort(want, kind="stable")
        sorted_ids = want[order]
        if len(sorted_ids) > 1 and (np.diff(sorted_ids) == 0).any():
            raise EngineError("read_vectors: ids must be unique (parameter ids)")
        dim = self.vector_dim()
        if out is None and write is None:
            out = np.empty((len(want), int(dim or self.dim or 0)), dtype=np.float32)
        if out is not None and dim is not None and out.shape != (len(want), dim):
            raise EngineError(
                f"read_vectors: out has shape {out.shape}, expected ({len(want)}, {dim}) (parameter out)"
            )
        found = np.zeros(len(want), dtype=bool)
        if len(want) and dim is not None:
            for got_ids, vectors in self.iter_vectors(batch_size, progress=progress):
                pos = np.searchsorted(sorted_ids, got_ids)
                hit = pos < len(sorted_ids)
                hit[hit] = sorted_ids[pos[hit]] == got_ids[hit]
                rows = order[pos[hit]]
                vectors = vectors[hit]
                keep = np.argsort(rows, kind="stable")
                rows, vectors = rows[keep], vectors[keep]
                found[rows] = True
                if write is not None:
                    write(rows, vectors)
                else:
                    out[rows] = vectors
        missing = int((~found).sum())
        if missing:
            first = int(want[np.flatnonzero(~found)[0]])
            raise EngineError(
                f"{missing} of the {len(want)} requested vectors are not in Milvus collection "
                f"{self.collection!r} (first missing id: {first})"
            )
        return out

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
        if self._direct is None:
            _ = self.client  # starts Lite's in-process server
            self._direct = lite.in_process_collection(self.uri, self.collection)
        return self._direct

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

    def search(
        self, vectors: np.ndarray, limit: int, search_params: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``limit`` neighbours of each query: (ids int64 (nq, limit), raw scores float32 (nq, limit)).

        Raw scores are what Milvus returns (COSINE/IP similarity, L2 squared distance); convert
        with ``engine.graph.distances.to_euclidean``. Missing hits have score NaN (their id, -1, is
        no marker: ids may be negative).
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
            step = lite.l2_max_nq(self.count(), int(self.dim or 1))
            if step < 1:
                raise EngineError(
                    "metric L2 with a FLAT index on Milvus Lite allocates an (nq, n, dim) array "
                    f"({self.count()} rows x {self.dim} dims per query is over the "
                    f"{lite.L2_BRUTE_BUDGET // 1024**2} MiB guard); use metric COSINE or IP (same neighbours "
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
