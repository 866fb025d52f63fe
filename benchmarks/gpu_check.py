"""Verify the engine's GPU paths on a CUDA machine, in one command, and record the numbers.

Steps (``--steps``, default all):

* ``doctor``  -- what the machine offers and what ``auto`` picks (``engine.doctor``).
* ``embed``   -- the embedding loop on CUDA: agreement with the CPU fp32 loop on the same
  weights (cosine), then throughput (docs/s) on ``--embed-docs`` headlines.
* ``knn``     -- GPU exact kNN (``engine.graph.exact_knn(device="cuda")``) on ``--knn-n`` x 1024
  synthetic clustered vectors (``benchmarks/synthetic.py``): time, and recall vs CPU exact on a
  sample of rows (must be 1.0) plus the largest distance difference.
* ``run870``  -- ``engine run`` on the 870 news headlines with GPU embedding and the GPU exact graph
  (``--device cuda --graph-source exact``), and again with the Milvus Lite graph.
* ``run100k`` -- ``engine run`` on ``--run-docs`` synthetic documents, GPU embedding + GPU graph.

The model is ``--model`` (BAAI/bge-m3 from the Hugging Face cache or a directory); when it cannot
be loaded offline, a BGE-M3-shaped model with RANDOM weights is built (same architecture and cost;
the clusters are then meaningless, the timings are not). ``--smoke`` runs every step at toy sizes
on the CPU to check the script itself on a machine without a GPU.

Results: ``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md`` (a block for benchmarks/RESULTS.md).
All steps at full size take roughly 15-30 min on one H100 (building the random 568M-parameter model
and the 1M-vector set are a few minutes each). Where one command may run at most 10 min, run the
steps one per command with the same ``--work`` folder (it caches the model and the vectors):
``--steps doctor,embed``, ``--steps knn``, ``--steps run870``, ``--steps run100k``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

HEADLINE_CANDIDATES = (
    Path("/work/shared/data/news_headlines_2024/news_data_dedup.csv"),
    ROOT / "shared" / "data" / "news_headlines_2024" / "news_data_dedup.csv",
    ROOT.parent / "shared" / "data" / "news_headlines_2024" / "news_data_dedup.csv",
)


def say(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_headlines(explicit: str | None) -> Path | None:
    for cand in ([Path(explicit)] if explicit else []) + list(HEADLINE_CANDIDATES):
        if cand.is_file():
            return cand
    return None


def headline_texts(path: Path | None, n: int) -> list[str]:
    """title + newline + description of the headlines, cycled (with a suffix) up to n."""
    if path is not None:
        import pandas as pd

        df = pd.read_csv(path)
        base = (df["title"].fillna("") + "\n" + df["description"].fillna("")).str.strip().tolist()
    else:
        from engine.embed.tiny import synthetic_corpus

        base = synthetic_corpus(870, seed=3)
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(n)]


def resolve_model(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    """(model path or id, description). Falls back to a random-weight model of the same shape."""
    from engine.embed.tiny import BGE_M3_CONFIG, build_tiny_bge_m3

    if args.smoke:
        path = work / "tiny_bge_m3"
        if not (path / "model.safetensors").exists():
            build_tiny_bge_m3(path, texts=headline_texts(find_headlines(args.headlines), 870))
        return str(path), "tiny random BGE-M3-shaped model (smoke test)"
    try:
        from engine.embed import resolve_model as engine_resolve

        spec = engine_resolve(args.model)
        return spec.path, f"{args.model} ({spec.source})"
    except Exception as exc:  # noqa: BLE001 -- offline GPU boxes have no weights: fall back
        say(
            f"model {args.model!r} not loadable offline ({type(exc).__name__}); building a random-weight BGE-M3"
        )
    path = work / "bge_m3_random"
    if not (path / "model.safetensors").exists():
        t0 = time.perf_counter()
        texts = headline_texts(find_headlines(args.headlines), 870)
        build_tiny_bge_m3(path, texts=texts, tokenizer_vocab=8000, **BGE_M3_CONFIG)
        say(f"built full-size random BGE-M3 in {time.perf_counter() - t0:.0f} s")
    return str(path), "BGE-M3 architecture with RANDOM weights (no weights on this machine): timings only"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------- steps
def step_doctor(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    from engine.doctor import doctor

    rep = doctor()
    devices = rep["hardware"].get("cuda_devices", [])
    return {
        "ok": bool(rep["cuda"]) or args.smoke,
        "cuda": rep["cuda"],
        "devices": devices,
        "torch": rep["hardware"]["torch"],
        "cupy": rep["hardware"]["cupy"],
        "cuml": rep["hardware"]["cuml"],
        "cpu_bf16": rep["hardware"]["cpu"]["bf16"],
        "auto": rep["auto"],
    }


def step_embed(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    from engine.embed import load_encoder

    device = ctx["device"]
    texts = headline_texts(ctx["headlines"], args.embed_docs)
    ref_texts = texts[:64]
    cpu = load_encoder(ctx["model"], device="cpu", precision="fp32", max_length=args.max_length)
    ref = cpu.encode(ref_texts)
    del cpu
    enc = load_encoder(
        ctx["model"],
        device=device if device == "cpu" else "cuda",
        precision="auto",
        max_length=args.max_length,
    )
    got = enc.encode(ref_texts)
    cos = np.sum(ref * got, axis=1)
    enc.encode(texts[: min(len(texts), 1024)])  # warm-up: kernels, allocator
    sync(device)
    t0 = time.perf_counter()
    vecs = enc.encode(texts)
    sync(device)
    secs = time.perf_counter() - t0
    out = {
        "encoder_device": enc.device,
        "precision": getattr(enc, "precision", None),
        "dim": enc.dim,
        "docs": len(texts),
        "seconds": round(secs, 2),
        "docs_per_s": round(len(texts) / secs, 1),
        "cosine_vs_cpu_fp32_min": round(float(cos.min()), 5),
        "cosine_vs_cpu_fp32_mean": round(float(cos.mean()), 5),
        "finite_and_unit": bool(
            np.isfinite(vecs).all() and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
        ),
    }
    if device.startswith("cuda"):
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    out["ok"] = out["finite_and_unit"] and out["cosine_vs_cpu_fp32_min"] > 0.99
    return out


def step_knn(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    from synthetic import generate

    from engine.graph import exact_knn

    n, k = args.knn_n, args.k
    data_dir = ctx["work"] / f"synth_{n}"
    t0 = time.perf_counter()
    if (data_dir / "vectors.npy").exists():
        x = np.load(data_dir / "vectors.npy", mmap_mode="r")
    else:
        x, _ = generate(n, str(data_dir), dim=1024, seed=7)
    gen_s = time.perf_counter() - t0
    x = np.ascontiguousarray(x)  # into RAM once (4 GiB at 1M x 1024)
    device = ctx["device"]
    results: dict[str, Any] = {"n": n, "dim": int(x.shape[1]), "k": k, "generate_s": round(gen_s, 1)}
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=min(args.recall_sample, n), replace=False))
    t0 = time.perf_counter()
    truth = exact_knn(x, k, device="cpu", rows=rows, progress=False)
    results["cpu_sample_rows"] = int(rows.size)
    results["cpu_sample_s"] = round(time.perf_counter() - t0, 1)
    precisions = ["auto", "fp32"] if device.startswith("cuda") else ["cpu"]
    for precision in precisions:
        sync(device)
        t0 = time.perf_counter()
        if device.startswith("cuda"):
            graph = exact_knn(x, k, device="cuda", precision=precision, progress=True)
        else:
            graph = exact_knn(x, k, device="cpu", progress=True)
        sync(device)
        secs = time.perf_counter() - t0
        recall = graph.recall_against(truth, rows=rows)
        mine = graph.distances[rows]
        diff = float(
            np.nanmax(
                np.abs(
                    np.where(np.isfinite(mine), mine, 0)
                    - np.where(np.isfinite(truth.distances), truth.distances, 0)
                )
            )
        )
        results[f"{device.split(':')[0]}_{precision}"] = {
            "seconds": round(secs, 2),
            "queries_per_s": round(n / secs, 0),
            "recall_vs_cpu_exact": round(recall, 6),
            "max_abs_distance_diff": round(diff, 7),
            "meta": graph.meta,
        }
        del graph
    if device.startswith("cuda"):
        import torch

        results["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    results["ok"] = all(
        v["recall_vs_cpu_exact"] == 1.0
        for key, v in results.items()
        if isinstance(v, dict) and "recall_vs_cpu_exact" in v
    )
    return results


def engine_run(corpus: Path, out: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "engine", "run", str(corpus), "--out", str(out), *extra]
    say(" ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), check=False)
    wall = time.perf_counter() - t0
    res: dict[str, Any] = {"cmd": " ".join(cmd[1:]), "rc": proc.returncode, "wall_s": round(wall, 1)}
    summary = out / "summary.json"
    if proc.returncode == 0 and summary.exists():
        data = json.loads(summary.read_text())
        res.update(
            {
                k: data.get(k)
                for k in ("documents", "clusters", "noise", "stage_seconds", "total_seconds", "details")
            }
        )
        res["ok"] = True
    else:
        res["ok"] = False
        res["stderr_tail"] = (proc.stderr or proc.stdout)[-2000:]
    return res


def step_run870(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    corpus = ctx["headlines"]
    if corpus is None:
        corpus = ctx["work"] / "headlines_synthetic.csv"
        import pandas as pd

        pd.DataFrame({"title": headline_texts(None, 870), "description": ""}).to_csv(corpus, index=False)
    dev = "cuda" if ctx["device"].startswith("cuda") else "cpu"
    base = ["--model", ctx["model"], "--device", dev, "--k", str(min(args.k, 30))]
    exact = engine_run(
        corpus, ctx["work"] / "run870_exact", [*base, "--graph-source", "exact"], args.run_timeout
    )
    lite = engine_run(corpus, ctx["work"] / "run870_milvus", base, args.run_timeout)
    return {
        "corpus": str(corpus),
        "gpu_graph": exact,
        "milvus_lite_graph": lite,
        "ok": exact["ok"] and lite["ok"],
    }


def step_run100k(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    from engine.embed.tiny import synthetic_corpus

    corpus = ctx["work"] / f"synthetic_{args.run_docs}.csv"
    if not corpus.exists():
        texts = synthetic_corpus(args.run_docs, seed=5)
        pd.DataFrame({"title": texts, "description": ""}).to_csv(corpus, index=False)
    dev = "cuda" if ctx["device"].startswith("cuda") else "cpu"
    extra = [
        "--model",
        ctx["model"],
        "--device",
        dev,
        "--graph-source",
        "exact",
        "--k",
        str(args.k),
        "--min-cluster-size",
        "20",
    ]
    run = engine_run(corpus, ctx["work"] / f"run{args.run_docs}_exact", extra, args.run_timeout)
    return {"corpus": str(corpus), "docs": args.run_docs, "gpu_graph": run, "ok": run["ok"]}


STEPS = {
    "doctor": step_doctor,
    "embed": step_embed,
    "knn": step_knn,
    "run870": step_run870,
    "run100k": step_run100k,
}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"### GPU check ({report['started']}, {report['device_name']})",
        "",
        f"Command: `{report['command']}`; model: {report['model_note']}.",
        "",
        "| step | ok | numbers |",
        "|---|---|---|",
    ]
    for name, res in report["steps"].items():
        if "error" in res:
            lines.append(f"| {name} | ERROR | {res['error'][:120]} |")
            continue
        if name == "embed":
            nums = (
                f"{res['docs_per_s']} docs/s on {res['docs']} docs ({res['precision']}); "
                f"cosine vs CPU fp32 min {res['cosine_vs_cpu_fp32_min']}"
            )
        elif name == "knn":
            parts = [
                f"{k}: {v['seconds']} s, recall {v['recall_vs_cpu_exact']}"
                for k, v in res.items()
                if isinstance(v, dict) and "seconds" in v
            ]
            nums = f"{res['n']} x {res['dim']}, k={res['k']}: " + "; ".join(parts)
        elif name.startswith("run"):
            runs = {k: v for k, v in res.items() if isinstance(v, dict) and "rc" in v}
            nums = "; ".join(
                f"{k}: {v.get('total_seconds', v['wall_s'])} s, {v.get('clusters')} clusters"
                for k, v in runs.items()
            )
        else:
            nums = f"cuda={res.get('cuda')}, devices={[d.get('name') for d in res.get('devices', [])]}"
        lines.append(f"| {name} | {res.get('ok', '')} | {nums} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--model", default="BAAI/bge-m3")
    p.add_argument(
        "--headlines", default=None, help="the 870-headline CSV (default: shared/data/news_headlines_2024)"
    )
    p.add_argument("--embed-docs", type=int, default=20_000)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--knn-n", type=int, default=1_000_000)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--recall-sample", type=int, default=500)
    p.add_argument("--run-docs", type=int, default=100_000)
    p.add_argument("--run-timeout", type=float, default=3600)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "engine_gpu_check"))
    p.add_argument("--out-dir", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--smoke", action="store_true", help="toy sizes on the CPU: checks this script without a GPU"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.embed_docs, args.knn_n, args.recall_sample, args.run_docs = 200, 3000, 50, 1500
        args.k = min(args.k, 10)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        say("no CUDA device visible to torch: nothing to verify (use --smoke to test this script on CPU)")
        return 3
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {
        "device": "cuda" if cuda and not args.smoke else "cpu",
        "work": work,
        "headlines": find_headlines(args.headlines),
    }
    ctx["model"], model_note = resolve_model(args, work)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device_name": torch.cuda.get_device_name(0)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "smoke": args.smoke,
        "model": ctx["model"],
        "model_note": model_note,
        "headlines": str(ctx["headlines"]) if ctx["headlines"] else "not found: synthetic stand-in",
        "steps": {},
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name_suffix = "_smoke" if args.smoke else ""
    ok = True
    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        if name not in STEPS:
            say(f"unknown step {name!r}; choose from {', '.join(STEPS)}")
            return 2
        say(f"step {name} ...")
        t0 = time.perf_counter()
        try:
            res = STEPS[name](args, ctx)
        except Exception as exc:  # noqa: BLE001 -- record and go on with the next step
            res = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:],
                "ok": False,
            }
        res["step_s"] = round(time.perf_counter() - t0, 1)
        ok &= bool(res.get("ok", True))
        report["steps"][name] = res
        say(f"step {name}: {json.dumps(res, default=str)[:600]}")
        (out_dir / f"gpu_check{name_suffix}.json").write_text(
            json.dumps(report, indent=2, default=str) + "\n"
        )
    (out_dir / f"gpu_check{name_suffix}.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
