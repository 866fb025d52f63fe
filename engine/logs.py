"""Which libraries' log messages reach the user (one place; the CLI turns it on unless ``--verbose``).

Why a module of its own: pymilvus configures its loggers when it is *imported* (``dictConfig`` at
import time), which happens lazily, after the CLI set up logging; so the levels are applied again
by whoever imports pymilvus (:mod:`engine.milvus.store`, :mod:`engine.milvus.server`) through :func:`apply`.
"""

from __future__ import annotations

import logging

#: Logger -> the least severe level shown by default.
QUIET_LEVELS: dict[str, int] = {
    # chatty at INFO; warnings kept
    "httpx": logging.WARNING,
    "urllib3": logging.WARNING,
    "milvus_lite": logging.WARNING,
    "numba": logging.WARNING,
    "sentence_transformers": logging.WARNING,
    "transformers": logging.WARNING,
    # Faiss's loader reports each CPU build it probes (ModuleNotFoundError ... swigfaiss_avx512_spr) at INFO
    "faiss": logging.WARNING,
    # pymilvus logs every failed RPC with its traceback before raising; the engine retries transient
    # errors and turns the raised one into one line, so these logs only repeat it
    "pymilvus": logging.CRITICAL,
    # Milvus Lite's in-process gRPC server logs a traceback for RPCs it does not implement
    # (pymilvus 3 probes AllocTimestamp); the client handles that
    "grpc._server": logging.CRITICAL,
}

_quiet = False


def quiet_libraries(enabled: bool = True) -> None:
    """Hide the libraries' own messages below :data:`QUIET_LEVELS` (``--verbose`` leaves them on)."""
    global _quiet
    _quiet = enabled
    apply()


def apply() -> None:
    """(Re)apply the levels; call after importing a library that configures its own loggers."""
    if not _quiet:
        return
    for name, level in QUIET_LEVELS.items():
        logging.getLogger(name).setLevel(level)
