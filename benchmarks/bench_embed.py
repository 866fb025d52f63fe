"""Embedding throughput: FlagEmbedding ``encode`` vs the engine's fast loop, same model, same run.

CPU (default)::

    nice -n 10 python benchmarks/bench_embed.py --docs 64
        -> benchmarks/results/embed_cpu.json

GPU (one command, when an NVIDIA GPU exists)::

    python benchmarks/bench_embed.py --device cuda --docs 20000
        -> benchmarks/results/embed_cuda.json (bf16 and fp16; docs/s, tokens/s, % of 790 TFLOP/s bf16 peak)

Memory while ingesting (tiny model, Milvus Lite; one fresh process per N, so peaks do not mix)::

    nice -n 10 python benchmarks/bench_embed.py --ingest-rss 10000 25000 50000
        -> benchmarks/results/ingest_rss.json

The model is BGE-M3's full architecture (XLM-RoBERTa-large: 24 layers, hidden 1024, 16 heads, vocab 250,002)
with RANDOM weights, built offline with ``tests.fixtures.tiny_bge_m3.build_tiny_bge_m3``: throughput does not depend on
the weight values. Its tokenizer is a Unigram model trained on the headlines themselves, so token counts are
close to (not equal to) the real BGE-M3 tokenizer's; tokens/doc is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NEWS = ROOT.parent / "shared" / "data" / "news_headlines_2024" / "news_data_dedup.csv"
BF16_PEAK_TFLOPS = 790.0  # H100 SXM dense bf16
NON_EMBEDDING_PARAMS = 312e6  # BGE-M3 outside the embedding table


def load_headlines(n: int) -> list[str]:
    """title + newline + description, repeated (with a suffix) when n exceeds the 870 headlines."""
    import pandas as pd

    df = pd.read_csv(NEWS)
    base = (df["title"].fillna("") + "\n" + df["description"].fillna("")).str.strip().tolist()
    out = [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(n)]
    return out


def build_full_model(path: Path) -> Path:
    from tests.fixtures.tiny_bge_m3 import BGE_M3_CONFIG, build_tiny_bge_m3

    if (path / "model.safetensors").exists():
        return path
    t0 = time.perf_counter()
    build_tiny_bge_m3(path, texts=load_headlines(870), tokenizer_vocab=8000, **BGE_M3_CONFIG)
    print(f"built full-size random BGE-M3 at {path} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return path


def count_tokens(tokenizer, texts: list[str], max_length: int) -> int:
    return sum(len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_cpu(args) -> dict:
    """All three loaded at once and timed in interleaved rounds, so load from other processes hits each alike."""
    import torch

    from engine.embed import load_encoder, load_flag_model
    from engine.hardware import cpu_supports_bf16

    torch.set_num_threads(args.threads)
    model_dir = build_full_model(Path(args.model_dir))
    texts = load_headlines(args.docs)
    flag = load_flag_model(str(model_dir), device="cpu", use_fp16=False)
    n_tokens = count_tokens(flag.tokenizer, texts, args.max_length)
    methods = {
        f"FlagEmbedding encode (fp32, batch_size={args.flag_batch_size})": lambda: flag.encode(
            texts, batch_size=args.flag_batch_size, max_length=args.max_length
        )["dense_vecs"],
    }
    for precision in ("fp32", "bf16"):
        enc = load_encoder(str(model_dir), device="cpu", precision=precision, max_length=args.max_length)
        methods[f"engine fast loop ({precision})"] = enc.encode
    flag.encode(texts[:4], batch_size=4, max_length=args.max_length)  # warm-up
    for fn in list(methods.values())[1:]:
        fn(texts[:4])
    times: dict[str, list[float]] = {name: [] for name in methods}
    vecs: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            vecs[name] = fn() if name.startswith("Flag") else fn(texts)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r}: {name}: {times[name][-1]:.1f}s", file=sys.stderr, flush=True)
    ref = vecs[next(iter(methods))]
    rows = []
    for name in methods:
        med = float(np.median(times[name]))
        rows.append(
            {
                "method": name,
                "seconds_per_round": times[name],
                "median_seconds": med,
                "docs_per_s": len(texts) / med,
                "min_cosine_vs_flagembedding": float((vecs[name] * ref).sum(1).min()),
            }
        )
    for row in rows:
        row["speedup_vs_flagembedding"] = row["docs_per_s"] / rows[0]["docs_per_s"]
    return {
        "benchmark": "embed_cpu",
        "note": "BGE-M3 full architecture with RANDOM weights (throughput does not depend on weight values); "
        "news headlines title+description; same process, same model files; methods interleaved per round, "
        "median over rounds. FlagEmbedding encode runs its first batch twice (batch-size probe): part of its cost.",
        "docs": len(texts),
        "rounds": args.rounds,
        "tokens_per_doc": n_tokens / len(texts),
        "max_length": args.max_length,
        "threads": args.threads,
        "load_average_1m_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_supports_bf16(),
        "results": rows,
    }


def bench_cuda(args) -> dict:
    import torch

    from engine.embed import load_encoder, load_flag_model

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here")
    model_dir = build_full_model(Path(args.model_dir))
    texts = load_headlines(args.docs)
    rows = []
    flag = load_flag_model(str(model_dir), device="cuda:0", use_fp16=True)
    n_tokens = count_tokens(flag.tokenizer, texts, args.max_length)
    base_texts = texts[: min(len(texts), args.flag_docs)]
    flag.encode(base_texts[:256], batch_size=256, max_length=args.max_length)
    torch.cuda.synchronize()
    s = timed(lambda: flag.encode(base_texts, batch_size=args.flag_batch_size, max_length=args.max_length))
    base_tokens = count_tokens(flag.tokenizer, base_texts, args.max_length)
    rows.append(
        {
            "method": f"FlagEmbedding encode (fp16, batch_size={args.flag_batch_size})",
            "docs": len(base_texts),
            "seconds": s,
            "docs_per_s": len(base_texts) / s,
            "tokens_per_s": base_tokens / s,
        }
    )
    flag.model.to("cpu")
    flag = None  # free its memory before the engine loads its own copy
    torch.cuda.empty_cache()
    for precision in ("bf16", "fp16"):
        enc = load_encoder(
            str(model_dir),
            device=args.cuda_devices,
            precision=precision,
            max_length=args.max_length,
            token_budget=args.token_budget,
        )
        enc.encode(texts[:2048])  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        s = timed(lambda enc=enc: enc.encode(texts), repeats=2)
        tflops = 2 * NON_EMBEDDING_PARAMS * n_tokens / s / 1e12
        rows.append(
            {
                "method": f"engine fast loop ({precision})",
                "docs": len(texts),
                "seconds": s,
                "docs_per_s": len(texts) / s,
                "tokens_per_s": n_tokens / s,
                "tflops": tflops,
                "fraction_of_bf16_peak": tflops / BF16_PEAK_TFLOPS,
            }
        )
        del enc
        torch.cuda.empty_cache()
    for r in rows:
        r["speedup_vs_flagembedding"] = r["docs_per_s"] / rows[0]["docs_per_s"]
    return {
        "benchmark": "embed_cuda",
        "note": "BGE-M3 full architecture with RANDOM weights; FLOPs ~ 2 * 312M * tokens; "
        f"peak {BF16_PEAK_TFLOPS} TFLOP/s (H100 SXM dense bf16)",
        "gpu": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "docs": len(texts),
        "tokens_per_doc": n_tokens / len(texts),
        "max_length": args.max_length,
        "token_budget": args.token_budget,
        "results": rows,
    }


RSS_CHILD = r"""
import json, os, sys, tempfile, time
import numpy as np, pandas as pd, psutil, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from engine.embed import load_encoder
from tests.fixtures.tiny_bge_m3 import build_tiny_bge_m3, synthetic_corpus
from engine.ingest import ingest
from engine.milvus.store import MilvusStore
n, kind = int(sys.argv[2]), sys.argv[3]


class NullStore:  # diagnostic only: the store API with inserts dropped (engine memory without Lite's)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def ensure_collection(self, dim, drop_existing=False):
        pass

    def existing_ids(self):
        return np.empty(0, dtype=np.int64)

    def insert(self, ids, vectors, texts):
        return len(ids)

    def flush(self):
        pass

    def count_rows(self):
        return -1


with tempfile.TemporaryDirectory() as tmp:
    model = build_tiny_bge_m3(os.path.join(tmp, "tiny"))
    texts = synthetic_corpus(n, seed=11)
    frame = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "text": texts})
    enc = load_encoder(str(model), device="cpu", max_length=64)
    store_cm = MilvusStore(os.path.join(tmp, "milvus.db")) if kind == "lite" else NullStore()
    with store_cm as store:
        store.ensure_collection(enc.dim)
        before = psutil.Process().memory_info().rss / 2**20
        res = ingest(frame, enc, store, os.path.join(tmp, "emb.npy"), progress=False)
        count = store.count_rows()
    print("RESULT " + json.dumps({"n": n, "store": kind, "rss_before_ingest_mb": before, "peak_rss_mb": res.peak_rss_mb,
          "seconds": res.seconds, "docs_per_s": res.docs_per_s, "count": count}), flush=True)
"""


def bench_ingest_rss(sizes: list[int]) -> dict:
    rows = []
    for kind, n in [(k, n) for k in ("lite", "null") for n in sizes]:
        env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        out = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, str(ROOT), str(n), kind],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        row = json.loads(out.split("RESULT ", 1)[1])
        rows.append(row)
        print(row, file=sys.stderr)
    return {
        "benchmark": "ingest_rss",
        "note": "tiny BGE-M3-shaped model (hidden 64, 2 layers), synthetic short documents, Milvus Lite; "
        "one fresh process per N; peak RSS = ru_maxrss of the whole process (model + Milvus Lite included); "
        "store=null drops inserts (diagnostic: the engine's own memory without Lite's in-process data)",
        "results": rows,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--docs", type=int, default=None, help="documents (cpu default 64, cuda default 20000)")
    p.add_argument(
        "--flag-docs", type=int, default=5000, help="cuda: documents for the FlagEmbedding baseline"
    )
    p.add_argument(
        "--flag-batch-size", type=int, default=None, help="FlagEmbedding batch_size (cpu 16, cuda 256)"
    )
    p.add_argument("--rounds", type=int, default=2, help="cpu: interleaved timing rounds")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument(
        "--cuda-devices", default="cuda", help="cuda: 'cuda' (all GPUs, one worker each) or 'cuda:0'"
    )
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "engine_bge_m3_random"))
    p.add_argument("--ingest-rss", type=int, nargs="*", default=None, metavar="N")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.ingest_rss is not None:
        result, name = bench_ingest_rss(args.ingest_rss or [10_000, 25_000, 50_000]), "ingest_rss.json"
    elif args.device == "cuda":
        args.docs = args.docs or 20_000
        args.flag_batch_size = args.flag_batch_size or 256
        result, name = bench_cuda(args), "embed_cuda.json"
    else:
        args.docs = args.docs or 64
        args.flag_batch_size = args.flag_batch_size or 16
        result, name = bench_cpu(args), "embed_cpu.json"
    result["command"] = "python benchmarks/bench_embed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out) if args.out else RESULTS / name
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
