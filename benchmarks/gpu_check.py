"""The engine's GPU paths measured in ONE call with a hard time budget (default 450 s), on one CUDA machine.

Steps, in order (``--steps``, default all); each gets a share of the budget (``SHARES``) plus whatever the
earlier steps left unused, sizes itself from a short timed pilot so it ends inside that allowance, and
is skipped with a recorded reason when too little time is left:

* ``env``      -- nvidia-smi name/driver/memory, package versions (the carried wheels), what cannot run here.
* ``model``    -- BGE-M3's architecture (XLM-RoBERTa-large, 568M parameters) with RANDOM weights, built
  offline by ``tests.fixtures.tiny_bge_m3`` (throughput does not depend on weight values; clusters are meaningless).
* ``embed``    -- 100k headline-length texts (the shared corpora, ``.whl/headlines.jsonl.gz`` on the device):
  docs/s and tokens/s of FlagEmbedding ``encode`` (fp16) and the engine's loop in bf16 and fp16, same run;
  % of the ~20,000 docs/s bf16 ceiling; cosine of the engine's vectors vs ``encode`` (goal >= 0.99).
* ``knn``      -- GPU exact kNN (``engine.graph.exact_knn``) on 1M x 1024 clustered synthetic unit vectors,
  fp16 candidates (the default) over all rows, then fp32 and bf16 on a row subset; recall vs CPU exact on
  a sample of rows (must be 1.0).
* ``cluster_map`` -- the engine's graph HDBSCAN on that 1M graph (16 CPU cores; ARI vs the generator's
  labels) and the UMAP map (parallel, and seeded as ``engine run`` does) at the largest size that fits.
* ``run``      -- a whole ``engine run --device cuda`` (Milvus Lite store, exact GPU graph) on the largest
  corpus of headline-length texts that fits (1M when it can), each stage's time, peak RSS and GPU memory.

``--smoke`` runs every step at toy sizes on the CPU (tiny model) to check the script without a GPU.
Results: ``OUT_DIR/gpu_check.json`` (and ``.md``; ``gpu_check.sh`` adds ``.log``), rewritten after each step,
and by a watchdog if the budget is overrun by ``--grace`` seconds.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Seconds per step at full size (sum 440 of the default 450 s budget: the rest covers start-up and JSON).
SHARES = {"env": 10, "model": 50, "embed": 110, "knn": 80, "cluster_map": 70, "run": 120}
#: A step with less than this allowance is skipped, not started.
MIN_STEP_S = {"env": 2, "model": 20, "embed": 30, "knn": 20, "cluster_map": 15, "run": 30}
BF16_CEILING_DOCS_S = 20_000  # headline-length docs/s of BGE-M3 at the bf16 matmul peak (issue 14)
GOAL_DOCS_S, GOAL_VS_FLAG, GOAL_COSINE = 6_000, 1.5, 0.99
SAMPLE = ROOT / ".whl" / "headlines.jsonl.gz"
SMOKE = {"embed_docs": 200, "knn_n": 2000, "run_docs": 600, "recall_sample": 40, "k": 10}


def say(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ budget
class Clock:
    """The call's one deadline; a step's allowance keeps the shares of the steps after it free."""

    def __init__(self, t0: float, budget: float, shares: dict[str, float]) -> None:
        self.t0, self.budget, self.shares = t0, budget, shares

    def left(self) -> float:
        return self.t0 + self.budget - time.time()

    def allowance(self, later: list[str]) -> float:
        return self.left() - sum(self.shares.get(s, 0) for s in later)


class StepTimer:
    """Time left inside one step's allowance."""

    def __init__(self, allowance: float) -> None:
        self.end = time.time() + allowance

    def left(self) -> float:
        return self.end - time.time()


# ------------------------------------------------------------------------------------------ memory
def gpu_used_mib() -> float | None:
    """Memory in use on GPU 0 (all processes), from NVML or nvidia-smi; None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used / 1024**2
    except Exception:  # noqa: BLE001 -- fall back to the command line tool
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
        return float(out.strip().splitlines()[0])
    except Exception:  # noqa: BLE001
        return None


def tree_rss_mib(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1024**2


class PeakSampler:
    """Peak RSS of a process tree and peak GPU memory in use, sampled every ``every`` seconds.

    ``stage`` (a callable) labels each sample, so one run's peaks split by pipeline stage.
    """

    def __init__(self, pid: int, gpu: bool, every: float = 0.25, stage=lambda: "all") -> None:
        self.pid, self.gpu, self.every, self.stage = pid, gpu, every, stage
        self.rss: dict[str, float] = {}
        self.gpu_mib: dict[str, float] = {}
        self.gpu_base = gpu_used_mib() if gpu else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            name = self.stage()
            self.rss[name] = max(self.rss.get(name, 0.0), tree_rss_mib(self.pid))
            if self.gpu:
                used = gpu_used_mib()
                if used is not None:
                    self.gpu_mib[name] = max(self.gpu_mib.get(name, 0.0), used - (self.gpu_base or 0))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def free_gpu() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001
        pass


# ------------------------------------------------------------------------------------------ texts
def load_pairs() -> tuple[list[tuple[str, str]], str]:
    """(title, description) pairs: the carried sample, else the shared corpora, else pseudo-headlines."""
    if SAMPLE.is_file():
        with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
            pairs = [tuple(json.loads(line)) for line in fh if line.strip()]
        return pairs, f"{SAMPLE.relative_to(ROOT)} ({len(pairs):,} pairs)"
    from gpu_prepare import headline_pairs

    data = ROOT.parent / "shared" / "data"
    pairs = headline_pairs(data)
    if pairs:
        return pairs, f"{data} ({len(pairs):,} pairs)"
    from tests.fixtures.tiny_bge_m3 import synthetic_corpus

    return [(t, "") for t in synthetic_corpus(3000, seed=3)], "synthetic pseudo-headlines (no corpus found)"


def make_texts(pairs: list[tuple[str, str]], n: int) -> tuple[list[str], list[str]]:
    """n headline-length (title, description) texts: the pairs, then deterministic re-pairings of them."""
    b = len(pairs)
    titles, descs = [], []
    for i in range(n):
        if i < b:
            t, d = pairs[i]
        else:
            t, d = pairs[i % b][0], pairs[(i * 7919 + i // b) % b][1]
        titles.append(t)
        descs.append(d)
    return titles, descs


def joined(titles: list[str], descs: list[str]) -> list[str]:
    return [(t + "\n" + d).strip() for t, d in zip(titles, descs, strict=True)]


# ------------------------------------------------------------------------------------------ vectors
def clustered_vectors(n: int, dim: int, cuda: bool, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in Zipf-sized clusters (24-d spread each) + 5 % noise, drawn with torch (GPU when there).

    The same model as benchmarks/synthetic.py, generated on the device: numpy draws 1M x 1024 in about a
    minute, the GPU in a second.
    """
    import torch
    from synthetic import cluster_sizes

    rng = np.random.default_rng(seed)
    n_clusters = max(5, min(2000, n // 500))
    n_noise = round(0.05 * n)
    sizes = cluster_sizes(n - n_noise, n_clusters, 1.1)
    labels = np.concatenate([np.repeat(np.arange(n_clusters), sizes), np.full(n_noise, -1)])
    labels = labels[rng.permutation(n)].astype(np.int64)
    dev = torch.device("cuda" if cuda else "cpu")
    g = torch.Generator(device=dev).manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, dim, generator=g, device=dev), dim=1)
    basis = torch.randn(n_clusters, 24, dim, generator=g, device=dev) / math.sqrt(dim)
    spread = 0.5 + 0.5 * torch.rand(n_clusters, generator=g, device=dev)
    out = np.empty((n, dim), dtype=np.float32)
    lab_t = torch.from_numpy(labels).to(dev)
    step = 32768  # the per-row bases gathered per chunk: 3.2 GB at 1024-d
    for s in range(0, n, step):
        lab = lab_t[s : s + step]
        c = lab.clamp(min=0)
        z = torch.randn(len(lab), 1, 24, generator=g, device=dev)
        v = centres[c] + spread[c, None] * torch.bmm(z, basis[c]).squeeze(1)
        noise = torch.randn(len(lab), dim, generator=g, device=dev)
        v = torch.where((lab < 0)[:, None], noise, v)
        out[s : s + len(lab)] = torch.nn.functional.normalize(v, dim=1).cpu().numpy()
    return out, labels


# ------------------------------------------------------------------------------------------ steps
def step_env(args: argparse.Namespace, ctx: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    from engine.hardware import cuml_usable

    smi = None
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        pass
    versions = {}
    for dist in (
        "torch transformers tokenizers huggingface_hub FlagEmbedding sentence-transformers peft datasets "
        "pymilvus milvus-lite faiss-cpu umap-learn fast_hdbscan numba numpy scikit-learn plotly cupy-cuda13x"
    ).split():
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    imports = {}
    for mod in ("FlagEmbedding", "pymilvus", "milvus_lite", "umap", "fast_hdbscan", "plotly"):
        try:
            __import__(mod)
            imports[mod] = "ok"
        except Exception as exc:  # noqa: BLE001 -- recorded: the step that needs it will fail too
            imports[mod] = f"{type(exc).__name__}: {exc}"[:300]
    name, driver, mem = ([*(p.strip() for p in smi.split(",")), None, None, None][:3]) if smi else (None,) * 3
    return {
        "nvidia_smi_name": name,
        "nvidia_smi_driver": driver,
        "nvidia_smi_memory": mem,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "imports": imports,
        "not_run_here": {
            "cuML HDBSCAN/UMAP": "usable"
            if cuml_usable()
            else "cuML is not on the image and too big to carry",
            "cuVS / Milvus GPU indexes (GPU_CAGRA, GPU_IVF_*)": "need a GPU Milvus server; neither Milvus "
            "Lite nor the PyPI standalone server 2.3.5 has them, and no server runs on this machine",
            "docker GPU image": "no Docker on this machine",
        },
        "ok": all(v == "ok" for v in imports.values()),
    }


def step_model(args: argparse.Namespace, ctx: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
    from tests.fixtures.tiny_bge_m3 import BGE_M3_CONFIG, build_tiny_bge_m3

    pairs = ctx["pairs"]
    n_train = 2000 if args.smoke else 4000  # strided: every corpus and script; trains in ~10 s
    texts = [(t + "\n" + d).strip() for t, d in pairs[:: max(1, len(pairs) // n_train)][:n_train]]
    if args.model:
        ctx["model"] = args.model
        return {"model": args.model, "note": "given with --model", "ok": True}
    path = ctx["work"] / ("tiny_bge_m3" if args.smoke else "bge_m3_random")
    # Unigram needs every character in its vocabulary: the Chinese titles bring thousands.
    vocab = len(set("".join(texts))) + (300 if args.smoke else 4000)
    t0 = time.perf_counter()
    if not (path / "model.safetensors").exists():
        if args.smoke:
            build_tiny_bge_m3(path, texts=texts, tokenizer_vocab=vocab)
        else:
            build_tiny_bge_m3(path, texts=texts, tokenizer_vocab=vocab, **BGE_M3_CONFIG)
    ctx["model"] = str(path)
    cfg = json.loads((path / "config.json").read_text())
    return {
        "model": str(path),
        "note": "tiny BGE-M3-shaped model (smoke)"
        if args.smoke
        else "BGE-M3 architecture (XLM-RoBERTa-large, 24 x 1024, 250,002-token table) with RANDOM weights; "
        f"tokenizer: Unigram {vocab:,} pieces trained on 4,000 corpus texts (the real one has 250k pieces, so it cuts "
        "headlines into somewhat more tokens: docs/s here are conservative, tokens/s comparable)",
        "hidden": cfg["hidden_size"],
        "layers": cfg["num_hidden_layers"],
        "build_s": round(time.perf_counter() - t0, 1),
        "ok": True,
    }


def step_embed(args: argparse.Namespace, ctx: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
    from engine.embed import load_encoder

    cuda = ctx["cuda"]
    dev = "cuda" if cuda else "cpu"
    texts = joined(*make_texts(ctx["pairs"], args.embed_docs))
    warm_n, pilot_n = (16, 48) if args.smoke else (1024, 4096)
    methods = [
        ("flagembedding_encode_fp16", {"fast": False, "precision": "fp16"}),
        ("engine_loop_bf16", {"fast": True, "precision": "bf16"}),
        ("engine_loop_fp16", {"fast": True, "precision": "fp16"}),
    ]
    res: dict[str, Any] = {"texts_target": len(texts), "max_length": args.max_length, "methods": {}}
    encoders = {}
    for name, kw in methods:
        if timer.left() < 15:
            res["methods"][name] = {"skipped": f"only {timer.left():.0f} s left in the step"}
            continue
        t0 = time.perf_counter()
        enc = load_encoder(ctx["model"], device=dev, max_length=args.max_length, **kw)
        load_s = time.perf_counter() - t0
        enc.encode(texts[:warm_n])  # kernels, allocator, FlagEmbedding's batch-size probe
        sync(cuda)
        t0 = time.perf_counter()
        enc.encode(texts[warm_n : warm_n + pilot_n])
        sync(cuda)
        pilot_s = time.perf_counter() - t0
        encoders[name] = enc
        res["methods"][name] = {
            "backend": enc.backend,
            "precision": enc.precision,
            "load_s": round(load_s, 1),
            "pilot_docs_per_s": round(pilot_n / pilot_s, 1),
        }
    if not encoders:
        return {**res, "ok": False, "skipped": "no encoder loaded in time"}
    # One document count for every method (same texts, fair ratios), as many as fit the time left.
    per_doc = sum(1 / res["methods"][m]["pilot_docs_per_s"] for m in encoders)
    fit = int((timer.left() - 5) * 0.85 / per_doc)
    n = max(pilot_n, min(len(texts), fit))
    if n < len(texts):
        res["shrunk"] = f"{n:,} of {len(texts):,} texts: the pilot rates predict {len(texts) * per_doc:.0f} s"
    res["docs"] = n
    tok = next(iter(encoders.values()))
    tokenizer = tok.loop_.tokenizer if tok.loop_ is not None else tok.model_.tokenizer
    ids = tokenizer(texts[:n], truncation=True, max_length=args.max_length)["input_ids"]
    tokens = int(sum(len(x) for x in ids))
    res["tokens"] = tokens
    res["tokens_per_doc"] = round(tokens / n, 1)
    vecs = {}
    for name, enc in encoders.items():
        if timer.left() < 2:
            res["methods"][name]["skipped"] = "step allowance spent"
            continue
        free_gpu()
        sync(cuda)
        t0 = time.perf_counter()
        vecs[name] = enc.encode(texts[:n])
        sync(cuda)
        secs = time.perf_counter() - t0
        m = res["methods"][name]
        m.update(
            {
                "seconds": round(secs, 2),
                "docs_per_s": round(n / secs, 1),
                "tokens_per_s": round(tokens / secs, 0),
                "pct_of_bf16_ceiling": round(100 * n / secs / BF16_CEILING_DOCS_S, 1),
            }
        )
        if cuda:
            import torch

            m["max_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    ref = "flagembedding_encode_fp16"
    for name in ("engine_loop_bf16", "engine_loop_fp16"):
        if name in vecs and ref in vecs:
            m = res["methods"][name]
            cos = np.sum(vecs[name] * vecs[ref], axis=1)
            m["cosine_vs_encode_min"] = round(float(cos.min()), 5)
            m["cosine_vs_encode_mean"] = round(float(cos.mean()), 5)
            m["speedup_vs_encode"] = round(m["docs_per_s"] / res["methods"][ref]["docs_per_s"], 2)
    best = res["methods"].get("engine_loop_bf16", {})
    res["goals"] = (
        {
            f"engine bf16 >= {GOAL_DOCS_S:,} docs/s": _met(best.get("docs_per_s"), GOAL_DOCS_S),
            f"engine bf16 >= {GOAL_VS_FLAG}x encode": _met(best.get("speedup_vs_encode"), GOAL_VS_FLAG),
            f"cosine vs encode >= {GOAL_COSINE}": _met(best.get("cosine_vs_encode_min"), GOAL_COSINE),
        }
        if cuda
        else "not judged: no GPU (smoke run)"
    )
    finite = all(bool(np.isfinite(v).all()) for v in vecs.values())
    res["ok"] = finite and len(vecs) == len(methods)
    del encoders, vecs
    free_gpu()
    return res


def _met(value: float | None, goal: float) -> str:
    if value is None:
        return "not measured"
    return f"{'met' if value >= goal else 'MISSED'} ({value})"


def step_knn(args: argparse.Namespace, ctx: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
    from engine.graph import exact_knn

    cuda, n, k = ctx["cuda"], args.knn_n, args.k
    t0 = time.perf_counter()
    x, labels = clustered_vectors(n, 1024, cuda)
    res: dict[str, Any] = {"n": n, "dim": 1024, "k": k, "generate_s": round(time.perf_counter() - t0, 1)}
    ctx["vectors"], ctx["labels"] = x, labels
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, size=min(args.recall_sample, n), replace=False))
    t0 = time.perf_counter()
    truth = exact_knn(x, k, device="cpu", rows=sample, progress=False)
    res["cpu_exact_sample"] = {"rows": int(sample.size), "seconds": round(time.perf_counter() - t0, 2)}
    dev = "cuda" if cuda else "cpu"

    def timed(rows: np.ndarray | None, precision: str):
        sync(cuda)
        t = time.perf_counter()
        g = exact_knn(x, k, device=dev, rows=rows, progress=False, precision=precision)
        sync(cuda)
        return g, time.perf_counter() - t

    # Pilot: two row counts give the fixed cost (uploading all N vectors) and the cost per query row.
    p1, p2 = (200, 800) if args.smoke else (4096, 16384)
    _, t1 = timed(np.arange(p1), "auto")
    _, t2 = timed(np.arange(p2), "auto")
    per_row = max((t2 - t1) / (p2 - p1), 1e-9)
    fixed = max(t1 - p1 * per_row, 0.0)
    predicted = fixed + n * per_row
    res["pilot"] = {"fixed_s": round(fixed, 2), "per_1k_rows_s": round(1000 * per_row, 4)}
    ctx["knn_cost"] = (fixed, per_row, n)
    runs: dict[str, Any] = {}
    reserve = 5 + 0.1 * predicted
    if predicted + reserve <= timer.left():
        rows, what = None, "all rows"
    else:
        m = int(max(p2, (timer.left() - reserve - fixed) / per_row))
        rows = np.union1d(np.arange(min(m, n)), sample)
        what = f"{rows.size:,} of {n:,} query rows (all {n:,} as candidates)"
        res["shrunk"] = f"all {n:,} rows predicted {predicted:.0f} s, over the {timer.left():.0f} s left"
    label = f"{dev}_fp16_auto" if cuda else "cpu"
    g, secs = timed(rows, "auto")
    q = n if rows is None else rows.size
    pos = sample if rows is None else np.searchsorted(rows, sample)
    runs[label] = {
        "queried": what,
        "seconds": round(secs, 2),
        "queries_per_s": round(q / secs, 0),
        "recall_vs_cpu_exact": round(g.recall_against(truth, rows=pos), 6),
    }
    if rows is None:
        ctx["graph"] = g
    if cuda:
        import torch

        runs[label]["max_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        sub = np.union1d(np.arange(min(n, 65536)), sample)
        for prec in ("fp32", "bf16"):
            need = fixed + sub.size * per_row * (3 if prec == "fp32" else 1) + 3
            if need > timer.left():
                runs[f"cuda_{prec}"] = {"skipped": f"predicted {need:.0f} s > {timer.left():.0f} s left"}
                continue
            gs, secs = timed(sub, prec)
            runs[f"cuda_{prec}"] = {
                "queried": f"{sub.size:,} of {n:,} query rows",
                "seconds": round(secs, 2),
                "queries_per_s": round(sub.size / secs, 0),
                "recall_vs_cpu_exact": round(gs.recall_against(truth, rows=np.searchsorted(sub, sample)), 6),
            }
            del gs
    res["runs"] = runs
    res["other_gpu_graph_paths"] = "none runnable here: Milvus GPU indexes need a GPU Milvus server (see env)"
    res["ok"] = all(r.get("recall_vs_cpu_exact", 1.0) == 1.0 for r in runs.values())
    free_gpu()
    return res


def _sub_graph(ctx: dict[str, Any], m: int, k: int):
    """Exact kNN graph of the first m vectors (GPU when there), for sizes below the full graph's."""
    from engine.graph import exact_knn

    return exact_knn(ctx["vectors"][:m], k, device="cuda" if ctx["cuda"] else "cpu", progress=False)


def step_cluster_map(args: argparse.Namespace, ctx: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from engine.cluster import cluster_graph
    from engine.project import project_2d

    if "vectors" not in ctx:
        return {"ok": False, "skipped": "the knn step did not produce vectors"}
    k, n_all = args.k, len(ctx["vectors"])
    res: dict[str, Any] = {"threads": os.cpu_count()}
    graph = ctx.get("graph")
    if graph is None:
        m = min(n_all, 100_000 if not args.smoke else n_all)
        graph = _sub_graph(ctx, m, k)
        res["note"] = f"the knn step did not finish the full graph: clustering a {m:,}-row exact graph"
    n = graph.n
    mcs, ms = (50, 10) if not args.smoke else (10, 5)
    # numba compiles on the first call (the engine pays this once per process): timed apart.
    t0 = time.perf_counter()
    warm = _sub_graph(ctx, 300, 10)
    cluster_graph(warm, min_cluster_size=10, min_samples=5, backend="cpu")
    project_2d(warm, n_neighbors=15, random_state=None, backend="cpu")
    project_2d(warm, n_neighbors=15, random_state=42, backend="cpu")  # the serial kernels compile apart
    res["jit_warmup_s"] = round(time.perf_counter() - t0, 1)
    with PeakSampler(os.getpid(), gpu=False) as peak:
        t0 = time.perf_counter()
        cl = cluster_graph(graph, min_cluster_size=mcs, min_samples=ms, backend="cpu")
        secs = time.perf_counter() - t0
    labels = ctx["labels"][:n]
    res["cluster"] = {
        "n": n,
        "seconds": round(secs, 2),
        "min_cluster_size": mcs,
        "min_samples": ms,
        "clusters": int(cl.labels.max() + 1),
        "noise_share": round(float(np.mean(cl.labels < 0)), 4),
        "ari_vs_generator": round(float(adjusted_rand_score(labels, cl.labels)), 4),
        "peak_rss_mib": round(peak.rss.get("all", 0.0)),
    }
    ctx["cluster_rate"] = secs / n
    # Map: a pilot fits t = a * n^1.3 (umap-learn measured 19x for 10x here); then the largest size that fits.
    pilot_n = 500 if args.smoke else 20_000
    sizes = sorted({s for s in (1_000_000, 500_000, 250_000, 100_000, 50_000, pilot_n) if s <= n} | {n})
    res["map"] = {}
    fixed, per_row, base_n = ctx.get("knn_cost", (1.0, 1e-4, n))

    def sub_cost(m: int) -> float:  # building the exact graph of the first m rows (0 for the full graph)
        return 0.0 if m == n else fixed * m / base_n + m * per_row

    pilot_graph = graph if pilot_n >= n else _sub_graph(ctx, pilot_n, k)
    for label, seed in (("parallel_no_seed", None), ("seeded_engine_default", 42)):
        if timer.left() < 5:
            res["map"][label] = {"skipped": f"{timer.left():.0f} s left"}
            continue
        t0 = time.perf_counter()
        project_2d(pilot_graph, n_neighbors=15, random_state=seed, backend="cpu")
        tp = time.perf_counter() - t0
        share = timer.left() * (0.5 if seed is None else 0.9) - 3
        fits = [s for s in sizes if tp * (s / pilot_n) ** 1.3 + sub_cost(s) <= share and s > pilot_n]
        entry: dict[str, Any] = {"pilot_n": pilot_n, "pilot_s": round(tp, 2)}
        if seed == 42:
            ctx["map_pilot"] = (pilot_n, tp)
        if fits:
            m = max(fits)
            gm = graph if m == n else _sub_graph(ctx, m, k)
            with PeakSampler(os.getpid(), gpu=False) as peak:
                t0 = time.perf_counter()
                coords = project_2d(gm, n_neighbors=15, random_state=seed, backend="cpu")
                entry.update({"n": m, "seconds": round(time.perf_counter() - t0, 2)})
            entry["peak_rss_mib"] = round(peak.rss.get("all", 0.0))
            entry["finite"] = bool(np.isfinite(coords).all())
            if m < n_all:
                entry["shrunk"] = f"{n_all:,} rows predicted {tp * (n_all / pilot_n) ** 1.3:.0f} s (estimate)"
        else:
            entry.update({"n": pilot_n, "seconds": round(tp, 2), "shrunk": "only the pilot fitted"})
        res["map"][label] = entry
    res["ok"] = all(v.get("finite", True) for v in res["map"].values() if isinstance(v, dict))
    return res


#: engine runs in their own process groups: the watchdog ends them (a new session would outlive the call).
CHILDREN: list[subprocess.Popen] = []
STAGE_RE = re.compile(r"^\[(\w+)\] (started|done in ([0-9.]+) s)")


def engine_run(cmd: list[str], timeout: float, cuda: bool, log_path: Path) -> dict[str, Any]:
    """Run ``engine run`` in its own process group; per-stage seconds and peaks from its log lines."""
    stage = {"name": "startup"}
    done: dict[str, float] = {}
    say(" ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    CHILDREN.append(proc)
    tail: list[str] = []

    def reader() -> None:
        with log_path.open("w") as log:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                tail.append(line.rstrip())
                del tail[:-40]
                m = STAGE_RE.match(line.strip())
                if m and m.group(3):
                    done[m.group(1)] = float(m.group(3))
                    stage["name"] = f"after_{m.group(1)}"
                elif m:
                    stage["name"] = m.group(1)

    th = threading.Thread(target=reader, daemon=True)
    t0 = time.perf_counter()
    timed_out = False
    with PeakSampler(proc.pid, gpu=cuda, every=0.5, stage=lambda: stage["name"]) as peak:
        th.start()
        try:
            proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    th.join(timeout=10)
    wall = time.perf_counter() - t0
    stages = {
        s: {
            "seconds": done.get(s),
            "peak_rss_mib": round(peak.rss[s]) if s in peak.rss else None,
            "peak_gpu_mib": round(peak.gpu_mib[s]) if s in peak.gpu_mib else None,
        }
        for s in ("embed", "graph", "cluster", "map", "report")
        if s in done or s in peak.rss
    }
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "timed_out": timed_out,
        "stages": stages,
        "tail": tail[-8:],
    }


def step_run(args: argparse.Namespace, ctx: dict[str, Any], timer: StepTimer) -> dict[str, Any]:
    cuda = ctx["cuda"]
    if "model" not in ctx:
        return {"ok": False, "skipped": "no model"}
    # Predict each size from the rates the earlier steps measured (conservative defaults where missing).
    embed = ctx.get("embed_rate") or (30.0 if args.smoke else 5000.0)
    fixed, per_row, base_n = ctx.get("knn_cost", (2.0, 1e-4, 1_000_000))
    cl_rate = ctx.get("cluster_rate", 2e-5)
    pilot_n, pilot_s = ctx.get("map_pilot", (20_000, 20.0))

    def predict(n: int) -> float:
        knn = fixed * n / base_n + n * per_row  # per row: the matmul shrinks with n, the re-rank does not
        umap = pilot_s * (n / pilot_n) ** 1.3
        return 30 + n / embed + n / 20_000 + knn + n * cl_rate + umap + 5 + n * 2e-5

    sizes = [args.run_docs] if args.smoke else [1_000_000, 500_000, 250_000, 100_000, 50_000, 20_000]
    sizes = [s for s in sizes if s <= args.run_docs] or [args.run_docs]
    fits = [s for s in sizes if predict(s) <= 0.85 * timer.left()]
    n = max(fits) if fits else min(sizes)
    res: dict[str, Any] = {
        "docs": n,
        "predicted_s": {str(s): round(predict(s)) for s in sizes},
        "store": "Milvus Lite (carried wheels milvus-lite + pymilvus + faiss-cpu); graph: exact on the GPU "
        "(--graph-source exact) because a Lite graph at ~150 q/s takes hours past 100k documents",
    }
    if n < 1_000_000 and not args.smoke:
        res["shrunk"] = (
            f"1M predicted {predict(1_000_000):.0f} s (estimate), over the {timer.left():.0f} s left"
        )
    corpus = ctx["work"] / f"corpus_{n}.csv"
    import pandas as pd

    titles, descs = make_texts(ctx["pairs"], n)
    pd.DataFrame({"title": titles, "description": descs}).to_csv(corpus, index=False)
    out = ctx["work"] / f"run_{n}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "engine", "run", str(corpus), "--out", str(out), "--model", ctx["model"]]
    cmd += ["--device", "cuda" if cuda else "cpu", "--graph-source", "exact"]
    cmd += ["--milvus-uri", str(out / "milvus.db"), "--k", str(args.k)]
    cmd += ["--min-cluster-size", "50" if not args.smoke else "10", "--min-samples", "10"]
    free_gpu()
    run = engine_run(cmd, timer.left() - 3, cuda, ctx["work"] / "engine_run.log")
    res["command"] = " ".join(["engine", *cmd[3:]])
    res.update(run)
    summary = out / "summary.json"
    if run["rc"] == 0 and summary.exists():
        data = json.loads(summary.read_text())
        res.update({k: data.get(k) for k in ("documents", "clusters", "noise", "total_seconds", "details")})
    res["ok"] = run["rc"] == 0
    return res


STEPS = {
    "env": step_env,
    "model": step_model,
    "embed": step_embed,
    "knn": step_knn,
    "cluster_map": step_cluster_map,
    "run": step_run,
}


# ------------------------------------------------------------------------------------------ report
def to_markdown(report: dict[str, Any]) -> str:
    s = report["steps"]
    env = s.get("env", {})
    lines = [
        f"### GPU check {report['started']} — {env.get('nvidia_smi_name') or report['device']}"
        f" (driver {env.get('nvidia_smi_driver')}), budget {report['budget_s']} s, used {report.get('used_s')} s",
        "",
        "| step | figure | ok |",
        "|---|---|---|",
    ]
    for name, res in s.items():
        if "error" in res or "skipped" in res:
            lines.append(f"| {name} | {res.get('error') or res.get('skipped')} | {res.get('ok')} |")
            continue
        if name == "embed":
            for m, v in res["methods"].items():
                fig = v.get("skipped") or (
                    f"{v.get('docs_per_s')} docs/s, {v.get('tokens_per_s')} tok/s, "
                    f"{v.get('pct_of_bf16_ceiling')} % of ceiling"
                    + (
                        f", {v['speedup_vs_encode']}x encode, cos min {v['cosine_vs_encode_min']}"
                        if "speedup_vs_encode" in v
                        else ""
                    )
                )
                lines.append(f"| embed {m} ({res.get('docs')} docs) | {fig} | {res['ok']} |")
        elif name == "knn":
            for m, v in res["runs"].items():
                fig = v.get("skipped") or (
                    f"{v['queried']}: {v['seconds']} s, {v['queries_per_s']} q/s, recall {v['recall_vs_cpu_exact']}"
                )
                lines.append(f"| knn {m} ({res['n']:,} x {res['dim']}) | {fig} | {res['ok']} |")
        elif name == "cluster_map":
            c = res["cluster"]
            lines.append(
                f"| cluster {c['n']:,} | {c['seconds']} s, {c['clusters']} clusters, ARI {c['ari_vs_generator']}, "
                f"{c['peak_rss_mib']} MiB | {res['ok']} |"
            )
            for m, v in res["map"].items():
                fig = v.get("skipped") or f"{v.get('n'):,} points: {v.get('seconds')} s"
                lines.append(f"| map {m} | {fig} | {res['ok']} |")
        elif name == "run":
            st = "; ".join(
                f"{k} {v['seconds']} s / {v['peak_rss_mib']} MiB RSS / {v['peak_gpu_mib']} MiB GPU"
                for k, v in res.get("stages", {}).items()
            )
            lines.append(f"| run {res['docs']:,} docs (rc {res.get('rc')}) | {st} | {res['ok']} |")
        else:
            lines.append(f"| {name} | {res.get('step_s')} s | {res.get('ok')} |")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out_dir: Path, suffix: str) -> None:
    (out_dir / f"gpu_check{suffix}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"gpu_check{suffix}.md").write_text(to_markdown(report))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--budget", type=float, default=450, help="seconds for the whole call (default 450)")
    p.add_argument("--grace", type=float, default=20, help="watchdog: exit this long past the budget")
    p.add_argument("--model", default=None, help="a model directory instead of the random-weight BGE-M3")
    p.add_argument("--embed-docs", type=int, default=100_000)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--knn-n", type=int, default=1_000_000)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--recall-sample", type=int, default=200)
    p.add_argument("--run-docs", type=int, default=1_000_000)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "engine_gpu_check"))
    p.add_argument("--out-dir", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks this script")
    args = p.parse_args(argv)
    t0 = float(os.environ.get("GPU_CHECK_T0") or time.time())
    if args.smoke:
        for key, val in SMOKE.items():
            setattr(args, key, val)
    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        say("no CUDA device visible to torch: nothing to measure (use --smoke to check this script on a CPU)")
        return 3
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"error: unknown step {unknown[0]!r} (parameter --steps); choose from {', '.join(STEPS)}")
        return 2
    shares = {s: SHARES[s] * args.budget / 450 for s in SHARES}
    clock = Clock(t0, args.budget, shares)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_smoke" if args.smoke else ""
    pairs, source = load_pairs()
    ctx: dict[str, Any] = {"cuda": cuda, "work": work, "pairs": pairs}
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        "command": "bash benchmarks/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()}, smoke)",
        "smoke": args.smoke,
        "budget_s": args.budget,
        "shares_s": {s: round(v) for s, v in shares.items()},
        "texts": source,
        "steps": {},
    }

    def watchdog() -> None:
        report["aborted"] = (
            f"over the {args.budget:.0f} s budget by {args.grace:.0f} s: stopped by the watchdog"
        )
        report["used_s"] = round(time.time() - t0, 1)
        for child in CHILDREN:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
        write(report, out_dir, suffix)
        say(report["aborted"])
        os._exit(124)

    dog = threading.Timer(max(clock.left() + args.grace, 1), watchdog)
    dog.daemon = True
    dog.start()
    ok = True
    for i, name in enumerate(steps):
        allowance = clock.allowance(steps[i + 1 :])
        if allowance < MIN_STEP_S[name] * (0.2 if args.smoke else 1):
            res = {"skipped": f"allowance {allowance:.0f} s < {MIN_STEP_S[name]} s needed", "ok": False}
        else:
            say(f"step {name}: allowance {allowance:.0f} s ({clock.left():.0f} s left in the call)")
            t1 = time.perf_counter()
            try:
                res = STEPS[name](args, ctx, StepTimer(allowance))
            except Exception as exc:  # noqa: BLE001 -- record and go on with the next step
                res = {"error": f"{type(exc).__name__}: {exc}"[:500], "trace": traceback.format_exc()[-2500:]}
                res["ok"] = False
            res["step_s"] = round(time.perf_counter() - t1, 1)
            res["allowance_s"] = round(allowance)
        if name == "embed" and "engine_loop_bf16" in res.get("methods", {}):
            ctx["embed_rate"] = res["methods"]["engine_loop_bf16"].get("docs_per_s")
        ok &= bool(res.get("ok"))
        report["steps"][name] = res
        report["used_s"] = round(time.time() - t0, 1)
        say(f"step {name}: {json.dumps(res, default=str)[:400]}")
        write(report, out_dir, suffix)
    dog.cancel()
    print(to_markdown(report))
    say(
        f"results: {out_dir}/gpu_check{suffix}.json and .md; {report['used_s']} s of {args.budget:.0f} s used"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
