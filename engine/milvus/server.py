"""A local standalone Milvus server from the PyPI package ``milvus`` (2.3.x), without Docker.

Why: Milvus Lite is a single-process FAISS wrapper; the real server is what users run past a
million vectors. The ``milvus`` wheel bundles a real ``milvus run standalone`` binary (embedded
etcd, local storage, rocksmq), so CI and laptops can test against the real thing.

We drive the bundled binary ourselves instead of ``milvus.MilvusServer.start()`` because the
package's own ``stop()`` SIGKILLs after one second (risking the embedded etcd) and always uses the
pid file ``/run/milvus/standalone.pid``, which is ``flock``-ed: a second server on the same machine
then refuses to start. Each server here gets its own ``-alias`` (so its own pid file), its own
embedded-etcd ports (the package leaves them at 2379/2380), random internal ports chosen under a
machine-wide lock and kept in ``DATA_DIR/configs/engine-ports.json`` (so a restart finds its
old sessions), a 10 s session TTL (a restart is usable ≈20 s sooner) and a graceful SIGTERM stop.
Several servers (tests, benchmarks, other processes) then run side by side on one machine.

Usage::

    with LocalMilvusServer("/tmp/milvus-data", port=19530) as server:
        MilvusClient(uri=server.uri)

or from a shell: ``python -m engine.milvus.server --data-dir DIR --port 19530`` (Ctrl+C stops it).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import logs
from engine.errors import EngineError
from engine.rundir import pid_alive

try:  # POSIX only; the `milvus` wheel runs on Linux and macOS
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_PORT = 19530
DEFAULT_HEALTH_PORT = 9091
# Where the Milvus binary writes its pid file (falls back to /tmp/milvus when /run is read-only)
# and its ``server_id_<pid>`` files.
RUN_DIRS = (Path("/run/milvus"), Path("/tmp/milvus"))
# Segment sizing. Every sealed segment gets its own index and every query searches all of them, so
# fewer, larger segments mean far fewer distance computations per query. The 2.3 defaults cut a 1024-d
# collection into ~35k-row segments when rows arrive in small batches (``maxSize`` 512 MB x
# ``sealProportion`` 0.23) and ~165k-row ones in large batches (a segment is sealed after
# ``maxBinlogFileNumber`` 32 buffer flushes of ``insertBufSize`` 16 MB, ~5k rows each): 6 at 1M. Measured at 100k: one segment instead of three
# searched 1.7-2x faster (benchmarks/RESULTS.md, "segments").
SERVER_SETTINGS: dict[str, Any] = {
    "dataCoord.segment.maxSize": 16384,
    "dataCoord.segment.sealProportion": 0.9,
    "dataCoord.segment.maxBinlogFileNumber": 1024,
    "dataNode.segment.insertBufSize": 67108864,
    # On SIGTERM the query node waits for its loaded segments to move to another node, up to this
    # many seconds (default 1800); a standalone server has no other node. stop() releases the
    # collections first (measured: stop in 0.07 s instead of being killed after 30 s); this bounds
    # the wait when it cannot (a server orphaned by a killed engine).
    "common.gracefulStopTimeout": 10,
}
#: Seconds the watchdog (engine/milvus/watchdog.py) gives a server whose engine died to stop on SIGTERM
#: before it SIGKILLs it: the 2.3 binary's graceful stop can hang for ever on a loaded machine.
ORPHAN_GRACE_S = 10.0
#: Written in the data folder while a server runs: how a later engine finds a server orphaned by a crash.
STATE_FILE = "engine-server.json"

#: Held while a server picks its ports and comes up, so two starts (tests, benchmarks, other
#: processes) never pick the same internal ports: the package probes ports by bind-then-close,
#: and a second start in that window took the first one's DataNode port (measured: flushes then
#: failed with "node not match" and one server shut down).
START_LOCK = Path(tempfile.gettempdir()) / "engine-milvus-server-start.lock"
#: Internal ports (etcd, coordinators, nodes) come from here: below Linux's ephemeral range
#: (32768+) and away from the package's fixed defaults that every other copy would also try first.
INTERNAL_PORTS = (20000, 32000)

INSTALL_HINT = (
    "the local Milvus server needs the PyPI package `milvus` (pip install 'milvus==2.3.5'); "
    "or point --milvus-uri at a running Milvus server (see docker/README.md)"
)


def milvus_server_version() -> str | None:
    """Version of the installed ``milvus`` server package, or None when it is not installed."""
    try:
        import milvus  # noqa: PLC0415
    except ImportError:
        return None
    return str(getattr(milvus, "__version__", "unknown"))


def _import_milvus() -> Any:
    try:
        import milvus  # noqa: PLC0415
    except ImportError as exc:
        raise EngineError(INSTALL_HINT) from exc
    if not hasattr(milvus, "MilvusServerConfig"):
        raise EngineError(
            f"the installed `milvus` package ({milvus.__file__}) is not the server wheel; {INSTALL_HINT}"
        )
    return milvus


def free_port(start: int | None = None, host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on: ``start`` or the next free one after it, else any the OS picks."""
    candidates = range(start, min(start + 2000, 65536)) if start else ()
    for port in candidates:
        if _can_bind(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def random_free_ports(
    count: int, exclude: set[int] | None = None, span: tuple[int, int] = INTERNAL_PORTS
) -> list[int]:
    """``count`` distinct free ports drawn at random from ``span``."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    taken = set(exclude or ())
    out: list[int] = []
    for _ in range(50 * count + 100):
        port = rng.randrange(*span)
        if port not in taken and _can_bind("127.0.0.1", port):
            taken.add(port)
            out.append(port)
            if len(out) == count:
                return out
    raise EngineError(f"no {count} free TCP ports in {span[0]}..{span[1]} on 127.0.0.1")


@contextlib.contextmanager
def _start_lock(timeout: float) -> Iterator[None]:
    """Machine-wide lock around port selection + startup (see START_LOCK)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    deadline = time.monotonic() + timeout
    with open(START_LOCK, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"another Milvus server has been starting for {timeout:.0f} s (lock {START_LOCK})"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like Go's listeners: connections in TIME_WAIT after a stop must not count as "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _reuse_addr_config(milvus: Any) -> Any:
    """The package's config class, probing ports with SO_REUSEADDR (as Go's listeners bind).

    Without it a restart on the same port fails for ~60 s: the stopped server's closed
    connections sit in TIME_WAIT and a plain ``bind`` reports the port as taken.
    """

    class ReuseAddrConfig(milvus.MilvusServerConfig):  # type: ignore[misc,name-defined]
        def try_bind_port(self, port: int) -> socket.socket | None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                sock.close()
                return None
            return sock

    return ReuseAddrConfig


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the engine process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def stop_orphan(data_dir: Path, timeout: float = 30.0) -> int | None:
    """Stop a server an earlier, killed engine left running on ``data_dir``; returns its pid, or None.

    Its record (:data:`STATE_FILE`) names the pid and binary; the pid must still run that binary,
    so a recycled pid is never signalled. The engine locks its run directory, so no live engine
    can be using a server found this way.
    """
    path = Path(data_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        pid, exe = int(state["pid"]), str(state["exe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if exe not in _pid_cmdline(pid):
        path.unlink(missing_ok=True)
        return None
    owner = state.get("engine_pid")
    if isinstance(owner, int) and owner != os.getpid() and pid_alive(owner):
        # Not an orphan: the engine that started it still runs (a run in progress). Never harm it.
        raise EngineError(
            f"a run is in progress in {Path(data_dir).parent}: its Milvus server (pid {pid}) belongs to "
            f"pid {owner}; try again when it ends"
        )
    log.warning("milvus: stopping a server (pid %d) left running by an earlier, interrupted command", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while exe in _pid_cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if exe in _pid_cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while exe in _pid_cmdline(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.2)
    path.unlink(missing_ok=True)
    return pid


def running_server_uri(data_dir: Path) -> str | None:
    """URI of the server another engine runs on ``data_dir`` (recorded in :data:`STATE_FILE`), else None.

    How a reader (``engine search``/``assign``/``serve``) uses a run's server while the run holds the
    directory, instead of starting a second server on the same data (which kills the first).
    """
    try:
        state = json.loads((Path(data_dir) / STATE_FILE).read_text())
        pid, exe, port = int(state["pid"]), str(state["exe"]), int(state["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if exe not in _pid_cmdline(pid):
        return None
    return f"http://{state.get('host') or '127.0.0.1'}:{port}"


def http_health(url: str, timeout: float = 2.0) -> bool:
    """True when Milvus's ``/healthz`` endpoint answers ``OK``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback/http by design)
            return resp.status == 200 and "OK" in resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def grpc_ping(uri: str, token: str | None = None, timeout: float = 5.0) -> str | None:
    """Connect with pymilvus and return the server version, or None when it does not answer.

    The token is passed to pymilvus only; it never appears in a message we produce.
    """
    try:
        from pymilvus import MilvusClient  # noqa: PLC0415
    except ImportError:
        return None
    logs.apply()  # pymilvus set its own log levels when it was imported
    kwargs: dict[str, Any] = {"uri": uri, "timeout": timeout}
    if token:
        kwargs["token"] = token
    try:
        client = MilvusClient(**kwargs)
    except Exception:  # noqa: BLE001 -- any failure means "not reachable yet"
        return None
    try:
        return str(client.get_server_version())
    except Exception:  # noqa: BLE001
        return None
    finally:
        with contextlib.suppress(Exception):
            client.close()


class LocalMilvusServer:
    """Start, health-check and stop one standalone Milvus server from the ``milvus`` package.

    Parameters
    ----------
    data_dir:
        Folder for the server's config, logs, etcd, rocksmq and segment data. Data persists
        across stop/start on the same folder.
    port:
        gRPC port (the URI's port). ``0`` picks a free port.
    health_port:
        HTTP port of ``/healthz`` and metrics; ``None`` picks the first free port from 9091.
    start_timeout:
        Seconds to wait for health before giving up (first start ≈7 s, restart ≈5 s on 2 cores).
    session_ttl:
        Milvus ``common.session.ttl`` (default there: 30 s). After a restart, flushes fail until
        the previous DataNode's session expires; 10 s makes a restart usable ≈20 s sooner.
    settings:
        Extra ``milvus.yaml`` keys (dotted), applied over :data:`SERVER_SETTINGS`.

    Attributes set by ``start()``: ``port_``, ``health_port_``, ``pid_``, ``started_s_``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        health_port: int | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        alias: str | None = None,
        session_ttl: int = 10,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self.port = port
        self.health_port = health_port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.alias = alias
        self.session_ttl = session_ttl
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._log_files: list[Any] = []
        self.port_: int | None = None
        self.health_port_: int | None = None
        self.pid_: int | None = None
        self.started_s_: float | None = None
        self.alias_: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:PORT`` -- what ``MilvusClient(uri=...)`` and ``--milvus-uri`` take."""
        if self.port_ is None:
            raise EngineError("the Milvus server is not started: call start() first")
        return f"http://{self.host}:{self.port_}"

    @property
    def health_url(self) -> str:
        if self.health_port_ is None:
            raise EngineError("the Milvus server is not started: call start() first")
        return f"http://{self.host}:{self.health_port_}/healthz"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The server process's exit status once it stopped (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def log_dir(self) -> Path:
        return Path(self.data_dir).resolve() / "logs"

    @property
    def pid_file(self) -> Path | None:
        """The pid file the binary writes for this server (None before start)."""
        if self.alias_ is None:
            return None
        for run_dir in RUN_DIRS:
            path = run_dir / f"standalone-{self.alias_}.pid"
            if path.exists():
                return path
        return RUN_DIRS[0] / f"standalone-{self.alias_}.pid"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalMilvusServer:
        """Start the server and block until ``/healthz`` says OK and a gRPC call answers."""
        if self.running:
            return self
        milvus = _import_milvus()
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise EngineError(f"port must be an integer in 0..65535, got {self.port!r}")
        base = Path(self.data_dir).expanduser().resolve()
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(f"cannot create the Milvus data_dir {base}: {exc}") from exc

        stop_orphan(base)
        with _start_lock(self.start_timeout + 30):
            port = self.port or random_free_ports(1)[0]
            if not _can_bind(self.host, port):
                raise EngineError(
                    f"port {port} is already in use: is another Milvus running there? "
                    f"Use its uri http://{self.host}:{port}, or pick another port"
                )
            health_port = self.health_port or free_port(DEFAULT_HEALTH_PORT)
            if self.health_port and not _can_bind(self.host, health_port):
                raise EngineError(f"health_port {health_port} is already in use")

            config_cls = _reuse_addr_config(milvus)
            ports = self._internal_ports(base, config_cls, exclude={port, health_port})
            etcd_client, etcd_peer = ports.pop("etcd_client"), ports.pop("etcd_peer")
            config = config_cls(data_dir=str(base), proxy_port=port, **ports)
            # a restarted server waits for the old sessions to expire before reassigning channels
            config.set("common.session.ttl", int(self.session_ttl))
            for key, value in self.settings.items():
                config.set(key, value)
            try:
                config.resolve()  # checks the ports and writes configs/milvus.yaml
            except RuntimeError as exc:
                raise EngineError(f"cannot configure the Milvus server in {base}: {exc}") from exc
            # Private API of the `milvus` package (no public way to unpack its bundled binary without
            # also starting it): kept only here, and pyproject.toml pins milvus==2.3.5 exactly.
            milvus._initialize_data_files(str(base))  # unpacks the bundled binary once (md5-cached)

            exe = base / "bin" / "milvus"
            etcd_config = self._write_etcd_config(base, etcd_client, etcd_peer)
            self.alias_ = self.alias or f"engine{port}"
            env = os.environ.copy()
            env.update(
                {
                    "DEPLOY_MODE": "STANDALONE",
                    "METRICS_PORT": str(health_port),
                    "MILVUS_RUN_DIR": str(base / "run"),
                    "ETCD_CONFIG_PATH": str(etcd_config),
                    "LD_LIBRARY_PATH": ":".join(
                        p for p in (str(exe.parent), os.environ.get("LD_LIBRARY_PATH", "")) if p
                    ),
                }
            )
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._close_logs()
            stdout = open(self.log_dir / "milvus-stdout.log", "ab")  # noqa: SIM115 -- closed in stop()
            stderr = open(self.log_dir / "milvus-stderr.log", "ab")  # noqa: SIM115
            self._log_files = [stdout, stderr]
            t0 = time.monotonic()
            self._proc = subprocess.Popen(  # noqa: S603 -- the binary shipped in the milvus wheel
                [str(exe), "run", "standalone", "-alias", self.alias_],
                cwd=str(base),
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # Ctrl+C in the terminal reaches us, and we stop it gracefully
                # A killed engine must not leave it running. Linux ties this to the *thread* that forks,
                # so only from the main thread (a server started in a worker thread would die with it).
                preexec_fn=_die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,  # noqa: PLW1509
            )
            self.port_, self.health_port_, self.pid_ = port, health_port, self._proc.pid
            self._start_watchdog(str(exe))
            (base / STATE_FILE).write_text(
                json.dumps(
                    {
                        "pid": self.pid_,
                        "port": port,
                        "health_port": health_port,
                        "exe": str(exe),
                        "engine_pid": os.getpid(),
                        "host": self.host,
                    }
                )
            )
            atexit.register(self.stop)
            log.info(
                "starting Milvus %s (pid %d) on %s, data in %s", milvus.__version__, self.pid_, self.uri, base
            )
            try:
                self.wait_healthy(self.start_timeout)
            except BaseException:
                self.stop()
                raise
        self.started_s_ = time.monotonic() - t0
        log.info("Milvus ready at %s after %.1f s", self.uri, self.started_s_)
        return self

    def _start_watchdog(self, exe: str) -> None:
        """A separate process that stops the server once this process is gone (see engine/milvus/watchdog.py).

        Its stdin is a pipe only this process writes to; the kernel closes it however we end.
        """
        assert self._proc is not None
        self._watchdog = subprocess.Popen(  # noqa: S603 -- our own script, our own interpreter
            [sys.executable, str(Path(__file__).with_name("watchdog.py")), str(self._proc.pid), exe,
             str(ORPHAN_GRACE_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # neither Ctrl+C nor a kill of our process group ends the watch
        )  # fmt: skip

    def _stop_watchdog(self) -> None:
        """Close the pipe after the server stopped: the watchdog finds it gone and exits."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        with contextlib.suppress(OSError):
            watchdog.stdin.close()  # type: ignore[union-attr]
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(timeout=5)

    def _internal_ports(self, base: Path, config_cls: Any, exclude: set[int]) -> dict[str, int]:
        """Ports of etcd and the coordinators/nodes, kept in ``configs/engine-ports.json``.

        A restart on the same data_dir must reuse them: etcd keeps each component's session
        address, and with new ports the restarted proxy dials the old ones until the sessions
        expire (measured: inserts failed with "failed to connect 192.0.2.2:<old port>").
        """
        keys = ["etcd_client", "etcd_peer"] + [
            k for k in config_cls().configurable_items if k.endswith("_port") and k != "proxy_port"
        ]
        path = base / "configs" / "engine-ports.json"
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = {k: int(v) for k, v in json.loads(path.read_text()).items()}
            if set(saved) == set(keys) and all(
                p not in exclude and _can_bind(self.host, p) for k, p in saved.items() if k != "etcd_port"
            ):
                return saved
        ports = dict(zip(keys, random_free_ports(len(keys), exclude=exclude), strict=True))
        if "etcd_port" in ports:
            ports["etcd_port"] = ports["etcd_client"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports, indent=1))
        return ports

    def _write_etcd_config(self, base: Path, client_port: int, peer_port: int) -> Path:
        """Embedded etcd listens on 2379/2380 by default: give it free ports so servers can coexist."""
        path = base / "configs" / "embedEtcd.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        client = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        path.write_text(
            "name: default\n"
            f"listen-client-urls: {client}\n"
            f"advertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\n"
            f"initial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
            "quota-backend-bytes: 4294967296\n"
            "auto-compaction-mode: revision\n"
            "auto-compaction-retention: '1000'\n"
        )
        return path

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``/healthz`` then a gRPC version call until both answer, or raise EngineError."""
        deadline = time.monotonic() + timeout
        healthy = False
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EngineError(
                    f"the Milvus server exited with code {self._proc.returncode} while starting; "
                    f"last log lines: {self.tail_log()}"
                )
            if not healthy:
                healthy = http_health(self.health_url)
            if healthy and grpc_ping(self.uri, timeout=3.0) is not None:
                return
            time.sleep(0.2)
        raise EngineError(
            f"the Milvus server at {self.uri} was not healthy after {timeout:.0f} s "
            f"(logs in {self.log_dir}); last log lines: {self.tail_log()}"
        )

    def is_healthy(self) -> bool:
        return self.running and http_health(self.health_url)

    def release_collections(self, timeout: float = 10.0) -> None:
        """Release every loaded collection, so the query node has nothing to hand over when it stops."""
        from pymilvus import MilvusClient  # noqa: PLC0415

        with contextlib.suppress(Exception):
            client = MilvusClient(uri=self.uri, timeout=timeout)
            try:
                for name in client.list_collections():
                    with contextlib.suppress(Exception):
                        client.release_collection(name, timeout=timeout)
            finally:
                client.close()

    def stop(self) -> None:
        """Release collections, SIGTERM, wait ``stop_timeout`` for a clean shutdown, then SIGKILL."""
        if self.running and self.port_ is not None:
            self.release_collections()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                proc.wait(timeout=self.stop_timeout)
                log.info("Milvus (pid %d) stopped cleanly in %.1f s", proc.pid, time.monotonic() - t0)
            except subprocess.TimeoutExpired:
                log.warning("Milvus (pid %d) did not stop in %.0f s: killing it", proc.pid, self.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        self._stop_watchdog()
        if proc is not None:
            self._cleanup_run_files(proc.pid)
            with contextlib.suppress(OSError):
                (Path(self.data_dir).expanduser().resolve() / STATE_FILE).unlink()
        self._close_logs()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def restart(self, wait_ready: float = 120.0) -> LocalMilvusServer:
        """Stop and start again on the same data_dir and ports (used to test resume).

        ``wait_ready`` > 0: also wait until every existing collection can be flushed. After a
        restart the data coordinator still assigns each collection's channels to the previous
        DataNode; flushes fail with "node not match" until it reassigns them (measured ≈25 s on
        2 cores), while inserts and searches already work.
        """
        port, health_port = self.port_, self.health_port_
        self.stop()
        saved = self.port, self.health_port
        self.port, self.health_port = port or self.port, health_port or self.health_port
        # the old listener may linger a moment in the kernel after exit
        deadline = time.monotonic() + 20
        while self.port and not _can_bind(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            self.start()
        finally:
            self.port, self.health_port = saved
        if wait_ready > 0:
            self.wait_flushable(wait_ready)
        return self

    def wait_flushable(self, timeout: float) -> None:
        """Poll ``flush`` on every collection until all succeed (see :meth:`restart`)."""
        from pymilvus import MilvusClient  # noqa: PLC0415

        client = MilvusClient(uri=self.uri, timeout=10)
        deadline = time.monotonic() + timeout
        try:
            pending = list(client.list_collections())
            while pending and time.monotonic() < deadline:
                try:
                    client.flush(pending[0], timeout=max(1.0, deadline - time.monotonic()))
                    pending.pop(0)
                except Exception:  # noqa: BLE001 -- "node not match" until channels are reassigned
                    time.sleep(1.0)
            if pending:
                raise EngineError(
                    f"Milvus at {self.uri} restarted but cannot flush {pending[0]!r} after {timeout:.0f} s"
                )
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def tail_log(self, lines: int = 5) -> str:
        """Last error-ish lines of the server's stdout/stderr logs (for error messages)."""
        texts: list[str] = []
        for name in ("milvus-stderr.log", "milvus-stdout.log"):
            path = self.log_dir / name
            with contextlib.suppress(OSError):
                texts.extend(path.read_text(errors="replace").splitlines()[-200:])
        picked = [t for t in texts if re.search(r"error|fatal|panic|running|fail", t, re.I)] or texts
        return " | ".join(t.strip()[:300] for t in picked[-lines:]) or "(no log output)"

    def _cleanup_run_files(self, pid: int) -> None:
        for run_dir in RUN_DIRS:
            for name in (f"server_id_{pid}", f"standalone-{self.alias_}.pid"):
                with contextlib.suppress(OSError):
                    (run_dir / name).unlink()

    def _close_logs(self) -> None:
        for fh in self._log_files:
            with contextlib.suppress(OSError):
                fh.close()
        self._log_files = []

    def __enter__(self) -> LocalMilvusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.uri}" if self.running else "stopped"
        return f"LocalMilvusServer(data_dir={str(self.data_dir)!r}, {state})"


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.milvus.server --data-dir DIR [--port 19530]``: serve until Ctrl+C / SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.milvus.server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", required=True, help="folder for the server's data, logs and config")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0 = any free port)")
    parser.add_argument(
        "--health-port", type=int, default=None, help="HTTP /healthz port (default: 9091 or next free)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = LocalMilvusServer(
        args.data_dir, port=args.port, health_port=args.health_port, start_timeout=args.timeout
    )
    try:
        server.start()
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Milvus ready: {server.uri}  (health {server.health_url}, pid {server.pid_})", flush=True)
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop["now"] and server.running:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
