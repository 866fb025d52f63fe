"""A newcomer's first and second `engine run` on the 870 headlines: the compile line, and no recompiling.

Why (issue 20): the first run was silent for minutes in the cluster stage (numba compiling). The
engine now says so in one line, and numba's on-disk cache makes later runs load the kernels. This
runs ``engine run`` twice with an empty ``NUMBA_CACHE_DIR`` (as on a fresh install; each run into a
new --out, so both do every stage) and records each run's stage seconds, whether it printed the
compile line, and how many compiled kernels each added to the cache.

    nice python benchmarks/first_run.py --out benchmarks/results/first_run.json
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEWS = ROOT.parent / "shared" / "data" / "news_headlines_2024" / "news_data_dedup.csv"
LINE = "compiling the clustering kernels"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(NEWS))
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "first_run.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "numba_cache"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NUMBA_CACHE_DIR": str(cache)}
        for attempt in (1, 2):
            out = Path(tmp) / f"run{attempt}"
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "engine", "run", args.corpus, "--out", str(out), "--model", args.model],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            summary = json.loads((out / "summary.json").read_text())
            row = {
                "run": attempt,
                "wall_s": round(wall, 1),
                "stage_seconds": summary["stage_seconds"],
                "compile_line_printed": LINE in proc.stderr,
                "cached_kernels_after": len(list(cache.rglob("*.nbc"))),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "benchmark": "first_run",
        "corpus": args.corpus,
        "model": args.model,
        "runs": rows,
        "second_vs_first_cluster_stage": round(
            rows[1]["stage_seconds"]["cluster"] / rows[0]["stage_seconds"]["cluster"], 4
        ),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "loadavg_start_end": [load_start, os.getloadavg()],
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
