"""benchmarks/gpu_check.* and gpu_prepare.py without a GPU: the smoke run end to end, the budget, the carry check.

The real figures need a lent GPU machine (benchmarks/RESULTS.md, section GPU); these tests keep the one
prepared call from rotting on machines without one.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900):
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2", **(env or {})},
        check=False,
    )


def test_make_texts_is_deterministic_and_keeps_the_corpus_first() -> None:
    from gpu_check import make_texts

    pairs = [("a", "x"), ("b", "y"), ("c", "z")]
    titles, descs = make_texts(pairs, 10)
    assert (titles, descs) == make_texts(pairs, 10)
    assert list(zip(titles[:3], descs[:3], strict=True)) == pairs
    assert len(titles) == len(descs) == 10
    assert set(descs[3:]) <= {"x", "y", "z"}


def test_clock_keeps_the_later_steps_shares() -> None:
    import time

    from gpu_check import Clock

    clock = Clock(time.time(), 100, {"a": 10, "b": 30})
    assert 59 < clock.allowance(["a", "b"]) <= 60
    assert 89 < clock.allowance(["a"]) <= 90


def test_without_cuda_and_without_smoke_it_refuses_plainly(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check would run")
    proc = run([sys.executable, str(BENCH / "gpu_check.py"), "--out-dir", str(tmp_path)])
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stdout
    assert not list(tmp_path.iterdir())


def test_a_spent_budget_skips_steps_with_a_reason(tmp_path) -> None:
    proc = run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--budget", "1", "--steps", "knn,run"]
        + ["--work", str(tmp_path / "work"), "--out-dir", str(tmp_path)]
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    steps = json.loads((tmp_path / "gpu_check_smoke.json").read_text())["steps"]
    assert set(steps) == {"knn", "run"}
    assert all("allowance" in s["skipped"] and s["ok"] is False for s in steps.values())


def test_prepare_writes_the_sample_and_refuses_an_oversized_carry(tmp_path, shared_data_dir) -> None:
    dest = tmp_path / "whl"
    prep = [sys.executable, str(BENCH / "gpu_prepare.py"), "--skip-download", "--dest", str(dest)]
    proc = run([*prep, "--data-dir", shared_data_dir])
    assert proc.returncode == 0, proc.stderr
    with gzip.open(dest / "headlines.jsonl.gz", "rt", encoding="utf-8") as fh:
        pairs = [json.loads(line) for line in fh]
    assert len(pairs) > 20_000 and all(len(p) == 2 and (p[0] or p[1]) for p in pairs)
    with open(dest / "big.whl", "wb") as fh:  # sparse: counts 70 MiB, writes nothing
        fh.truncate(70 * 1024**2)
    proc = run([*prep, "--data-dir", shared_data_dir])
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "64 MiB" in proc.stderr


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path) -> None:
    """Every step at toy sizes on the CPU, through gpu_check.sh, as the device call runs it."""
    proc = run(
        ["bash", str(BENCH / "gpu_check.sh"), "--smoke", "--budget", "600", "--work", str(tmp_path / "w")],
        env={"OUT": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["env", "model", "embed", "knn", "cluster_map", "run"]
    assert all(s["ok"] for s in steps.values()), {k: s.get("error") for k, s in steps.items()}
    methods = steps["embed"]["methods"]
    assert set(methods) == {"flagembedding_encode_fp16", "engine_loop_bf16", "engine_loop_fp16"}
    assert all(m["docs_per_s"] > 0 and m["tokens_per_s"] > 0 for m in methods.values())
    assert methods["engine_loop_bf16"]["cosine_vs_encode_min"] >= 0.99
    assert all(r["recall_vs_cpu_exact"] == 1.0 for r in steps["knn"]["runs"].values())
    assert steps["run"]["rc"] == 0 and steps["run"]["documents"] == 600
    assert set(steps["run"]["stages"]) >= {"embed", "graph", "cluster", "map", "report"}
    assert report["used_s"] < 600
    assert (tmp_path / "gpu_check_smoke.md").read_text().startswith("### GPU check")
    assert (tmp_path / "gpu_check_smoke.log").stat().st_size > 0
