"""`engine search` while `engine run --milvus-uri local-server` re-runs on the same --out (issue 20, defect 1).

Why: a search used to start a second Milvus server on the run's data directory, whose orphan cleanup
killed the run's own server (exit -6) and the run failed. This repeats the case: one first run, then
``--repeats`` times: re-run, wait for ``[graph] started``, run ``engine search`` on the same --out, wait
for both. Each repeat records the run's exit code, whether its labels match the first run's, and the
search's exit code and first error line (exit 0 = it used the run's server; exit 2 = one clean refusal).

    nice -n 10 python benchmarks/reader_during_run.py --limit 870 --repeats 5 \\
        --out benchmarks/results/reader_during_run.json
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

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fixtures.processes import EngineProcess  # noqa: E402

NEWS = ROOT.parent / "shared" / "data" / "news_headlines_2024" / "news_data_dedup.csv"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=ENV)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(NEWS))
    parser.add_argument("--limit", type=int, default=870)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reader_during_run.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="reader_during_run_"))
    out = work / "run"
    run_args = [
        "run", args.corpus, "--out", str(out), "--model", "all-MiniLM-L6-v2", "--limit", str(args.limit),
        "--milvus-uri", "local-server",
    ]  # fmt: skip
    t0 = time.perf_counter()
    first = engine(*run_args, "--quiet")
    if first.returncode != 0:
        print(first.stderr, file=sys.stderr)
        return 1
    print(f"first run: {time.perf_counter() - t0:.0f} s", flush=True)
    reference = pd.read_parquet(out / "labels.parquet")["cluster"].tolist()
    results = []
    for i in range(args.repeats):
        t = time.perf_counter()
        run = EngineProcess(run_args, ENV)
        run.wait_for("[graph] started", timeout=3600)
        search_at = time.perf_counter() - t
        search = engine("search", "election", "--out", str(out), "--json", "--quiet")
        code = run.wait()
        labels = pd.read_parquet(out / "labels.parquet")["cluster"].tolist() if code == 0 else None
        errors = [line for line in search.stderr.splitlines() if line.startswith("error: ")]
        row = {
            "repeat": i + 1,
            "run_exit": code,
            "run_seconds": round(time.perf_counter() - t, 1),
            "run_labels_identical": labels == reference,
            "search_started_s": round(search_at, 1),
            "search_exit": search.returncode,
            "search_hits": len(search.stdout.splitlines()) if search.returncode == 0 else 0,
            "search_error": errors[0] if errors else None,
            "search_traceback": "Traceback" in search.stderr,
            "server_left_running": (out / "milvus_server" / "engine-server.json").exists(),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "loadavg_start_end": [load_start, os.getloadavg()],
                "corpus": args.corpus,
                "limit": args.limit,
                "repeats": results,
                "all_runs_alive_and_complete": all(
                    r["run_exit"] == 0 and r["run_labels_identical"] for r in results
                ),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
