"""The run directory lock: one engine command per ``--out`` at a time.

Why: two commands on one run directory interleave their files (measured: ``corpus.parquet`` of one
corpus next to ``labels.parquet`` and ``embeddings.npy`` of another). The lock is an ``flock`` on
``DIR/.engine.lock``, which also records the owner (pid, command, start time) for the refusal message.
The kernel drops an ``flock`` when its process dies, so a lock left by a killed command is simply
free; its stale record is reported and overwritten. A refused command has written nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine.atomic import read_input
from engine.config import RUN_CONFIG_NAME
from engine.errors import EngineError

try:  # POSIX; on Windows the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("engine")
T = TypeVar("T")

LOCK_NAME = ".engine.lock"


class LockHeld(EngineError):
    """Another live command holds the run directory."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts: it cannot be signalled, but it is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_out_dir(root: Path) -> None:
    """Create the run directory, or raise one line naming ``--out`` (an existing file, a read-only place)."""
    if root.exists() and not root.is_dir():
        raise EngineError(f"--out {root} is an existing file, not a directory: pick another --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EngineError(f"--out {root}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise EngineError(f"--out {root}: cannot create the run directory ({exc.strerror})") from None


class RunLock:
    """``with RunLock(out_dir, "run"):`` holds the directory for the duration of one command."""

    def __init__(self, root: str | os.PathLike[str], command: str) -> None:
        self.root = Path(root)
        self.command = command
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    def owner(self) -> dict[str, Any]:
        """The recorded owner (``pid``, ``command``, ``started``), or {} when none is recorded."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        prepare_out_dir(self.root)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EngineError(f"--out {self.root} is not writable ({exc.strerror})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                owner = self.owner()
                who = f"`engine {owner.get('command', '?')}` (pid {owner.get('pid', '?')}"
                since = owner.get("started")
                who += f", started {time.strftime('%H:%M:%S', time.localtime(since))})" if since else ")"
                raise LockHeld(
                    f"--out {self.root} is in use by {who}: wait for it to finish, or use another --out"
                ) from None
        stale = self.owner()
        if stale.get("pid") and stale.get("pid") != os.getpid():
            state = "no longer running" if not pid_alive(int(stale["pid"])) else "no longer holding it"
            log.warning(
                "run directory %s: taking over the lock of `engine %s` (pid %s), which is %s",
                self.root,
                stale.get("command", "?"),
                stale["pid"],
                state,
            )
        record = json.dumps({"pid": os.getpid(), "command": self.command, "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a clean end leaves no owner record behind
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def in_progress(root: Path, owner: dict[str, Any]) -> EngineError:
    """The one line a reader gives when it cannot use a run in progress."""
    who = f" (`engine {owner['command']}`, pid {owner.get('pid', '?')})" if owner.get("command") else ""
    return EngineError(f"a run is in progress in {root}{who}; try again when it ends")


@contextlib.contextmanager
def reading(root: str | os.PathLike[str], command: str, milvus_uri: str, writes: bool = False):
    """Reader access for ``engine search``/``assign``/``serve``: a reader never harms a run.

    Yields the Milvus URI to use. When the directory is free, the reader holds its lock like any command
    (so it may start the run's local server or open its Lite file, and no run starts under it) and
    ``milvus_uri`` is used as configured. When another command holds it: the server that command runs
    (``local-server``, found by its record) or an external server is used as it is; a Milvus Lite file
    (one process at a time), a server not up, or a reader that ``writes`` is refused with one line,
    before anything loads.
    """
    from engine.milvus.client import is_lite_uri
    from engine.milvus.embedded import LOCAL_SERVER_URI

    lock = RunLock(root, command)
    try:
        lock.acquire()
    except LockHeld:
        owner = lock.owner()
        if writes:
            raise in_progress(lock.root, owner) from None
        if milvus_uri == LOCAL_SERVER_URI:
            from engine.milvus.server import running_server_uri

            uri = running_server_uri(RunPaths(lock.root).milvus_server)
            if uri is None:
                raise in_progress(lock.root, owner) from None
            log.info(
                "milvus: %s is in use by `engine %s`; using its server at %s",
                lock.root,
                owner.get("command", "?"),
                uri,
            )
            yield uri
        elif is_lite_uri(milvus_uri):
            raise in_progress(lock.root, owner) from None
        else:
            yield milvus_uri
        return
    try:
        yield milvus_uri
    finally:
        lock.release()


@dataclass
class RunPaths:
    """Where each stage writes, in one run directory (the ``--out`` of every command)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    corpus = property(lambda self: self.root / "corpus.parquet")
    corpus_stats = property(lambda self: self.root / "corpus_stats.json")
    embeddings = property(lambda self: self.root / "embeddings.npy")
    clusters_npz = property(lambda self: self.root / "clusters.npz")
    cluster_embedding = property(lambda self: self.root / "cluster_embedding.npy")
    coords = property(lambda self: self.root / "coords.npy")
    labels = property(lambda self: self.root / "labels.parquet")
    clusters_json = property(lambda self: self.root / "clusters.json")
    report_html = property(lambda self: self.root / "report.html")
    map_html = property(lambda self: self.root / "map.html")
    map_png = property(lambda self: self.root / "map.png")
    summary = property(lambda self: self.root / "summary.json")
    config = property(lambda self: self.root / RUN_CONFIG_NAME)
    knn_graph = property(lambda self: self.root / "knn_graph.npz")
    labels_stored = property(lambda self: self.root / "labels_stored.json")
    milvus_server = property(lambda self: self.root / "milvus_server")
    #: --ray: one JSON line per embedded block (written once its vectors are on disk and in Milvus)
    ray_blocks = property(lambda self: self.root / "ray_blocks.jsonl")

    def require(self, path: Path, stage: str) -> Path:
        """``path`` if an earlier stage wrote it, else EngineError naming the command that writes it."""
        if not path.exists():
            raise EngineError(f"{path} not found: run `engine {stage} --out {self.root}` first")
        return path

    def read(self, path: Path, stage: str, reader: Callable[[Path], T]) -> T:
        """``reader(path)``; a missing, truncated or corrupt file is one line naming the command that
        rebuilds it (``engine {stage} --out DIR``)."""
        return read_input(path, reader, f"engine {stage} --out {self.root}")
