"""Stops an engine-run Milvus server when the engine process that started it is gone.

Why: on SIGTERM the 2.3 standalone binary starts a graceful stop that can hang for ever (measured on a
loaded 2-core machine: a component keeps retrying the already stopped root coordinator, the process
still alive after 90 s). A parent-death signal alone therefore does not stop it. This watchdog is a
separate small process started beside the server; the engine holds the write end of a pipe whose read
end is the watchdog's stdin. The kernel closes that pipe however the engine ends (exit, exception,
SIGKILL), so EOF on stdin means "the engine is gone": the watchdog sends SIGTERM, waits ``grace``
seconds, then SIGKILLs. A pipe cannot be fooled by a recycled pid, and it works whichever thread
started the server.

Run by :class:`engine.milvus.server.LocalMilvusServer`; it imports nothing from the engine on purpose
(it starts in a few tens of milliseconds and cannot fail on a heavy import).
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _runs(pid: int, exe: str) -> bool:
    """True while ``pid`` is alive and still runs ``exe`` (a zombie or a recycled pid does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return exe.encode() in fh.read()
    except OSError:
        return False


def watch(server_pid: int, exe: str, grace: float) -> int:
    """Block until stdin closes, then make sure ``server_pid`` (running ``exe``) is stopped."""
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except OSError:
        pass
    if not _runs(server_pid, exe):
        return 0  # the engine stopped its server itself (the normal case)
    try:
        os.kill(server_pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + grace
    while _runs(server_pid, exe) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _runs(server_pid, exe):
        try:
            os.kill(server_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.milvus.watchdog SERVER_PID EXE GRACE_SECONDS`` (stdin: the engine's pipe)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m engine.milvus.watchdog SERVER_PID EXE GRACE_SECONDS", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C meant for the engine must not end the watch
    return watch(int(args[0]), args[1], float(args[2]))


if __name__ == "__main__":
    raise SystemExit(main())
