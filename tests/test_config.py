"""Configuration: one validated settings model; TOML (nested or old flat), precedence
defaults < run.toml < --config < environment < flags, explicit none/auto overriding, one-line errors."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from engine import cli
from engine.cli import build_parser, config_from_args
from engine.config import (
    FIELD_SECTION,
    SECTIONS,
    EngineConfig,
    choices_of,
    field_info,
    flag_of,
    parse_json_option,
    read_toml,
    resolve_config,
)
from engine.errors import EngineError
from tests.test_cli import ENV

MODEL = "all-MiniLM-L6-v2"


def _engine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env={**ENV, "PYTHONPATH": str(root), **(env or {})},
        timeout=900,
        cwd=root,
    )


def _saved(out: Path) -> dict:
    return tomllib.loads((out / "run.toml").read_text())


def test_toml_tables_and_flat_keys_read(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "all-MiniLM-L6-v2"\n[cluster]\nmin_cluster_size = 12\n[store]\nindex_params = {M = 8}\n'
    )
    assert read_toml(path) == {"model": MODEL, "min_cluster_size": 12, "index_params": {"M": 8}}
    bad = tmp_path / "bad.toml"
    bad.write_text("min_clustr_size = 3\n")
    with pytest.raises(EngineError, match=f"{bad}: unknown option 'min_clustr_size'"):
        read_toml(bad)
    section = tmp_path / "section.toml"
    section.write_text("[clustr]\nk = 3\n")
    with pytest.raises(EngineError, match=f"{section}: unknown section \\[clustr\\]"):
        read_toml(section)


def test_old_flat_run_toml_still_loads(tmp_path):
    """Run directories written before the nested layout (e.g. the 870 baseline) keep working."""
    out = tmp_path / "old"
    out.mkdir()
    (out / "run.toml").write_text(
        'out = "elsewhere"\ncorpus = "x.csv"\nmodel = "all-MiniLM-L6-v2"\nk = 12\nmin_samples = 4\n'
        'index_params = { "M" = 8 }\nseed = "none"\nrestart = true\nbatch_size = 16\n'
    )
    config = resolve_config({"out": str(out)})
    assert config.out == str(out)  # the directory it was found in, not the one written inside
    assert (config.corpus.corpus, config.embed.model, config.graph.k) == ("x.csv", MODEL, 12)
    assert (config.cluster.min_samples, config.store.index_params, config.seed) == (4, {"M": 8}, None)
    assert config.embed.restart is False  # a restart is never implied by an earlier run
    assert config.embed.batch_size == 16


def test_saved_run_toml_is_nested_without_secrets(tmp_path):
    out = tmp_path / "o"
    config = EngineConfig.from_flat(
        out=str(out), corpus="x.csv", k=12, seed=None, milvus_token="secret", milvus_uri="http://u:pw@h:19530"
    )
    assert "secret" not in repr(config)
    config.save(out / "run.toml")
    text = (out / "run.toml").read_text()
    assert "secret" not in text and "pw" not in text
    data = tomllib.loads(text)
    assert data["graph"]["k"] == 12 and data["corpus"]["corpus"] == "x.csv" and data["seed"] == "none"
    assert data["store"]["milvus_uri"] == "http://h:19530" and "milvus_token" not in data["store"]
    assert "min_samples" not in data["cluster"]  # None is omitted
    assert set(data) == {"out", "seed", *SECTIONS}
    secrets = {"milvus_token": "secret", "milvus_uri": "http://u:pw@h:19530"}
    assert resolve_config({"out": str(out)}).as_flat() | secrets == config.as_flat()


def test_flags_override_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("k = 20\nmin_cluster_size = 12\n")
    args = build_parser().parse_args(
        ["run", "x.csv", "--out", str(tmp_path / "o"), "--config", str(path), "--k", "25"]
    )
    config = config_from_args(args)
    assert (config.graph.k, config.cluster.min_cluster_size, config.corpus.corpus) == (25, 12, "x.csv")


def test_explicit_none_and_auto_override_lower_layers(tmp_path, monkeypatch):
    """The old merge skipped None: `--min-samples none` / `--batch-size auto` were silently ignored."""
    out = tmp_path / "o"
    EngineConfig.from_flat(out=str(out), corpus="x.csv", min_samples=8, batch_size=16, n_clusters=4).save(
        out / "run.toml"
    )
    parse = build_parser().parse_args
    kept = config_from_args(parse(["cluster", "--out", str(out)]))
    assert (kept.cluster.min_samples, kept.embed.batch_size, kept.cluster.n_clusters) == (8, 16, 4)
    reset = config_from_args(
        parse(["cluster", "--out", str(out), "--min-samples", "none", "--n-clusters", "none"])
    )
    assert (reset.cluster.min_samples, reset.cluster.effective_min_samples, reset.cluster.n_clusters) == (
        None,
        5,
        None,
    )
    assert (
        config_from_args(parse(["embed", "--out", str(out), "--batch-size", "auto"])).embed.batch_size is None
    )
    monkeypatch.setenv("ENGINE_MIN_SAMPLES", "none")
    assert config_from_args(parse(["cluster", "--out", str(out)])).cluster.min_samples is None
    monkeypatch.setenv("ENGINE_MIN_SAMPLES", "6")
    assert config_from_args(parse(["cluster", "--out", str(out), "--seed", "none"])).seed is None


def test_environment_layer(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[graph]\nk = 20\n[cluster]\nmin_cluster_size = 12\n")
    monkeypatch.setenv("ENGINE_K", "21")
    monkeypatch.setenv("ENGINE_COLUMNS", "a, b")
    monkeypatch.setenv("ENGINE_ASSIGN_NOISE", "true")
    monkeypatch.setenv("ENGINE_INDEX_PARAMS", '{"M": 12}')
    monkeypatch.setenv("MILVUS_URI", "http://user:pw@host:19530")
    argv = ["run", "x.csv", "--out", str(tmp_path / "o"), "--config", str(path)]
    config = config_from_args(build_parser().parse_args(argv))
    assert (config.graph.k, config.cluster.min_cluster_size, config.corpus.columns) == (21, 12, ["a", "b"])
    assert config.cluster.assign_noise and config.store.index_params == {"M": 12}
    assert config.store.explicit_milvus_uri == "http://host:19530"
    assert config.store.resolved_milvus_token == "user:pw"
    assert config_from_args(build_parser().parse_args([*argv, "--k", "22"])).graph.k == 22
    monkeypatch.setenv("ENGINE_MIN_CLUSTER_SIZE", "1")
    with pytest.raises(
        EngineError, match="^ENGINE_MIN_CLUSTER_SIZE: --min-cluster-size must be >= 2, got 1$"
    ):
        config_from_args(build_parser().parse_args(argv))


def test_validation_names_the_parameter():
    with pytest.raises(EngineError, match="--min-samples \\(40\\) must not exceed --k \\(30\\)"):
        EngineConfig.from_flat(min_samples=40)
    with pytest.raises(EngineError, match="^--metric must be one of COSINE, IP, L2, got 'cosine'$"):
        EngineConfig.from_flat(metric="cosine")
    with pytest.raises(EngineError, match="--index-params is not valid JSON"):
        parse_json_option("{M: 16}", "index-params")
    with pytest.raises(EngineError, match="must be a JSON object"):
        parse_json_option("[1]", "search-params")


def _bad_values() -> list[tuple[str, object, str]]:
    """(field, bad value, expected message start) for every choice and every range of the model."""
    cases = []
    for name in FIELD_SECTION:
        info = field_info(name)
        if choices_of(name):
            cases.append((name, "bogus", f"{flag_of(name)} must be one of "))
        bounds = {a: getattr(m, a) for m in info.metadata for a in ("ge", "gt", "le") if hasattr(m, a)}
        low = bounds.get("ge", bounds.get("gt"))
        if low is not None:
            cases.append((name, low - 1, f"{flag_of(name)} must be "))
        if bounds.get("le") is not None:
            cases.append((name, bounds["le"] + 1, f"{flag_of(name)} must be within"))
    return cases


@pytest.mark.parametrize(("name", "value", "start"), _bad_values())
def test_every_choice_and_range_error_is_one_line(tmp_path, name, value, start):
    """Through the real CLI (flags, then a TOML file): one `error:` line naming the flag, exit 2."""
    corpus = tmp_path / "docs.csv"
    corpus.write_text("title,description\na,b\n")
    base = ["run", str(corpus), "--out", str(tmp_path / "o"), "--model", MODEL]
    section = FIELD_SECTION[name]
    if section is not None and "run" not in SECTIONS[section].STAGES:  # e.g. `engine serve --port`
        base = [SECTIONS[section].STAGES[0], "--out", str(tmp_path / "o")]
    for argv, prefix in (
        ([*base, flag_of(name), str(value)], ""),
        ([*base, "--config", str(tmp_path / "bad.toml")], f"{tmp_path / 'bad.toml'}: "),
    ):
        (tmp_path / "bad.toml").write_text(f"{name} = {value!r}\n".replace("'", '"'))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = cli.main(argv)
            except SystemExit as exc:  # argparse's own choice check
                rc = exc.code
        lines = err.getvalue().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        if "invalid choice" not in lines[0]:
            assert lines[0].startswith(f"error: {prefix}{start}"), lines[0]
            assert str(value) in lines[0], lines[0]
        assert not (tmp_path / "o").exists()


# ---- end to end: real corpus, real model, real Milvus Lite -------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, shared_data_dir) -> Path:
    """300 headlines run with a config file that sets min_samples = 15 and batch_size = 16."""
    root = tmp_path_factory.mktemp("cfg_run")
    config = root / "base.toml"
    config.write_text(
        f'[corpus]\nlimit = 300\n[embed]\nmodel = "{MODEL}"\nbatch_size = 16\n[graph]\nk = 20\n'
        "[cluster]\nmin_samples = 15\nmin_cluster_size = 6\n"
    )
    news = os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv")
    proc = _engine("run", news, "--out", str(root / "run"), "--config", str(config), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = _saved(root / "run")
    assert saved["cluster"]["min_samples"] == 15 and saved["embed"]["batch_size"] == 16
    return root


def _labels(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "clusters.npz") as data:
        return {k: data[k] for k in data.files}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_min_samples_none_over_a_config_file_changes_the_clustering(small_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_run / "run", out)
    config = small_run / "base.toml"
    space = ("--cluster-space", "embedding")  # min_samples shapes the embedding space's density layers
    proc = _engine("cluster", "--out", str(out), "--config", str(config), *space, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = _labels(out)
    proc = _engine(
        "cluster", "--out", str(out), "--config", str(config), *space, "--min-samples", "none", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "min_samples" not in _saved(out)["cluster"]
    reset = _labels(out)
    assert not _same(before, reset)  # the old merge ignored `none` and kept min_samples = 15
    proc = _engine("cluster", "--out", str(out), *space, "--min-samples", "5", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _same(reset, _labels(out))  # none = the embedding space's default, 5


def test_batch_size_auto_over_a_saved_value(small_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_run / "run", out)
    proc = _engine("embed", "--out", str(out), "--batch-size", "auto", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch_size" not in _saved(out)["embed"]
    assert np.array_equal(np.load(out / "embeddings.npy"), np.load(small_run / "run" / "embeddings.npy"))


def test_precedence_end_to_end(small_run, tmp_path):
    """defaults < run.toml < --config < environment < flags, each layer overriding the one below."""
    out = tmp_path / "run"
    shutil.copytree(small_run / "run", out)
    override = tmp_path / "override.toml"
    override.write_text(
        '[cluster]\nmin_samples = 4\ncluster_selection_epsilon = 0.02\ncluster_backend = "cpu"\n'
    )
    env = {
        "ENGINE_CLUSTER_SELECTION_EPSILON": "0.05",
        "ENGINE_CLUSTER_BACKEND": "auto",
        "ENGINE_N_CLUSTERS": "3",
    }
    proc = _engine(
        "cluster", "--out", str(out), "--config", str(override), "--n-clusters", "none", "--quiet", env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cluster = _saved(out)["cluster"]
    assert cluster["cluster_selection_method"] == "eom"  # default
    assert cluster["min_cluster_size"] == 6  # run.toml over the default 5
    assert cluster["min_samples"] == 4  # --config over run.toml's 15
    assert cluster["cluster_selection_epsilon"] == 0.05  # environment over --config
    assert cluster["cluster_backend"] == "auto"  # environment over --config
    assert "n_clusters" not in cluster  # the flag `none` over the environment's 3
    assert _saved(out)["graph"]["k"] == 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [("local", "local"), (" AUTO ", "auto"), ("ray://head:10001", "ray://head:10001"), ("ray://head", "ray://head"),
     ("10.0.0.5:6379", "10.0.0.5:6379")],
)  # fmt: skip
def test_ray_address_accepted(value: str, expected: str) -> None:
    cfg = EngineConfig.from_flat(ray=value, milvus_uri="http://localhost:19530")
    assert cfg.distributed.ray == expected


@pytest.mark.parametrize(
    ("flat", "needles"),
    [
        ({"ray": "head", "milvus_uri": "local-server"}, ["--ray 'head'", "port"]),
        ({"ray": "http://head:1", "milvus_uri": "local-server"}, ["unknown scheme 'http'"]),
        ({"ray": "head:0", "milvus_uri": "local-server"}, ["1..65535"]),
        ({"ray": "local"}, ["Milvus Lite", "single-process", "--milvus-uri local-server"]),
        ({"ray": "local", "milvus_uri": "x.db"}, ["--milvus-uri x.db is Milvus Lite"]),
        ({"ray_block": 0}, ["--ray-block must be"]),
    ],
)
def test_ray_options_refused_in_one_line(flat: dict, needles: list[str]) -> None:
    with pytest.raises(EngineError) as info:
        EngineConfig.from_flat(**flat)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
