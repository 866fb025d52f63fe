"""Corpus stage: formats, templates, stable ids, empty/duplicate policies, and every bad-input error."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from engine.corpus import build_texts, load_corpus, stable_ids, template_fields
from engine.errors import EngineError

ROWS = [
    {"guid": "a1", "title": "Stocks rally", "description": "Markets rose on Monday."},
    {"guid": "b2", "title": "Team wins cup", "description": None},
    {"guid": "c3", "title": None, "description": None},
    {"guid": "d4", "title": "Stocks rally", "description": "Markets rose on Monday."},
    {"guid": "e5", "title": "中文标题", "description": "描述"},
]


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl", "tsv"])
def test_formats_give_same_corpus(tmp_path, frame, ext):
    path = tmp_path / f"c.{ext}"
    if ext == "csv":
        frame.to_csv(path, index=False)
    elif ext == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif ext == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    corpus = load_corpus(path)
    assert list(corpus.frame["text"]) == [
        "Stocks rally\nMarkets rose on Monday.",
        "Team wins cup",
        "Stocks rally\nMarkets rose on Monday.",
        "中文标题\n描述",
    ]
    # ids are row numbers in the file, so the dropped empty row 2 leaves a gap: ids stay stable
    assert corpus.frame["id"].tolist() == [0, 1, 3, 4]
    assert corpus.stats["empty_texts"] == 1
    assert corpus.stats["duplicate_texts"] == 1
    assert corpus.stats["documents"] == 4
    assert "guid" in corpus.frame.columns


def test_duplicates_drop_and_empty_error(tmp_path, frame):
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    corpus = load_corpus(path, duplicates="drop")
    assert corpus.frame["id"].tolist() == [0, 1, 4]
    with pytest.raises(EngineError, match=r"row 2 \(file line 4\) has empty text"):
        load_corpus(path, empty="error")


def test_text_column_and_id_column(tmp_path, frame):
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    corpus = load_corpus(path, text_column="title", id_column="guid")
    ids = corpus.frame["id"].to_numpy()
    assert ids.dtype == np.int64 and (ids >= 0).all()
    # the same guid always maps to the same id, whatever the row order
    again = load_corpus(path, text_column="title", id_column="guid", duplicates="drop")
    assert set(again.frame["id"]) <= set(ids)
    shuffled = frame.iloc[::-1]
    shuffled.to_csv(tmp_path / "s.csv", index=False)
    rev = load_corpus(tmp_path / "s.csv", text_column="title", id_column="guid")
    assert dict(zip(rev.frame["guid"], rev.frame["id"], strict=True)) == dict(
        zip(corpus.frame["guid"], corpus.frame["id"], strict=True)
    )


def test_integer_id_column_kept_and_duplicates_rejected():
    assert stable_ids(pd.Series([5, 7, 9]), "n").tolist() == [5, 7, 9]
    assert stable_ids(pd.Series(["5", "7"]), "n").tolist() == [5, 7]
    with pytest.raises(EngineError, match="not unique: row 2"):
        stable_ids(pd.Series(["x", "y", "x"]), "guid")
    with pytest.raises(EngineError, match="empty at row 1"):
        stable_ids(pd.Series(["x", None]), "guid")


def test_template_with_literals_and_format_spec():
    frame = pd.DataFrame({"a": ["x", None], "n": [1.5, 2.25]})
    texts = build_texts(frame, "[{a}] {n:.1f}")
    assert texts.tolist() == ["[x] 1.5", "[] 2.2"]
    assert template_fields("{title}\n{description}") == ["title", "description"]


def test_headerless_file_with_columns(shared_data_dir):
    path = os.path.join(shared_data_dir, "ag_news", "test.csv")
    corpus = load_corpus(path, column_names=["label", "title", "description"], limit=100)
    assert len(corpus) == 100
    assert corpus.frame["text"].iloc[0].startswith("Fears for T N pension after talks\n")


def test_tutorial_corpus_loads(shared_data_dir):
    corpus = load_corpus(os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv"))
    assert len(corpus) == 870
    assert corpus.frame["id"].is_unique


# ---- bad input: one clear line naming the problem ------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(EngineError, match="corpus file not found"):
        load_corpus(tmp_path / "nope.csv")


def test_missing_column(tmp_path, frame):
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(EngineError, match="--text-template names column 'body'"):
        load_corpus(path, text_template="{title} {body}")
    with pytest.raises(EngineError, match="--text-column 'body' is not a column"):
        load_corpus(path, text_column="body")
    with pytest.raises(EngineError, match="--id-column 'uid' is not a column"):
        load_corpus(path, id_column="uid")


def test_bad_encoding_names_offset(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("title,description\nCaf\xe9 news,ok\n".encode("latin-1"))
    with pytest.raises(
        EngineError, match=r"line 2: cannot decode byte .* at byte offset 21 as utf-8; pass --encoding"
    ):
        load_corpus(path)
    corpus = load_corpus(path, encoding="latin-1")
    assert corpus.frame["text"].iloc[0] == "Café news\nok"


def test_zero_usable_rows(tmp_path):
    path = tmp_path / "empty_texts.csv"
    pd.DataFrame({"title": [None, None], "description": [None, ""]}).to_csv(path, index=False)
    with pytest.raises(EngineError, match="zero usable rows"):
        load_corpus(path)
    header_only = tmp_path / "header.csv"
    header_only.write_text("title,description\n")
    with pytest.raises(EngineError, match="no rows"):
        load_corpus(header_only)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(EngineError, match="the file is empty"):
        load_corpus(blank)


def test_malformed_json_and_unknown_extension(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "ok"}\n{"title": \n')
    with pytest.raises(EngineError, match="line 2: not valid JSON-lines"):
        load_corpus(bad)
    odd = tmp_path / "corpus.xlsx"
    odd.write_text("x")
    with pytest.raises(EngineError, match="pass --format"):
        load_corpus(odd)
    with pytest.raises(EngineError, match="--empty must be"):
        load_corpus(bad, empty="skip")


def test_stats_are_json_serialisable(tmp_path, frame):
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    json.dumps(load_corpus(path).stats)
