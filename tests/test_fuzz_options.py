"""Fuzz every numeric option and index/search parameter: never a traceback, bounded memory (issue 11).

The driver (tests/fuzz_cli.py) runs in a child process; this test samples the child's resident
memory and kills it past the bound (one bad value once grew a run to 21 GB). Seeded, so CI is
reproducible; FUZZ_SEED picks another seed locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

RSS_LIMIT_MB = 3000


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@pytest.mark.slow
def test_fuzz_numeric_options_never_traceback_and_memory_stays_bounded(tmp_path, shared_data_dir):
    corpus = tmp_path / "docs.csv"
    lines = (Path(shared_data_dir) / "news_headlines_2024" / "news_data_dedup.csv").read_text().splitlines()
    corpus.write_text("\n".join(lines[:81]) + "\n")  # header + 80 headlines
    seed = os.environ.get("FUZZ_SEED", "11")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    # files, not pipes: the child prints one JSON line per case (over 64 KiB, a full pipe would block it)
    out_path, err_path = tmp_path / "fuzz.jsonl", tmp_path / "fuzz.err"
    with open(out_path, "w") as out_fh, open(err_path, "w") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz_cli", "--corpus", str(corpus), "--out", str(tmp_path / "out")]
            + ["--seed", seed, "--runs", "2"],
            cwd=root,
            env=env,
            stdout=out_fh,
            stderr=err_fh,
            text=True,
        )
    peak = 0.0
    deadline = time.monotonic() + 600
    while proc.poll() is None:
        peak = max(peak, _rss_mb(proc.pid))
        if peak > RSS_LIMIT_MB or time.monotonic() > deadline:
            proc.kill()
            break
        time.sleep(0.1)
    proc.wait()
    out, err = out_path.read_text(), err_path.read_text()
    assert peak <= RSS_LIMIT_MB, f"fuzz child grew to {peak:.0f} MB; last cases: {out.splitlines()[-3:]}"
    assert proc.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in out.splitlines()]
    rejected = [r for r in records if not r.get("accepted") and r["phase"] == 1]
    runs = [r for r in records if r["phase"] == 2]
    assert len(rejected) > 100 and len(runs) == 2
    for r in rejected + runs:
        assert not r["has_traceback"], r
        assert r["rc"] in (0, 2), r
        if r["rc"] == 2:
            assert len(r["error_lines"]) == 1, r
    print(f"fuzz: {len(records)} cases, {len(rejected)} rejected with one line, peak RSS {peak:.0f} MB")
