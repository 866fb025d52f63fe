"""Connect to the Ray cluster of ``--ray`` (or start one on this machine) and say what it offers."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.distributed.address import check_reachable, resolve
from engine.errors import EngineError

log = logging.getLogger("engine")

#: Seconds a remote cluster has to answer (the TCP check, then ray.init) before the run stops.
CONNECT_TIMEOUT_S = 20.0


def import_ray() -> Any:
    """The ``ray`` module; EngineError with the install command when the extra is missing."""
    try:
        import ray
        import ray.data  # noqa: F401 - the embedding stream needs Ray Data, not only Ray core
    except ImportError:
        raise EngineError("--ray needs Ray Data: pip install 'engine[ray]' (ray[data]==2.60.*)") from None
    return ray


@dataclass
class ClusterInfo:
    """What the cluster offers (alive nodes) and what the engine will run on it."""

    address: str
    nodes: list[dict[str, Any]]
    cpus: float
    gpus: float

    def replicas(self, requested: int | None = None) -> int:
        """Model replicas of the embedding actor pool: one per GPU, else one per CPU (at least 1)."""
        if requested:
            return int(requested)
        return max(1, int(self.gpus) if self.gpus >= 1 else int(self.cpus))

    def plan(self, requested: int | None = None) -> str:
        per = "GPU" if self.gpus >= 1 else "CPU"
        return (
            f"{self.replicas(requested)} model replica(s), 1 {per} each (embedding actor pool); "
            f"graph searches as Ray tasks of 1 CPU"
        )

    def to_dict(self, requested: int | None = None) -> dict[str, Any]:
        return {
            "address": self.address,
            "nodes": self.nodes,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "replicas": self.replicas(requested),
            "plan": self.plan(requested),
        }


def describe(ray: Any, address: str) -> ClusterInfo:
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive", False):
            continue
        res = node.get("Resources", {})
        nodes.append(
            {
                "address": node.get("NodeManagerAddress"),
                "cpus": float(res.get("CPU", 0)),
                "gpus": float(res.get("GPU", 0)),
                "memory_gb": round(float(res.get("memory", 0)) / 2**30, 1),
                "head": "node:__internal_head__" in res,
            }
        )
    return ClusterInfo(
        address=address,
        nodes=nodes,
        cpus=sum(n["cpus"] for n in nodes),
        gpus=sum(n["gpus"] for n in nodes),
    )


@contextlib.contextmanager
def ray_cluster(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[ClusterInfo]:
    """Connected to the cluster for the duration of the block (``local``: a cluster this process starts).

    An address where nothing answers is one EngineError within ``timeout`` seconds.
    """
    target = resolve(address)
    if (
        target != "local"
    ):  # bound Ray's own connect retries (~20 s GCS, 3 x 5..20 s Ray client) to the timeout
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(int(timeout // 2)))
        os.environ.setdefault("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "2")
    ray = import_ray()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict[str, Any] = dict(
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        configure_logging=False,
        ignore_reinit_error=True,
    )
    if ray.is_initialized():  # a caller (benchmark, notebook) already connected: use that cluster
        yield describe(ray, target)
        return
    if target == "local":
        log.info("ray: starting a local cluster on this machine")
        ray.init(**kwargs)
    else:
        check_reachable(target, timeout=timeout / 2)
        log.info("ray: connecting to %s", target)
        try:
            ray.init(address=target, **kwargs)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, gRPC errors
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise EngineError(
                f"--ray {address}: could not join the Ray cluster at {target} ({first})"
            ) from None
    try:
        info = describe(ray, target)
        log.info(
            "ray: %d node(s), %g CPUs, %g GPUs",
            len(info.nodes),
            info.cpus,
            info.gpus,
        )
        yield info
    finally:
        ray.shutdown()
