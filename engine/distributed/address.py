"""``--ray ADDRESS`` and the Milvus it needs: checked with the other options (engine.config), before anything runs."""

from __future__ import annotations

import os
import socket

from engine.errors import EngineError

#: ``--ray auto``: the cluster named by this variable (Ray's own convention).
RAY_ADDRESS_ENV = "RAY_ADDRESS"
#: Port of a Ray client server (``ray://HOST``) and of a cluster's GCS (``HOST``) when none is given.
CLIENT_PORT = 10001
GCS_PORT = 6379


def check_address(value: str) -> str:
    """``auto``, ``local``, ``ray://HOST[:PORT]`` or ``HOST:PORT``; EngineError naming the flag otherwise."""
    text = str(value).strip()
    if text.lower() in ("auto", "local"):
        return text.lower()
    if not text:
        raise EngineError("--ray must be auto, local, ray://HOST:PORT or HOST:PORT, got an empty value")
    rest = text[len("ray://") :] if text.startswith("ray://") else text
    if "://" in rest:
        raise EngineError(
            f"--ray {text!r}: unknown scheme {rest.split('://', 1)[0]!r} (use auto, local, ray://HOST:PORT "
            "or HOST:PORT)"
        )
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host or "/" in host or " " in host:
        raise EngineError(f"--ray {text!r}: expected auto, local, ray://HOST:PORT or HOST:PORT")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise EngineError(f"--ray {text!r}: the port must be a number in 1..65535")
    if not port and not text.startswith("ray://"):
        raise EngineError(f"--ray {text!r}: give the cluster's port (HOST:6379, or ray://HOST:10001)")
    return text


def check_milvus_for_ray(milvus_uri: str | None) -> None:
    """Ray workers write Milvus from many processes (and machines): Milvus Lite cannot take that."""
    from engine.milvus.client import is_lite_uri
    from engine.milvus.embedded import LOCAL_SERVER_URI

    if milvus_uri == LOCAL_SERVER_URI or (milvus_uri and not is_lite_uri(milvus_uri)):
        return
    given = f"--milvus-uri {milvus_uri}" if milvus_uri else "the default Milvus (a Lite file DIR/milvus.db)"
    raise EngineError(
        f"--ray needs a Milvus that many processes write, and {given} is Milvus Lite, a single-process file: "
        f"pass --milvus-uri {LOCAL_SERVER_URI} (a standalone server on this machine) or a server URI "
        "(http://HOST:19530, Milvus distributed, Zilliz Cloud)"
    )


def resolve(address: str) -> str:
    """What ``ray.init`` gets: ``local``, or the address (``auto`` read from $RAY_ADDRESS)."""
    if address == "auto":
        env = os.environ.get(RAY_ADDRESS_ENV, "").strip()
        if not env:
            raise EngineError(
                f"--ray auto: ${RAY_ADDRESS_ENV} is not set; set it to the cluster's address "
                "(ray://HOST:10001 or HOST:6379), or pass --ray local to start a cluster on this machine"
            )
        return check_address(env)
    return address


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of a resolved address other than ``local``."""
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return host.strip("[]"), int(port) if port else (CLIENT_PORT if client else GCS_PORT)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """The cluster's port accepts a TCP connection and answers gRPC (Ray's GCS and client server speak it)
    within ``timeout`` s; EngineError otherwise.

    Why first: ``ray.init`` against an address where nothing answers retries for minutes, and a port that
    accepts connections without being Ray (a proxy, another service) keeps it waiting too.
    """
    import time

    host, port = host_port(address)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise EngineError(_no_answer(address, host, port, reason)) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a TLS cluster: the plain-text gRPC probe below cannot speak to it; ray.init checks
    import grpc

    channel = grpc.insecure_channel(f"{host}:{port}", options=[("grpc.enable_http_proxy", 0)])
    try:
        grpc.channel_ready_future(channel).result(timeout=max(0.5, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
        raise EngineError(
            _no_answer(
                address, host, port, f"the port accepts connections but no gRPC answer within {timeout:g} s"
            )
        ) from None
    finally:
        channel.close()


def _no_answer(address: str, host: str, port: int, reason: str) -> str:
    return (
        f"--ray {address}: no Ray cluster answers at {host}:{port} ({reason}); start one (`ray start --head`), "
        "check the address, or pass --ray local"
    )
