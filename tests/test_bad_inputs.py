"""Every bad input stops with one ``error:`` line naming the option, file or line, exit 2, no traceback,
before the model loads (issue 11). Each case runs the real CLI in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.summary import zero_cluster_hint
from tests.test_cli import assert_one_line_error, engine

MODEL = ["--model", "all-MiniLM-L6-v2"]


def _corpus(path: Path, n: int = 60) -> Path:
    path.write_text("title,description\n" + "".join(f"title {i},description {i}\n" for i in range(n)))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return _corpus(tmp_path / "docs.csv")


def _no_work_done(out: Path) -> None:
    """Nothing past reading the corpus: no vectors, no Milvus store."""
    assert not (out / "embeddings.npy").exists()
    assert not (out / "milvus.db").exists()


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--search-params", '{"ef": "abc"}'], ["--search-params", "'ef'", "'abc'"]),
        (["--encoding", "bogus-enc"], ["--encoding 'bogus-enc'", "not a known text encoding"]),
        (["--index", "HNSW", "--index-params", '{"M": -5}'], ["--index-params", "'M'", "2..2048", "-5"]),
        (["--index", "HNSW", "--index-params", '{"M": 0}'], ["--index-params", "'M'", "got 0"]),
        (["--index", "IVF_FLAT", "--index-params", '{"nlist": 1e9}'], ["'nlist'", "1..65536"]),
        (["--index", "BOGUS"], ["--index must be one of", "'BOGUS'"]),
        (["--index", "IVF_PQ"], ["--index IVF_PQ is not available on Milvus Lite"]),
        (["--collection", "9-bad name"], ["--collection '9-bad name'", "not a valid Milvus collection name"]),
        (["--k", "60"], ["--k (60) must be smaller than the number of documents (60)"]),
        (["--min-cluster-size", "0"], ["--min-cluster-size must be >= 2, got 0"]),
        (["--min-cluster-size", "1"], ["--min-cluster-size must be >= 2, got 1"]),
        (["--k", "abc"], ["argument --k: invalid int value: 'abc'"]),
        (["--min-dist", "nan"], ["--min-dist must be a finite number"]),
        (["--workers", "100000"], ["--workers must be within 1..256"]),
        (["--seed", "-1"], ["--seed must be within 0..4294967295"]),
        (["--time-column", "published"], ["--time-column 'published' is not a column of the corpus"]),
        (["--time-column", "title"], ["--time-column 'title'", "not dates"]),
    ],
)
def test_bad_option_is_one_line_before_any_work(tmp_path, corpus, flags, needles):
    out = tmp_path / "out"
    proc = engine("run", str(corpus), "--out", str(out), *MODEL, *flags, timeout=120)
    assert_one_line_error(proc, *needles)
    _no_work_done(out)
    saved = out / "run.toml"
    if saved.exists():  # a refused value is never saved for later stage commands to repeat
        text = saved.read_text()
        assert '"M" = -5' not in text and '"M" = 0' not in text and '"ef" = "abc"' not in text


def test_out_naming_a_file_or_unwritable_place(tmp_path, corpus):
    a_file = tmp_path / "afile"
    a_file.write_text("keep me")
    assert_one_line_error(engine("run", str(corpus), "--out", str(a_file), *MODEL), "--out", "existing file")
    assert a_file.read_text() == "keep me"
    if os.geteuid() == 0:  # root ignores permissions: /sys refuses directory creation to everyone
        target = "/sys/engine-test-out"
    else:
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o555)
        target = str(locked / "out")
    assert_one_line_error(engine("run", str(corpus), "--out", target, *MODEL), f"--out {target}", "cannot")


def test_config_file_type_errors_name_the_file(tmp_path, corpus):
    bad = tmp_path / "bad.toml"
    bad.write_text('k = "abc"\n')
    proc = engine("run", str(corpus), "--out", str(tmp_path / "o"), "--config", str(bad), *MODEL)
    assert_one_line_error(proc, str(bad), "--k must be an integer", "'abc'")
    floaty = tmp_path / "float.toml"
    floaty.write_text("[cluster]\nmin_cluster_size = 5.5\n")
    proc = engine("run", str(corpus), "--out", str(tmp_path / "o"), "--config", str(floaty), *MODEL)
    assert_one_line_error(proc, str(floaty), "--min-cluster-size must be an integer", "5.5")


def test_unbalanced_quote_names_the_line(tmp_path):
    lines = ["title,description"] + [f"title {i},description {i}" for i in range(60)]
    lines[10] = '"title 9 with an open quote,description 9'
    lines[11] = 'title 10,"description 10"'
    path = tmp_path / "quotes.csv"
    path.write_text("\n".join(lines) + "\n")
    proc = engine("run", str(path), "--out", str(tmp_path / "o"), *MODEL)
    assert_one_line_error(proc, "quotes.csv: line 11: unbalanced quote")
    _no_work_done(tmp_path / "o")
    open_to_end = tmp_path / "eof.csv"
    open_to_end.write_text('title,description\na,b\n"never closed,c\nd,e\n')
    assert_one_line_error(
        engine("run", str(open_to_end), "--out", str(tmp_path / "o2"), *MODEL), "line 3", "end of the file"
    )


def test_invalid_utf8_reports_the_true_byte_offset_and_line(tmp_path):
    body = "title,description\n" + "".join(f"title {i},description {i}\n" for i in range(120))
    raw = body.encode() + b"caf\xe9,x\n"
    path = tmp_path / "latin.csv"
    path.write_bytes(raw)
    offset = raw.index(b"\xe9")
    assert offset > 2000  # past pandas' first decode chunk, where its own offset was wrong
    proc = engine("run", str(path), "--out", str(tmp_path / "o"), *MODEL)
    assert_one_line_error(proc, f"byte offset {offset}", "line 122", "--encoding")


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"title": "a", "description": "b"}\n{"title": "c", "description": "d"}\n{"title": \n')
    assert_one_line_error(
        engine("run", str(path), "--out", str(tmp_path / "o"), *MODEL), "docs.jsonl: line 3"
    )


def test_zero_cluster_hints_say_why():
    assert "same text" in zero_cluster_hint(50, 1, 5)
    assert "cannot form two groups of --min-cluster-size 5" in zero_cluster_hint(3, 3, 5)
    assert "distinct texts" in zero_cluster_hint(40, 6, 5)
    assert "smaller --min-cluster-size" in zero_cluster_hint(500, 500, 5)


def test_identical_texts_end_with_a_hint_not_a_bare_zero(tmp_path):
    path = tmp_path / "same.csv"
    path.write_text("title,description\n" + "the same headline,same\n" * 50)
    proc = engine("run", str(path), "--out", str(tmp_path / "o"), *MODEL, "--k", "10", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 clusters: all 50 documents have the same text" in proc.stdout
