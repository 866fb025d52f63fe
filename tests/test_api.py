"""engine.api.TopicModel: the README example runs as written; precomputed vectors; edits persist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.errors import EngineError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```\s*<!-- /api-example -->", text, re.S)
    assert block, "README.md lost its <!-- api-example --> block"
    return block.group(1)


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch, shared_data_dir):
    code = readme_api_example().replace("../shared/data", shared_data_dir)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md:api-example", "exec"), ns)  # noqa: S102 - the documented example itself
    model, topics, docs = ns["model"], ns["topics"], ns["docs"]

    assert len(topics) == len(docs) and (topics >= 0).any()
    info_before = ns["info"]
    assert list(info_before.columns[:5]) == ["topic", "count", "name", "keywords", "keyword_scores"]
    assert info_before["count"].sum() == len(docs)
    assert ns["words"] and all(isinstance(w, str) and s > 0 for w, s in ns["words"])
    assert ns["over_time"]["frequency"].sum() > 0.9 * (topics >= 0).sum()
    assert ns["per_venue"]["frequency"].sum() == (topics >= 0).sum()
    assert len(ns["ids"]) == 3 and ns["similarity"] == sorted(ns["similarity"], reverse=True)

    info = model.get_topic_info()  # after merge_topics([[0, 1]]) and the new name
    assert 1 not in set(info["topic"])
    merged = info.loc[info["topic"] == 0].iloc[0]
    assert merged["count"] == int(((topics == 0) | (topics == 1)).sum())
    assert merged["name"] == "my first topic"
    was_one = [docs[i] for i in np.flatnonzero(topics == 1)[:3]]
    assert model.transform(was_one).tolist() == [0, 0, 0]  # merge then transform gives the merged id
    assert len(ns["new_topics"]) == 1

    again = ns["again"]
    pd.testing.assert_frame_equal(again.get_topic_info(), info)
    assert again.get_topic(0) == model.get_topic(0)
    assert again.transform(was_one[:1]).tolist() == [0]


def test_precomputed_embeddings_fit_and_checks(tmp_path, shared_data_dir, embeddings_cache_dir):
    from engine.api import TopicModel
    from engine.stages import load_precomputed
    from tests.fixtures.data import minilm_embed

    news = pd.read_csv(os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")).head(300)
    docs = (news["title"] + "\n" + news["description"].fillna("")).tolist()
    vectors = minilm_embed(docs, embeddings_cache_dir)
    model = TopicModel(out=tmp_path / "run", model="all-MiniLM-L6-v2", k=10, min_cluster_size=5)
    topics = model.fit_transform(docs, embeddings=vectors * 3.0)  # rows need not be unit length
    assert len(topics) == 300
    stored = np.load(tmp_path / "run" / "embeddings.npy")
    assert np.allclose(stored, vectors, atol=1e-5)  # the given vectors, normalised, not re-embedded
    assert (model.get_topic_info()["count"]).sum() == 300

    path = tmp_path / "v.npy"
    for bad, message in [
        (np.zeros((299, 384), np.float32), r"shape \(299, 384\), expected \(300, dim\)"),
        (np.ones((300, 384), np.int64), "dtype int64"),
        (np.where(np.arange(300)[:, None] == 7, np.nan, 1.0).repeat(4, axis=1), "row 7 has a NaN"),
    ]:
        np.save(path, bad)
        with pytest.raises(EngineError, match=message):
            load_precomputed(str(path), 300)
    with pytest.raises(EngineError, match="no such file"):
        load_precomputed(str(tmp_path / "missing.npy"), 300)


def test_cli_bad_embeddings_is_one_error_line(tmp_path):
    corpus = tmp_path / "c.csv"
    pd.DataFrame({"title": [f"doc {i}" for i in range(20)], "description": ["x"] * 20}).to_csv(
        corpus, index=False
    )
    np.save(tmp_path / "v.npy", np.ones((19, 8), np.float32))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "embed",
            str(corpus),
            "--out",
            str(tmp_path / "o"),
            "--embeddings",
            str(tmp_path / "v.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--embeddings" in lines[0] and "(19, 8)" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
