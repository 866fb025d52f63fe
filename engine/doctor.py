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
import threading
import time
from typing import Any

from engine import __version__, hardware
from engine.errors import EngineError

#: Index types ``doctor`` asks a server about (GPU_* are only built by the ``-gpu`` Milvus image).
PROBE_INDEX_TYPES: tuple[str, ...] = (
    "FLAT",
    "IVF_FLAT",
    "IVF_SQ8",
    "IVF_PQ",
    "HNSW",
    "SCANN",
    "DISKANN",
    "AUTOINDEX",
    "GPU_BRUTE_FORCE",
    "GPU_IVF_FLAT",
    "GPU_IVF_PQ",
    "GPU_CAGRA",
)
#: Types this server version accepts in ``create_index`` but whose build then loops forever
#: (measured by benchmarks/server_index_support.py; results/server_index_support.json).
KNOWN_BUILD_HANGS: dict[str, tuple[str, ...]] = {"v2.3.5": ("DISKANN", "GPU_IVF_FLAT")}
_PROBE_PARAMS: dict[str, dict[str, Any]] = {
    "IVF_FLAT": {"nlist": 16},
    "IVF_SQ8": {"nlist": 16},
    "IVF_PQ": {"nlist": 16, "m": 4, "nbits": 8},
    "HNSW": {"M": 8, "efConstruction": 64},
    "SCANN": {"nlist": 16},
    "GPU_IVF_FLAT": {"nlist": 16},
    "GPU_IVF_PQ": {"nlist": 16, "m": 4, "nbits": 8},
    "GPU_CAGRA": {"intermediate_graph_degree": 32, "graph_degree": 16},
}


def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a probe; a failure becomes ``{"error": "..."}`` instead of an exception."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- doctor reports, it does not fail
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


def _with_timeout(fn: Any, timeout: float) -> tuple[str, Any]:
    """('ok', value) | ('error', message) | ('timeout', None); the worker thread is abandoned on timeout."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001
            box["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "timeout", None
    return ("error", box["error"]) if "error" in box else ("ok", box.get("value"))


# --------------------------------------------------------------------------------------------- milvus
def milvus_info() -> dict[str, Any]:
    """Client, Milvus Lite and the standalone server package: installed versions."""
    from engine.server import milvus_server_version

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


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def probe_milvus(
    uri: str, token: str | None = None, probe_indexes: bool = True, timeout: float = 10.0
) -> dict[str, Any]:
    """Reach a Milvus at ``uri``: server version and which index types ``create_index`` accepts.

    The index probe uses an empty throw-away collection, so it checks what the server's proxy
    validates; a type can still fail at build time (DISKANN on the pip ``milvus`` 2.3.5 server
    hangs: benchmarks/server_index_support.py builds each type on real data).
    """
    from engine.store import is_lite_uri, mask_uri

    shown = mask_uri(uri)
    out: dict[str, Any] = {"uri": shown, "token_given": bool(token)}
    if is_lite_uri(uri):
        out.update(
            kind="lite", reachable=os.path.exists(uri), note="a local path means Milvus Lite (a .db folder)"
        )
        return out
    out["kind"] = "server"
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError:
        out.update(reachable=False, error="pymilvus is not installed")
        return out
    kwargs: dict[str, Any] = {"uri": uri, "timeout": timeout}
    if token:
        kwargs["token"] = token
    status, client = _with_timeout(lambda: MilvusClient(**kwargs), timeout + 5)
    if status != "ok":
        reason = "no answer" if status == "timeout" else _redact(str(client), token)
        out.update(reachable=False, error=f"cannot reach Milvus at {shown}: {reason}")
        return out
    try:
        out["reachable"] = True
        out["server_version"] = _safe(client.get_server_version)
        if not probe_indexes:
            return out
        name = f"engine_doctor_probe_{os.getpid()}"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=16)
        with contextlib.suppress(Exception):
            client.drop_collection(name)
        client.create_collection(name, schema=schema)
        accepted, refused = [], {}
        try:
            for index_type in PROBE_INDEX_TYPES:

                def attempt(index_type: str = index_type) -> None:
                    ip = client.prepare_index_params()
                    params = _PROBE_PARAMS.get(index_type, {})
                    ip.add_index(
                        field_name="vector", index_type=index_type, metric_type="COSINE", params=params
                    )
                    client.create_index(name, ip, timeout=timeout)
                    for idx in client.list_indexes(name):
                        client.drop_index(name, idx)

                status, value = _with_timeout(attempt, timeout + 2)
                if status == "ok":
                    accepted.append(index_type)
                else:
                    refused[index_type] = (
                        "no answer" if status == "timeout" else _redact(str(value), token)[:160]
                    )
        finally:
            with contextlib.suppress(Exception):
                client.drop_collection(name)
        out["index_types_accepted"] = accepted
        version = str(out.get("server_version", ""))
        hangs = [
            t for prefix, types in KNOWN_BUILD_HANGS.items() if version.startswith(prefix) for t in types
        ]
        if hangs:
            out["index_types_build_hangs"] = [t for t in hangs if t in accepted]
        out["index_types_refused"] = refused
        out["index_probe"] = "create_index on an empty collection (proxy validation; builds may still fail)"
    except Exception as exc:  # noqa: BLE001
        out["error"] = _redact(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], token)
    finally:
        with contextlib.suppress(Exception):
            client.close()
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
    from engine.pipeline import AUTO_SERVER_MIN_DOCS, local_server_available

    server = (
        "the engine-run local server" if local_server_available() else "Milvus Lite (no `milvus` package)"
    )
    out["graph"] = {
        "source": "milvus (default; --graph-source exact for brute force)",
        "milvus": f"Milvus Lite file up to {AUTO_SERVER_MIN_DOCS // 1000}k documents, {server} above",
        "index": "auto: FLAT up to 50k documents, HNSW above; ef/nprobe tuned to recall@k >= 0.95 on a sample",
        "exact_knn_device": exact_device,
    }
    try:
        from engine.cluster.gpu import CUML_MODULE

        cluster_cuml = hardware.cuml_usable(CUML_MODULE)
    except Exception:  # noqa: BLE001 -- the cluster stage missing or broken: same rule as engine.hardware
        cluster_cuml = cuml_ok
    out["cluster"] = {
        "backend": "cuml" if cluster_cuml else "cpu",
        "cpu_library": "engine graph HDBSCAN on the kNN graph (Boruvka MST)",
    }
    try:
        import numpy as np

        from engine.project import resolve_backend

        out["umap"] = {"backend": resolve_backend("auto", np.zeros((1, 1), np.float32))}
    except Exception:  # noqa: BLE001
        out["umap"] = {"backend": "cuml" if cuml_ok else "cpu"}
    return out


def doctor(
    milvus_uri: str | None = None, milvus_token: str | None = None, probe_indexes: bool = True
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
        f"{srv.get('version')} (engine.server.LocalMilvusServer)" if srv.get("installed") else "not installed"
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
    lines.append(
        f"  HDBSCAN          {cl.get('backend')} ({cl.get('cpu_library') if cl.get('backend') == 'cpu' else 'cuML'})"
    )
    lines.append(f"  UMAP             {auto.get('umap', {}).get('backend')}")
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
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    uri = args.milvus_uri or os.environ.get("MILVUS_URI") or None
    token = args.milvus_token or os.environ.get("MILVUS_TOKEN") or None
    try:
        report = doctor(uri, token, probe_indexes=not args.no_index_probe)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, default=str) if args.json else format_report(report)
    print(_redact(text, token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
