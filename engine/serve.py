"""``engine serve --out DIR``: search and assign over HTTP with the model and collection loaded once.

Why: ``engine search``/``engine assign`` load the model on every call (16-113 s measured for one
query); a server pays that once. Standard library only (``http.server``): JSON in, JSON out.

- ``GET /health``: ``{"ok": true, "documents": N, "fields": [...], "model_load_s": ...}``
- ``POST /search``: ``{"query": "...", "k": 10, "cluster": 3, "filter": "layer_1 == 2"}`` ->
  ``{"hits": [{"id", "score", "cluster", "layer_N"..., "text"}], "seconds": s}``
- ``POST /assign``: ``{"documents": ["text", {"id": "a", "text": "..."}], "k": 15}`` ->
  ``{"assignments": [{"id", "cluster", "cluster_confidence", "cluster_reason", ...}], "seconds": s}``

Bad input is a 4xx with ``{"error": "one line"}``. The server is a reader of the run directory
(:func:`engine.rundir.reading`): it holds the run's lock while it serves, or, when a run holds it, uses
that run's server; it never writes to Milvus (no ``--store``). Calls are answered one at a time (the
model and a Milvus Lite client are not shared across threads); ``/health`` answers meanwhile.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import EngineError

log = logging.getLogger("engine")

#: Largest request body accepted (a batch of documents to assign).
MAX_BODY = 32 * 1024 * 1024
MAX_K = 1000


class BadRequest(Exception):
    """A request the client must fix (4xx)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _int(body: dict[str, Any], name: str, default: int | None, low: int | None = None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name!r} must be an integer, got {value!r}")
    if low is not None and not low <= value <= MAX_K:
        raise BadRequest(f"{name!r} must be within {low}..{MAX_K}, got {value}")
    return value


class Service:
    """The loaded model, the open collection and the run's labels: what every request uses."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.lock = threading.Lock()
        t = time.perf_counter()
        self.encoder = pipe._encoder()
        self.columns = pipe.search_columns()
        pipe.graph()  # assign reads the run's graph radius
        self.store = pipe.open_store(dim=self.encoder.dim)
        self.store.load()
        self.load_s = time.perf_counter() - t

    def close(self) -> None:
        self.store.close()

    def health(self) -> dict[str, Any]:
        from engine.stages import search_fields

        return {
            "ok": True,
            "documents": len(self.pipe.labels()),
            "fields": search_fields(self.columns),
            "model": self.encoder.name,
            "model_load_s": round(self.load_s, 3),
        }

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("'query' must be a non-empty string")
        k = _int(body, "k", 10, low=1)
        cluster = _int(body, "cluster", None)
        flt = body.get("filter", "") or ""
        if not isinstance(flt, str):
            raise BadRequest(f"'filter' must be a string, got {flt!r}")
        t = time.perf_counter()
        with self.lock:
            hits = self.pipe.search(query, k=k, cluster=cluster, filter=flt, store=self.store)
        return {"hits": records(hits), "seconds": round(time.perf_counter() - t, 4)}

    def assign(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = body.get("documents")
        if not isinstance(docs, list) or not docs:
            raise BadRequest('\'documents\' must be a non-empty list of texts or {"id", "text"} objects')
        texts, keys = [], []
        for i, doc in enumerate(docs):
            if isinstance(doc, str):
                texts.append(doc)
                keys.append(i)
            elif isinstance(doc, dict) and isinstance(doc.get("text"), str):
                texts.append(doc["text"])
                keys.append(doc.get("id", i))
            else:
                raise BadRequest(f"documents[{i}] must be a text or an object with a 'text' string")
        if not any(t.strip() for t in texts):
            raise BadRequest("every document in 'documents' is empty")
        k = _int(body, "k", 15, low=1)
        frame = pd.DataFrame({"id": [str(x) for x in keys], "text": texts})
        t = time.perf_counter()
        with self.lock:
            out = self.pipe.assign(frame, k=k, store=False, source="serve", open_store=self.store)
        out = out.drop(columns=["text"]).assign(key=[_jsonable(x) for x in keys])
        return {"assignments": records(out), "seconds": round(time.perf_counter() - t, 4)}


class Handler(BaseHTTPRequestHandler):
    service: Service  # set on the subclass made by make_server
    server_version = "engine-serve"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("serve: " + format, *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"the request body is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    def _answer(self, method: str) -> None:
        routes = {("GET", "/health"), ("POST", "/search"), ("POST", "/assign")}
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if (method, path) not in routes:
                if any(p == path for _, p in routes):
                    raise BadRequest(f"{method} is not allowed on {path}", HTTPStatus.METHOD_NOT_ALLOWED)
                raise BadRequest(
                    f"no endpoint {path} (GET /health, POST /search, POST /assign)", HTTPStatus.NOT_FOUND
                )
            if path == "/health":
                self._send(200, self.service.health())
            elif path == "/search":
                self._send(200, self.service.search(self._body()))
            else:
                self._send(200, self.service.assign(self._body()))
        except BadRequest as exc:
            self._send(exc.status, {"error": str(exc)})
        except EngineError as exc:  # bad filter, unknown field ...: the request's fault
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 -- one line to the client, the server keeps serving
            log.exception("serve: %s %s failed", method, path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")


def make_server(service: Service, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server bound to (host, port); port 0 picks a free one (``server.server_address``)."""
    handler = type("BoundHandler", (Handler,), {"service": service})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise EngineError(
            f"engine serve: cannot listen on {host}:{port} ({exc.strerror}) (--host/--port)"
        ) from None
    server.daemon_threads = True
    return server
