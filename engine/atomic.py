"""Atomic outputs and readable inputs of a run directory.

Why: a full disk or a killed command half-way through a write left a truncated ``clusters.json``
(and a traceback); the next command then failed on it. Every output is written to a temporary
name in the same directory and renamed over the old file (``os.replace`` is atomic on one file
system), so a reader sees the previous file or the new one, never a part. Every input that fails
to load names itself and the command that rebuilds it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from engine.errors import EngineError

T = TypeVar("T")

#: What a truncated or corrupt npy/npz/parquet/json file raises when read (pyarrow's errors are
#: ValueError/OSError subclasses; np.load raises EOFError, ValueError, OSError, BadZipFile).
LOAD_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def temp_path(path: Path) -> Path:
    """``DIR/.NAME.tmp-PID.SUFFIX``: hidden, per process, and ending like ``path`` (np.save adds
    ``.npy`` to a name that does not)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write(tmp)``: ``p`` is replaced only when the block succeeds.

    A failed write (full disk, kill, an exception) leaves the previous ``p`` as it was and no
    temporary file; an OSError becomes one EngineError line naming ``p``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = (
            "the disk is full" if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else exc.strerror
        )
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise EngineError(f"cannot write {path}: {reason or exc}; {kept}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_input(path: str | os.PathLike[str], reader: Callable[[Path], T], rebuild: str) -> T:
    """``reader(path)``, or one EngineError naming ``path`` and the command that rebuilds it.

    ``rebuild``: the command line, e.g. ``engine cluster --out DIR``.
    """
    path = Path(path)
    if not path.exists():
        raise EngineError(f"{path} not found: run `{rebuild}` first")
    try:
        return reader(path)
    except EngineError:
        raise
    except LOAD_ERRORS as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(
            f"{path} is unreadable (truncated or corrupt: {reason[:200]}); rebuild it with `{rebuild}`"
        ) from None
