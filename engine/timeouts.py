"""Calls that must not hang the engine: run in a daemon thread, abandoned after a timeout.

Used where a library call can block for ever (Milvus index builds that never finish, a DNS lookup
of the model hub behind a dead proxy). The call is abandoned, not killed: Python cannot kill a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_with_timeout(fn: Callable[[], T], timeout: float) -> tuple[str, T | BaseException | None]:
    """``('ok', value)`` | ``('error', exception)`` | ``('timeout', None)``.

    ``fn`` runs in a daemon thread; a hung call (DISKANN's create_index on milvus 2.3.5 never
    returns) is abandoned, not killed.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "timeout", None
    return ("error", box["error"]) if "error" in box else ("ok", box.get("value"))
