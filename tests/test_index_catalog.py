"""Index specs (engine.milvus.indexes), sweep parsing, validation, TOML, and the support probe on real Milvus Lite."""

from __future__ import annotations

import json

import pytest

from engine.bench.index_catalog import check_supported, expand, load_sweep_toml, parse_spec, parse_specs
from engine.errors import EngineError
from engine.milvus import indexes
from engine.milvus.indexes import (
    CATALOG,
    CPU_TYPES,
    GPU_TYPES,
    HNSW,
    IVF_FLAT,
    get_index_class,
)
from engine.milvus.lite import wire_index_params
from engine.milvus.probe import probe_support
from engine.milvus.store import MilvusStore


def test_catalog_covers_every_type_with_build_and_search_params() -> None:
    assert set(GPU_TYPES) == {t for t in CATALOG if t.startswith("GPU_")}
    assert set(indexes.LITE_INDEX_TYPES) <= set(CPU_TYPES)
    assert set(indexes.SERVER_INDEX_TYPES) | set(indexes.LITE_INDEX_TYPES) == set(CATALOG)
    assert "HNSW" in CPU_TYPES and "GPU_CAGRA" not in CPU_TYPES
    hnsw = HNSW()
    assert hnsw.index_params() == {"M": 16, "efConstruction": 200}
    assert hnsw.search_params() == {"ef": 64}
    assert CATALOG["FLAT"]().index_params() == {} and CATALOG["FLAT"]().search_params() == {}
    assert CATALOG["IVF_PQ"]().index_params() == {"nlist": 128, "m": 16, "nbits": 8}
    assert CATALOG["GPU_CAGRA"]().search_params() == {"itopk_size": 128, "search_width": 4}
    for cls in CATALOG.values():
        cfg = cls()
        assert set(cls.SWEEP) <= set(cls.BUILD + cls.SEARCH), cls.index_type
        assert set(cfg.index_params()).isdisjoint(cfg.search_params())


def test_parse_spec_expands_cartesian_product_and_shares_builds() -> None:
    configs = parse_specs(
        ["HNSW:M=16,32:efConstruction=200:ef=32,64,128 IVF_FLAT:nlist=1024:nprobe=8,32,128"]
    )
    assert len(configs) == 9
    hnsw = [c for c in configs if c.index_type == "HNSW"]
    assert {c.M for c in hnsw} == {16, 32} and {c.ef for c in hnsw} == {32, 64, 128}
    assert len({c.build_key() for c in hnsw}) == 2  # ef is a search param: 2 builds, 6 configs
    ivf = [c for c in configs if c.index_type == "IVF_FLAT"]
    assert all(isinstance(c, IVF_FLAT) and c.nlist == 1024 for c in ivf)
    assert [c.nprobe for c in ivf] == [8, 32, 128]
    assert ivf[0].label == "IVF_FLAT nlist=1024 | nprobe=8"


def test_parse_spec_defaults_sweep_case_and_dedupe() -> None:
    assert parse_spec("hnsw") == [HNSW()]
    swept = parse_spec("HNSW:sweep")
    assert len(swept) == len(HNSW.SWEEP["M"]) * len(HNSW.SWEEP["ef"])
    assert {c.M for c in parse_spec("HNSW:sweep:m=24")} == {24}  # explicit beats catalogue range
    assert len(parse_specs(["FLAT", "FLAT", "HNSW:ef=64"])) == 2
    assert parse_spec("HNSW_SQ:sq_type=FP16")[0].index_params()["sq_type"] == "FP16"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("NOPE:x=1", "unknown index type 'NOPE'"),
        ("HNSW:nprobe=8", "unknown parameter 'nprobe'"),
        ("FLAT:ef=8", "unknown parameter 'ef'"),
        ("HNSW:M=abc", "M='abc' is not a valid int"),
        ("HNSW:M", "expected param=value"),
        ("IVF_FLAT:nlist=", "nlist has no values"),
        ("", "empty index spec"),
    ],
)
def test_parse_spec_errors_name_the_culprit(spec: str, needle: str) -> None:
    with pytest.raises(EngineError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        parse_spec(spec)


def test_validate_checks_params_against_each_other_and_the_data() -> None:
    with pytest.raises(EngineError, match="ef=8 must be >= the search limit k=11"):
        HNSW(ef=8).validate(k=11)
    with pytest.raises(EngineError, match="nprobe=64 must not exceed nlist=32"):
        IVF_FLAT(nlist=32, nprobe=64).validate()
    with pytest.raises(EngineError, match="nlist=1024 exceeds the number of vectors"):
        IVF_FLAT(nlist=1024, nprobe=8).validate(n=500)
    with pytest.raises(EngineError, match="m=16 must divide the vector dimension 100"):
        CATALOG["IVF_PQ"]().validate(dim=100)
    with pytest.raises(EngineError, match="graph_degree=64 must not exceed"):
        CATALOG["GPU_CAGRA"](graph_degree=64, intermediate_graph_degree=32).validate()
    with pytest.raises(EngineError, match="M=0 must be positive"):
        HNSW(M=0).validate()
    HNSW(ef=64).validate(k=51, n=1000, dim=384)


def test_engine_run_options_and_estimates() -> None:
    opts = HNSW(M=16, efConstruction=200, ef=64).engine_run_options()
    assert (
        opts
        == """--index HNSW --index-params '{"M": 16, "efConstruction": 200}' --search-params '{"ef": 64}'"""
    )
    assert CATALOG["FLAT"]().engine_run_options() == "--index FLAT"
    n, dim = 10_000, 384
    assert CATALOG["IVF_SQ8"]().estimate_bytes(n, dim) < IVF_FLAT().estimate_bytes(n, dim)
    assert CATALOG["IVF_PQ"]().estimate_bytes(n, dim) < CATALOG["IVF_SQ8"]().estimate_bytes(n, dim)
    assert HNSW().estimate_bytes(n, dim) > CATALOG["FLAT"]().estimate_bytes(n, dim)


def test_wire_index_params_nests_a_copy_for_lite_only() -> None:
    assert wire_index_params({"nlist": 32}, lite=True) == {"nlist": 32, "params": {"nlist": 32}}
    assert wire_index_params({"nlist": 32}, lite=False) == {"nlist": 32}
    assert wire_index_params({}, lite=True) == {}


def test_load_sweep_toml_both_layouts(tmp_path) -> None:
    a = tmp_path / "a.toml"
    a.write_text(
        '[[index]]\ntype = "HNSW"\nM = [16, 32]\nef = [32, 64]\n\n'
        '[[index]]\ntype = "IVF_FLAT"\nnlist = 256\nnprobe = [8, 16]\n\n[[index]]\ntype = "FLAT"\n'
    )
    configs = load_sweep_toml(a)
    assert [c.index_type for c in configs].count("HNSW") == 4
    assert [c.nprobe for c in configs if c.index_type == "IVF_FLAT"] == [8, 16]
    assert configs[-1].index_type == "FLAT"
    b = tmp_path / "b.toml"
    b.write_text("[HNSW]\nsweep = true\n\n[IVF_SQ8]\nnlist = 64\nnprobe = 4\n")
    configs = load_sweep_toml(b)
    assert len([c for c in configs if c.index_type == "HNSW"]) == 12
    assert get_index_class("ivf_sq8") is type(configs[-1])
    bad = tmp_path / "bad.toml"
    bad.write_text('[[index]]\ntype = "HNSW"\nefSearch = 10\n')
    with pytest.raises(EngineError, match="unknown parameter 'efSearch'"):
        load_sweep_toml(bad)
    with pytest.raises(EngineError, match="not found"):
        load_sweep_toml(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("[[index]\n")
    with pytest.raises(EngineError, match="invalid TOML"):
        load_sweep_toml(tmp_path / "broken.toml")


def test_check_supported_refuses_or_skips() -> None:
    configs = parse_specs(["FLAT HNSW IVF_PQ GPU_CAGRA"])
    support = {"FLAT": None, "HNSW": None, "IVF_PQ": "reserved for a future phase"}
    with pytest.raises(EngineError, match=r"IVF_PQ: reserved.*GPU_CAGRA: not probed.*--skip-unsupported"):
        check_supported(configs, support)
    kept, skipped = check_supported(configs, support, skip_unsupported=True)
    assert [c.index_type for c in kept] == ["FLAT", "HNSW"]
    assert set(skipped) == {"IVF_PQ", "GPU_CAGRA"}


def test_probe_support_on_milvus_lite(tmp_path) -> None:
    """Real Milvus Lite: the six CPU types it implements pass, the rest are refused, and cached."""
    pytest.importorskip("milvus_lite")
    cache = tmp_path / "support.json"
    store = MilvusStore(str(tmp_path / "probe.db"))
    client = store.client
    try:
        support = probe_support(store, cache_path=cache, timeout=60)
        accepted = {t for t, why in support.items() if why is None}
        # The probe's answer agrees with the spec table (LITE flags) on a real Lite.
        assert accepted | {"BRUTE_FORCE"} == set(indexes.LITE_INDEX_TYPES)
        assert "future phase" in support["IVF_PQ"]
        assert all(support[t] for t in GPU_TYPES)
        assert not [c for c in client.list_collections() if c.startswith("engine_probe")]  # cleaned up
        cached = json.loads(cache.read_text())
        (key,) = cached
        assert key.startswith("milvus_lite") and cached[key] == support
        # The cache is keyed by server version and read back instead of probing again.
        cached[key]["HNSW"] = "marker from the cache"
        cache.write_text(json.dumps(cached))
        assert probe_support(store, ["HNSW", "SCANN"], cache_path=cache) == {
            "HNSW": "marker from the cache",
            "SCANN": support["SCANN"],
        }
    finally:
        store.close()


def test_expand_rejects_empty_values() -> None:
    with pytest.raises(EngineError, match="has no values"):
        expand("HNSW", {"ef": []})
