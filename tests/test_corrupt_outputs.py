"""Issue 20, defect 3: a truncated or corrupt file in a run directory is one line naming the file and
the command that rebuilds it (exit 2, no traceback), and a full disk during ``engine report`` leaves
the previous outputs as they were (every output is written to a temporary name, then renamed).

Real runs, real files: a finished run on 120 of the tutorial's headlines is copied per case and one
of its files is cut in half, as a full disk or a killed copy leaves it.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import ENV, assert_one_line_error, engine


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared_data_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corrupt")
    source = Path(shared_data_dir) / "news_headlines_2024" / "news_data_dedup.csv"
    corpus = root / "headlines.csv"
    with open(source, encoding="utf-8") as fh:
        corpus.write_text("".join(line for _, line in zip(range(121), fh, strict=False)), encoding="utf-8")
    out = root / "run"
    proc = engine(
        "run", str(corpus), "--out", str(out), "--model", "all-MiniLM-L6-v2", "--k", "10", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, corpus


def _copy_with_cut_file(run: Path, tmp_path: Path, name: str, prepare: tuple[str, ...] | None = None) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if prepare:
        assert engine(*prepare, "--out", str(copy), "--quiet").returncode == 0
    path = copy / name
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    return copy


@pytest.mark.parametrize(
    ("name", "command", "rebuild"),
    [
        ("corpus.parquet", "cluster", "engine embed"),
        ("corpus.parquet", "report", "engine embed"),
        ("corpus_stats.json", "report", "engine embed"),
        ("embeddings.npy", "cluster", "engine embed"),
        ("embeddings.npy", "report", "engine embed"),
        ("knn_arrays.npz", "cluster", "engine graph"),
        ("knn_arrays.npz", "map", "engine graph"),
        ("clusters.npz", "report", "engine cluster"),
        ("cluster_embedding.npy", "map", "engine cluster"),
        ("coords.npy", "report", "engine map"),
        ("labels.parquet", "assign", "engine report"),
    ],
)
def test_a_cut_input_file_is_one_line_naming_it_and_its_rebuild(
    finished_run, tmp_path, name, command, rebuild
):
    run, corpus = finished_run
    prepare = None
    if name == "cluster_embedding.npy":  # only the embedding cluster space leaves one for the map
        prepare = ("cluster", "--cluster-space", "embedding")
    copy = _copy_with_cut_file(run, tmp_path, name, prepare)
    args = [command, str(corpus)] if command == "assign" else [command]
    proc = engine(*args, "--out", str(copy), "--quiet")
    assert_one_line_error(proc, str(copy / name), "unreadable", rebuild)


def _digests(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}


@pytest.mark.parametrize("limit_kib", [8, 64])
def test_full_disk_during_report_keeps_the_previous_outputs(finished_run, tmp_path, limit_kib):
    """RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk fails with ENOSPC
    (Python ignores SIGXFSZ): the first output too large to fit stops the report in one line; every
    file is the previous run's, byte for byte, and no temporary file is left."""
    run, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert engine("report", "--out", str(copy), "--quiet").returncode == 0  # run.toml now names the copy
    before = _digests(copy)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_kib * 1024, limit_kib * 1024))

    proc = subprocess.run(
        [sys.executable, "-m", "engine", "report", "--out", str(copy), "--quiet"],
        capture_output=True, text=True, env=ENV, timeout=600, preexec_fn=limit,
    )  # fmt: skip
    assert_one_line_error(proc, "cannot write", "the disk is full", "the previous file is unchanged")
    assert _digests(copy) == before
    assert not [p for p in os.listdir(copy) if ".tmp-" in p]
    # with room again, the same command completes
    assert engine("report", "--out", str(copy), "--quiet").returncode == 0


@pytest.mark.slow
def test_first_run_says_it_compiles_and_the_second_compiles_nothing(finished_run, tmp_path):
    """Issue 20 (newcomer friction): the first run names the minutes it spends compiling; numba caches
    every kernel on disk, so a second run loads them: it writes no new cache entry. The default cluster
    space (Leiden, compiled C in igraph) compiles nothing; the map's node embedding (numba) does."""
    run, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cache = tmp_path / "numba_cache"  # an empty cache: as on a fresh install
    env = {**ENV, "NUMBA_CACHE_DIR": str(cache)}

    def stage(name: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "engine", name, "--out", str(copy)],
            capture_output=True, text=True, env=env, timeout=1200,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    assert "kernels (first run after installing only" not in stage("cluster").stderr
    first = stage("map")
    assert first.stderr.count("compiling the layout kernels (first run after installing only") == 1
    compiled = {p: p.stat().st_mtime_ns for p in cache.rglob("*.nbc")}
    assert compiled  # numba wrote the compiled kernels to the cache

    second = stage("map")
    assert "kernels (first run after installing only" not in second.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.nbc")} == compiled  # nothing recompiled
