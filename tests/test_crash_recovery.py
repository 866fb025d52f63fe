"""Crashes are survivable (issue 11): the engine-run Milvus server killed mid-ingest and mid-graph, the
engine itself killed (its server must not outlive it), a second command on a locked run directory, and
no credential from the URI in any file of the run directory. Real servers and processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.milvus.server import STATE_FILE, stop_orphan
from engine.rundir import LOCK_NAME, RunLock
from tests.fixtures.processes import EngineProcess
from tests.test_cli import ENV, assert_one_line_error, engine

REPO = Path(__file__).resolve().parents[1]
N_DOCS = 1500


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data_dir) -> Path:
    frame = pd.read_csv(
        os.path.join(shared_data_dir, "ag_news", "test.csv"),
        header=None,
        names=["cls", "title", "description"],
    ).iloc[:N_DOCS]
    path = tmp_path_factory.mktemp("crash") / "ag1500.csv"
    frame[["title", "description"]].to_csv(path, index=False)
    return path


def _run_args(corpus: Path, out: Path, model: Path) -> list[str]:
    return ["run", str(corpus), "--out", str(out), "--model", str(model), "--k", "10", "--recall-sample", "0"]


def run_and_kill(
    args: list[str], trigger: str, victim: str, out: Path, timeout: float = 600
) -> tuple[int, str]:
    """Run the engine; when ``trigger`` appears on its stderr, SIGKILL the ``victim`` ("server" or "engine")."""
    killed = threading.Event()

    def kill_on_trigger(run: EngineProcess, line: str) -> None:
        if not killed.is_set() and trigger in line:
            if victim == "engine":
                run.proc.send_signal(signal.SIGKILL)
            else:
                state = json.loads((out / "milvus_server" / STATE_FILE).read_text())
                os.kill(state["pid"], signal.SIGKILL)
            killed.set()

    run = EngineProcess(args, ENV, on_line=kill_on_trigger)
    rc = run.wait(timeout=timeout)
    assert killed.is_set(), f"{trigger!r} never appeared:\n{run.text[-3000:]}"
    return rc, run.text


def _labels(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "labels.parquet").sort_values("id").reset_index(drop=True)


@pytest.mark.slow  # five engine runs, each starting a standalone Milvus: ~3 min on 2 cores
def test_server_killed_mid_ingest_and_mid_graph_then_rerun_matches_a_clean_run(
    tmp_path, corpus, tiny_bge_m3_path
):
    pytest.importorskip("milvus")
    clean_out, out = tmp_path / "clean", tmp_path / "crashed"
    clean = engine(*_run_args(corpus, clean_out, tiny_bge_m3_path), "--milvus-uri", "local-server", "--quiet")
    assert clean.returncode == 0, clean.stderr[-3000:]
    args = [*_run_args(corpus, out, tiny_bge_m3_path), "--milvus-uri", "local-server"]

    rc, err = run_and_kill(args, "created collection", "server", out)
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Milvus server" in errors[0] and "embed stage" in errors[0], errors
    assert "re-run the same command" in errors[0]

    rc, err = run_and_kill(args, "[graph] started", "server", out)
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "graph stage" in errors[0], errors

    final = engine(*args, "--quiet")
    assert final.returncode == 0, final.stderr[-3000:]
    got, want = _labels(out), _labels(clean_out)
    assert len(got) == N_DOCS and got["id"].is_unique
    np.testing.assert_array_equal(got["id"], want["id"])
    np.testing.assert_array_equal(got["cluster"], want["cluster"])  # same graph, same clusters

    from engine.milvus.server import LocalMilvusServer
    from engine.milvus.store import MilvusStore

    with LocalMilvusServer(out / "milvus_server", port=0) as server, MilvusStore(server.uri) as store:
        ids = store.existing_ids()
    assert len(ids) == N_DOCS and len(np.unique(ids)) == N_DOCS  # exactly N, none twice


@pytest.mark.slow  # two engine runs with a standalone Milvus
def test_killed_engine_leaves_no_server_behind_and_rerun_works(tmp_path, corpus, tiny_bge_m3_path):
    pytest.importorskip("milvus")
    out = tmp_path / "out"
    args = [*_run_args(corpus, out, tiny_bge_m3_path), "--milvus-uri", "local-server"]
    rc, _ = run_and_kill(args, "created collection", "engine", out)
    assert rc == -signal.SIGKILL
    state = json.loads((out / "milvus_server" / STATE_FILE).read_text())
    deadline = time.monotonic() + 30  # the server got SIGTERM when its parent died
    while Path(f"/proc/{state['pid']}").exists() and time.monotonic() < deadline:
        cmd = Path(f"/proc/{state['pid']}/cmdline").read_bytes()
        if not cmd:  # a zombie waiting to be reaped
            break
        time.sleep(0.5)
    assert (
        not Path(f"/proc/{state['pid']}/cmdline").exists()
        or not Path(f"/proc/{state['pid']}/cmdline").read_bytes()
    ), "the engine-run server outlived the engine"
    t0 = time.monotonic()
    rerun = engine(*args, "--quiet")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "did not stop" not in rerun.stderr  # a clean stop at the end, no 30 s kill
    assert len(_labels(out)) == N_DOCS
    print(f"re-run after the engine was killed: {time.monotonic() - t0:.1f} s")


def test_orphaned_server_record_is_stopped_and_never_a_stranger(tmp_path):
    """stop_orphan on a real process named in the record; a recycled pid running something else is spared."""
    orphan = subprocess.Popen(["sleep", "300"])
    deadline = time.monotonic() + 10  # until the child has exec'd (an orphan long has)
    while b"sleep" not in Path(f"/proc/{orphan.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        (tmp_path / STATE_FILE).write_text(json.dumps({"pid": orphan.pid, "exe": "sleep"}))
        assert stop_orphan(tmp_path, timeout=10) == orphan.pid
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert not (tmp_path / STATE_FILE).exists()
        stranger = subprocess.Popen(["sleep", "300"])
        (tmp_path / STATE_FILE).write_text(json.dumps({"pid": stranger.pid, "exe": "/x/bin/milvus"}))
        assert stop_orphan(tmp_path) is None
        assert stranger.poll() is None
        stranger.kill()
        stranger.wait()
    finally:
        if orphan.poll() is None:
            orphan.kill()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_second_command_on_a_locked_out_refuses_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    other = tmp_path / "other.csv"
    other.write_text("title,description\n" + "".join(f"t{i},d{i}\n" for i in range(60)))
    with RunLock(out, "run"):  # a real flock, held as a running `engine run` holds it
        (out / "corpus.parquet").write_bytes(b"first run's data")
        before = _snapshot(out)
        t0 = time.monotonic()
        proc = engine("run", str(other), "--out", str(out), "--model", "all-MiniLM-L6-v2")
        assert time.monotonic() - t0 < 30
        assert_one_line_error(proc, f"--out {out} is in use by `engine run` (pid {os.getpid()}")
        for command in (["embed", str(other)], ["cluster"], ["report"]):
            assert_one_line_error(engine(*command, "--out", str(out)), "is in use")
        assert _snapshot(out) == before


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "command": "run", "started": time.time()}))
    corpus = tmp_path / "docs.csv"
    corpus.write_text("title,description\n" + "".join(f"t{i},d{i}\n" for i in range(20)))
    proc = engine("run", str(corpus), "--out", str(out), "--model", "all-MiniLM-L6-v2", "--k", "50")
    assert f"taking over the lock of `engine run` (pid {dead.pid}), which is no longer running" in proc.stderr
    assert_one_line_error(proc, "--k (50)")  # then ran (and stopped at its own bad option)
    assert (out / LOCK_NAME).read_text() == ""  # released on the way out


def test_no_credential_from_the_uri_in_any_file_of_the_run_directory(
    tmp_path, milvus_server, tiny_bge_m3_path
):
    if os.environ.get("MILVUS_TEST_URI"):
        pytest.skip("needs the session's own local server (no auth), not an external one")
    uri = milvus_server.replace("http://", "http://root:SECRET-PASSWORD@")
    corpus = tmp_path / "docs.csv"
    corpus.write_text("title,description\n" + "".join(f"title {i},text {i}\n" for i in range(40)))
    out = tmp_path / "out"
    proc = engine(
        "run", str(corpus), "--out", str(out), "--model", str(tiny_bge_m3_path), "--milvus-uri", uri,
        "--collection", "secret_check", "--k", "5", "--restart",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SECRET-PASSWORD" not in proc.stderr + proc.stdout
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        assert b"SECRET-PASSWORD" not in path.read_bytes(), path
    assert 'milvus_uri = "http://127.0.0.1:' in (out / "run.toml").read_text()


def test_watchdog_kills_a_server_that_ignores_sigterm_once_its_engine_is_killed(tmp_path):
    """The 2.3 binary's graceful stop can hang on a loaded machine: SIGTERM, then SIGKILL after the grace."""
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)",
        ]
    )
    engine_stand_in = (
        "import subprocess, sys, time\n"
        f"w = subprocess.Popen([sys.executable, {str(REPO / 'engine/milvus/watchdog.py')!r}, "
        f"'{stubborn.pid}', 'signal.SIG_IGN', '2'], stdin=subprocess.PIPE, start_new_session=True)\n"
        "print('watching', flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", engine_stand_in], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "watching"
        time.sleep(1.0)
        assert stubborn.poll() is None  # the watchdog leaves the server alone while its engine lives
        parent.kill()  # as a user's kill -9 or the OOM killer would
        parent.wait(timeout=10)
        assert stubborn.wait(timeout=30) == -signal.SIGKILL  # SIGTERM ignored, so killed after the grace
    finally:
        for proc in (parent, stubborn):
            if proc.poll() is None:
                proc.kill()
