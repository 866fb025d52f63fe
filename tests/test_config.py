"""Configuration: TOML files (flat or in tables), precedence, validation, no secrets on disk."""

from __future__ import annotations

import pytest

from engine.cli import build_parser, config_from_args
from engine.config import EngineConfig, load_toml, parse_json_option
from engine.errors import EngineError


def test_toml_tables_are_flattened(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "all-MiniLM-L6-v2"\n[cluster]\nmin_cluster_size = 12\n[store]\nindex_params = {M = 8}\n'
    )
    options = load_toml(path)
    assert options == {"model": "all-MiniLM-L6-v2", "min_cluster_size": 12, "index_params": {"M": 8}}
    bad = tmp_path / "bad.toml"
    bad.write_text("min_clustr_size = 3\n")
    with pytest.raises(EngineError, match="unknown option 'min_clustr_size'"):
        load_toml(bad)


def test_flags_override_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("k = 20\nmin_cluster_size = 12\n")
    args = build_parser().parse_args(
        ["run", "x.csv", "--out", str(tmp_path / "o"), "--config", str(path), "--k", "25"]
    )
    config = config_from_args(args)
    assert (config.k, config.min_cluster_size, config.corpus) == (25, 12, "x.csv")


def test_saved_run_config_reused_by_stage_commands(tmp_path):
    out = tmp_path / "o"
    EngineConfig(out=str(out), corpus="x.csv", k=12, min_cluster_size=7, milvus_token="secret").save(
        out / "run.toml"
    )
    assert "secret" not in (out / "run.toml").read_text()
    config = config_from_args(
        build_parser().parse_args(["cluster", "--out", str(out), "--min-cluster-size", "9"])
    )
    assert (config.k, config.min_cluster_size, config.corpus) == (12, 9, "x.csv")


def test_validation_names_the_parameter():
    with pytest.raises(EngineError, match="--min-samples \\(40\\) must not exceed --k \\(30\\)"):
        EngineConfig(min_samples=40).validate()
    with pytest.raises(EngineError, match="--metric must be one of"):
        EngineConfig(metric="cosine").validate()
    with pytest.raises(EngineError, match="--index-params is not valid JSON"):
        parse_json_option("{M: 16}", "index-params")
    with pytest.raises(EngineError, match="must be a JSON object"):
        parse_json_option("[1]", "search-params")
