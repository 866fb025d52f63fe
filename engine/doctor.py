"""``engine doctor``: what this machine offers, and what every ``auto`` will choose.

Why: a run's speed is decided by facts users rarely check (is torch a CUDA build? does the CPU
have avx512_bf16? is cuML importable? which index types does *their* Milvus accept?). One
command prints them, and the same dict (``doctor()``) lets tests and bug reports capture them.
Nothing here raises on a missing or broken component: it is reported instead. A Milvus token is
passed to the client only and never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from typing import Any

from engine import __version__, hardware
from engine.errors import EngineError
from engine.milvus.client import redact


def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a probe; a failure becomes ``{"error": "..."}`` instead of an exception."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- doctor reports, it does not fail
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


# --------------------------------------------------------------------------------------------- milvus
def milvus_info() -> dict[str, Any]:
    """Client, Milvus Lite and the standalone server package: installed versions."""
    from engine.milvus.server import milvus_server_version

    lite_version = hardware.package_version("milvus-lite")
    lite_ok = hardware.importable("milvus_lite")
    return {
        "pymilvus": hardware.package_version("pymilvus"),
        "milvus_lite": {"importable": lite_ok, "version": lite_version},
        "server_package": {
            "installed": milvus_server_version() is not None,
            "version": milvus_server_version(),
        },
    }


def probe_milvus(
    uri: str, token: str | None = None, probe_indexes: bool = True, timeout: float = 10.0
) -> dict[str, Any]:
    """Reach a Milvus at ``uri``: server version and which index types it builds and searches.

    The index probe is the one ``engine bench-index`` uses (:func:`engine.milvus.probe.probe_support`):
    each type is built on a small throw-away collection and searched. Types this server version is
    known to accept but never finish building are listed apart, without trying them.
    """
    from engine.milvus.client import is_lite_uri, mask_uri, short_error
    from engine.timeouts import run_with_timeout

    shown = mask_uri(uri)
    out: dict[str, Any] = {"uri": shown, "token_given": bool(token)}
    if is_lite_uri(uri):
        out.update(
            kind="lite", reachable=os.path.exists(uri), note="a local path means Milvus Lite (a .db folder)"
        )
        return out
    out["kind"] = "server"
    try:
        from engine.milvus.probe import NEVER_FINISHES, probe_support
        from engine.milvus.store import MilvusStore
    except ImportError as exc:
        out.update(reachable=False, error=f"pymilvus is not installed ({exc})")
        return out
    store = MilvusStore(uri, token=token, collection="engine_doctor", max_retries=0, timeout=timeout)
    status, value = run_with_timeout(lambda: store.client, timeout + 5)
    if status != "ok":
        reason = "no answer" if status == "timeout" else redact(short_error(value), token)  # type: ignore[arg-type]
        out.update(reachable=False, error=f"cannot reach Milvus at {shown}: {reason}")
        return out
    try:
        out["reachable"] = True
        out["server_version"] = _safe(store.client.get_server_version)
        if not probe_indexes:
            return out
        from engine.milvus.indexes import SERVER_INDEX_TYPES

        support = probe_support(
            store,
            SERVER_INDEX_TYPES,
            timeout=timeout,
            use_cache=False,
            collection_prefix="engine_doctor_probe",
        )
        out["index_types_accepted"] = [t for t, why in support.items() if why is None]
        hangs = [t for t, why in support.items() if why == NEVER_FINISHES]
        if hangs:
            out["index_types_build_hangs"] = hangs
        out["index_types_refused"] = {
            t: redact(why, token)[:160] for t, why in support.items() if why is not None and t not in hangs
        }
        out["index_probe"] = "each type built on a 2,048-row collection and searched (engine.milvus.probe)"
    except Exception as exc:  # noqa: BLE001
        out["error"] = redact(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], token)
    finally:
        with contextlib.suppress(Exception):
            store.close()
    return out


# --------------------------------------------------------------------------------------------- auto
def auto_choices(cuda: bool, cuml_ok: bool) -> dict[str, Any]:
    """What ``auto`` resolves to per stage, asking the stage modules themselves where they can."""
    out: dict[str, Any] = {}
    try:
        from engine.embed.fastloop import dtype_name, resolve_devices, resolve_dtype

        devices = resolve_devices("auto")
        out["embedding"] = {
            "device": ",".join(devices),
            "precision": dtype_name(resolve_dtype("auto", devices[0])),
        }
    except Exception as exc:  # noqa: BLE001
        bf16 = hardware.cpu_supports_bf16()
        out["embedding"] = {
            "device": "cuda" if cuda else "cpu",
            "precision": "bf16" if (cuda or bf16) else "fp32",
            "note": f"engine.embed unavailable ({type(exc).__name__})",
        }
    try:
        from engine.graph.exact import resolve_device

        exact_device = resolve_device("auto")
    except Exception:  # noqa: BLE001
        exact_device = "cuda" if cuda else "cpu"
    from engine.milvus.embedded import AUTO_SERVER_MIN_DOCS, local_server_available
    from engine.milvus.indexes import AUTO_FLAT_MAX_DOCS

    server = (
        "the engine-run local server" if local_server_available() else "Milvus Lite (no `milvus` package)"
    )
    out["graph"] = {
        "source": "auto: milvus search below 100k documents; from 100k exact search on a CUDA GPU, else the "
        "partitioned join of the stored vectors (--graph-source milvus|partition|exact)",
        "milvus": f"Milvus Lite file up to {AUTO_SERVER_MIN_DOCS // 1000}k documents, {server} above",
        "index": f"auto: FLAT up to {AUTO_FLAT_MAX_DOCS // 1000}k documents, HNSW above; ef/nprobe tuned to "
        "recall@k >= 0.97 on a sample",
        "exact_knn_device": exact_device,
    }
    try:
        from engine.cluster.gpu import CUML_MODULE

        cluster_cuml = hardware.cuml_usable(CUML_MODULE)
    except Exception:  # noqa: BLE001 -- the cluster stage missing or broken: same rule as engine.hardware
        cluster_cuml = cuml_ok
    out["cluster"] = {
        # the default cluster space runs on the CPU everywhere; the backend picks --cluster-space graph's
        "method": "node embedding of the kNN graph + cluster layers (EVoC stages, CPU)",
        "backend": "cuml" if cluster_cuml else "cpu",
        "graph_space": "cuML HDBSCAN" if cluster_cuml else "HDBSCAN* on the kNN graph (Boruvka MST)",
    }
    try:
        import numpy as np

        from engine.project import resolve_backend

        out["umap"] = {"backend": resolve_backend("auto", np.zeros((1, 1), np.float32))}
    except Exception:  # noqa: BLE001
        out["umap"] = {"backend": "cuml" if cuml_ok else "cpu"}
    return out


def ray_info(address: str) -> dict[str, Any]:
    """``--ray ADDRESS``: the cluster's nodes, CPUs and GPUs, and what ``engine run --ray`` would run there."""
    from engine.distributed.cluster import ray_cluster
    from engine.distributed.embed import EMBED_RESOURCES_NOTE

    with ray_cluster(address) as info:
        out = info.to_dict()
    out["per_replica"] = EMBED_RESOURCES_NOTE
    return out


def doctor(
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
    probe_indexes: bool = True,
    ray: str | None = None,
) -> dict[str, Any]:
    """Collect the report as a JSON-able dict (the token itself is never included)."""
    t0 = time.perf_counter()
    machine = _safe(hardware.gpu_summary)
    cuda = bool(isinstance(machine, dict) and machine.get("torch", {}).get("cuda_available"))
    cuml_ok = bool(_safe(hardware.cuml_usable) is True)
    report: dict[str, Any] = {
        "engine": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "hardware": machine,
        "cuda": cuda,
        "libraries": {
            name: hardware.package_version(dist)
            for name, dist in (
                ("numpy", "numpy"),
                ("FlagEmbedding", "FlagEmbedding"),
                ("transformers", "transformers"),
                ("sentence-transformers", "sentence-transformers"),
                ("fast_hdbscan", "fast_hdbscan"),
                ("hdbscan", "hdbscan"),
                ("umap-learn", "umap-learn"),
                ("numba", "numba"),
            )
        },
        "milvus": _safe(milvus_info),
        "auto": _safe(auto_choices, cuda, cuml_ok),
    }
    if milvus_uri:
        report["milvus"]["target"] = _safe(probe_milvus, milvus_uri, milvus_token, probe_indexes)
    if ray:
        report["ray"] = _safe(ray_info, ray)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


# --------------------------------------------------------------------------------------------- printing
def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines for the terminal."""
    lines: list[str] = [
        f"engine {report.get('engine')}  python {report.get('python')}  {report.get('platform')}"
    ]
    hw = report.get("hardware", {})
    torch_i = hw.get("torch", {}) if isinstance(hw, dict) else {}
    lines.append("")
    lines.append("Hardware")
    cuda_build = torch_i.get("cuda_build") or "CPU-only build"
    lines.append(f"  torch            {torch_i.get('version')} (CUDA: {cuda_build})")
    devices = hw.get("cuda_devices") or []
    if devices:
        for d in devices:
            free = f", {d['free_gib']} GiB free" if d.get("free_gib") is not None else ""
            lines.append(
                f"  cuda:{d['index']}           {d['name']} (sm {d['capability']}, {d['total_gib']} GiB{free}, "
                f"bf16 {'yes' if d['bf16'] else 'no'})"
            )
        if hw.get("nvidia_driver"):
            lines.append(f"  nvidia driver    {hw['nvidia_driver']}")
    else:
        lines.append("  CUDA             no CUDA device visible to torch")
    cupy = hw.get("cupy", {})
    cuml = hw.get("cuml", {})
    lines.append(f"  cupy             {cupy.get('version') if cupy.get('installed') else 'not installed'}")
    lines.append(f"  cuML             {cuml.get('version') if cuml.get('installed') else 'not installed'}")
    cpu = hw.get("cpu", {})
    flags = ", ".join(cpu.get("bf16_flags") or []) or "none"
    lines.append(f"  CPU              {cpu.get('model')} ({report.get('cpu_count')} cpus)")
    lines.append(f"  CPU bf16         {'yes' if cpu.get('bf16') else 'no'} (flags: {flags})")
    lines.append("")
    lines.append("Libraries")
    for name, version in (report.get("libraries") or {}).items():
        lines.append(f"  {name:<16} {version or 'not installed'}")
    mv = report.get("milvus", {})
    lines.append("")
    lines.append("Milvus")
    lines.append(f"  pymilvus         {mv.get('pymilvus')}")
    lite = mv.get("milvus_lite", {})
    lines.append(f"  Milvus Lite      {lite.get('version') if lite.get('importable') else 'not importable'}")
    srv = mv.get("server_package", {})
    srv_text = (
        f"{srv.get('version')} (engine.milvus.server.LocalMilvusServer)"
        if srv.get("installed")
        else "not installed"
    )
    lines.append(f"  server package   {srv_text}")
    target = mv.get("target")
    if target:
        if target.get("reachable"):
            lines.append(f"  {target['uri']}: reachable, version {target.get('server_version')}")
            if "index_types_accepted" in target:
                lines.append(f"    accepts        {', '.join(target['index_types_accepted'])}")
                refused = ", ".join(target.get("index_types_refused", {})) or "none"
                lines.append(f"    refuses        {refused}")
                if target.get("index_types_build_hangs"):
                    hangs = ", ".join(target["index_types_build_hangs"])
                    lines.append(f"    never finish   {hangs} (accepted, but the build loops; measured)")
        else:
            lines.append(f"  {target.get('uri')}: NOT reachable: {target.get('error') or target.get('note')}")
    auto = report.get("auto", {})
    lines.append("")
    lines.append("What 'auto' chooses here")
    emb = auto.get("embedding", {})
    lines.append(f"  embedding        {emb.get('device')} / {emb.get('precision')}")
    graph = auto.get("graph", {})
    lines.append(f"  graph            {graph.get('source')}; exact kNN on {graph.get('exact_knn_device')}")
    lines.append(f"  embedded Milvus  {graph.get('milvus')}")
    lines.append(f"  Milvus index     {graph.get('index')}")
    cl = auto.get("cluster", {})
    lines.append(f"  clustering       {cl.get('method')}")
    lines.append(f"  --cluster-space graph  {cl.get('graph_space')}")
    lines.append(f"  UMAP             {auto.get('umap', {}).get('backend')}")
    ray = report.get("ray")
    if ray:
        lines.append("")
        lines.append("Ray cluster (--ray)")
        if "error" in ray:
            lines.append(f"  NOT usable: {ray['error']}")
        else:
            lines.append(f"  address          {ray.get('address')}")
            for node in ray.get("nodes", []):
                head = " (head)" if node.get("head") else ""
                lines.append(
                    f"  node {node.get('address')}{head}: {node.get('cpus'):g} CPUs, {node.get('gpus'):g} GPUs, "
                    f"{node.get('memory_gb')} GiB"
                )
            lines.append(f"  total            {ray.get('cpus'):g} CPUs, {ray.get('gpus'):g} GPUs")
            lines.append(f"  engine would run {ray.get('plan')}")
    lines.append("")
    lines.append(f"({report.get('seconds')} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``engine doctor [--milvus-uri URI] [--milvus-token TOKEN] [--json] [--no-index-probe]``."""
    parser = argparse.ArgumentParser(
        prog="engine doctor", description="what this machine offers and what 'auto' chooses"
    )
    parser.add_argument(
        "--milvus-uri", default=None, help="also check this Milvus (default: $MILVUS_URI if set)"
    )
    parser.add_argument(
        "--milvus-token", default=None, help="token user:password (default: $MILVUS_TOKEN); never printed"
    )
    parser.add_argument(
        "--no-index-probe", action="store_true", help="skip asking the server which index types it accepts"
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="also describe this Ray cluster (auto, local, ray://HOST:10001, HOST:6379): nodes, GPUs, CPUs and "
        "what `engine run --ray` would run there",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    uri = args.milvus_uri or os.environ.get("MILVUS_URI") or None
    token = args.milvus_token or os.environ.get("MILVUS_TOKEN") or None
    try:
        if args.ray is not None:
            from engine.distributed.address import check_address

            args.ray = check_address(args.ray)
        report = doctor(uri, token, probe_indexes=not args.no_index_probe, ray=args.ray)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, default=str) if args.json else format_report(report)
    print(redact(text, token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
