"""Connecting to Milvus: URIs, credentials, collection names, retries, thread timeouts.

Why one module: the URI rules (a local path is Milvus Lite, credentials never saved or printed),
which errors are worth a retry, and how long a call may hang decide the behaviour of every command;
each was written twice before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from engine.errors import EngineError

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_lite_uri(uri: str) -> bool:
    """A local path (``./out/milvus.db``) means Milvus Lite; http(s)/tcp/unix means a server."""
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")


def check_uri(uri: str) -> None:
    """EngineError unless ``uri`` is a server URL, a Milvus Lite ``.db`` path or ``local-server``.

    Checked with the options, before anything loads (a ``gopher://`` URI used to fail in Milvus Lite).
    """
    from engine.milvus.embedded import LOCAL_SERVER_URI

    if uri == LOCAL_SERVER_URI or not is_lite_uri(uri):
        return
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise EngineError(
            f"--milvus-uri {mask_uri(uri)!r}: unknown scheme {scheme!r} (use http(s)://host:19530, a Milvus "
            f"Lite file ending in .db, or {LOCAL_SERVER_URI})"
        )
    if not uri.rstrip().endswith(".db"):
        raise EngineError(f"--milvus-uri {uri!r}: a Milvus Lite file must end in .db")


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


def redact(text: str, token: str | None) -> str:
    """``text`` without the token (error messages may echo connection parameters)."""
    return text.replace(token, "***") if token else text


#: Milvus collection names: a letter or ``_`` first, then letters, digits, ``_``; at most 255 characters.
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def check_collection_name(name: str) -> None:
    """Raise EngineError unless ``name`` is a valid Milvus collection name (checked before any work)."""
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
        raise EngineError(
            f"--collection {name!r} is not a valid Milvus collection name: start with a letter or _, then "
            "only letters, digits and _ (at most 255 characters)"
        )


def is_transient(exc: BaseException) -> bool:
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
            # a search right after the server (re)started, before its query node registered the
            # shard's delegator (seen once in tests/test_ray.py's single-process graph search)
            "failed to get delegator",
        )
    )


def retrying(
    what: str, attempts: int, backoff: float, should_retry: Callable[[BaseException], bool] = is_transient
) -> Retrying:
    """A tenacity ``Retrying``: up to ``attempts`` tries, waits ``backoff * 2**i``, re-raises the last error.

    Only for idempotent calls: a retried call may already have taken effect on the server.
    """

    def before_sleep(state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("Milvus %s failed transiently, retry %d in %.1fs", what, state.attempt_number, delay)

    return Retrying(
        stop=stop_after_attempt(max(1, int(attempts))),
        wait=wait_exponential(multiplier=backoff, exp_base=2, min=0),
        retry=retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )


def short_error(exc: BaseException | str) -> str:
    """One line of at most 200 characters from an exception (pymilvus errors are multi-line)."""
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())[:200]


def server_version(client: Any) -> str:
    """The connected Milvus's version string ('unknown' when it does not say)."""
    try:
        return str(client.get_server_version())
    except Exception:  # noqa: BLE001 - some builds do not implement it
        return "unknown"


def is_lite_version(version: str) -> bool:
    """Milvus Lite reports e.g. ``milvus_lite 3.2.2``; a server ``v2.3.5``."""
    return "lite" in version.lower() and not version.lower().startswith("v2")


def connect_server(
    uri: str,
    token: str | None = None,
    db_name: str | None = None,
    timeout: float = 30.0,
    attempts: int = 6,
    backoff: float = 0.5,
) -> Any:
    """A ``MilvusClient`` on a server, retrying an unreachable one; EngineError names the URI (never the token)."""
    from pymilvus import MilvusClient

    kwargs: dict[str, Any] = {"uri": uri, "timeout": timeout}
    if token:
        kwargs["token"] = token
    if db_name:
        kwargs["db_name"] = db_name

    def missing_db(exc: BaseException) -> bool:
        return "database" in str(exc).lower() and "not" in str(exc).lower()

    try:
        for attempt in retrying("connect", attempts, backoff, lambda exc: not missing_db(exc)):
            with attempt:
                return MilvusClient(**kwargs)
    except Exception as exc:  # pymilvus raises MilvusException on an unreachable server
        if missing_db(exc):
            raise EngineError(
                f"Milvus database {db_name!r} does not exist at {mask_uri(uri)} (parameter db_name)"
            ) from None
        reason = redact(str(exc), token).splitlines()[0][:200] if str(exc) else "unknown"
        raise EngineError(
            f"cannot reach Milvus server at {mask_uri(uri)} (parameter uri) after {attempts} attempts: {reason}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover
