"""``engine doctor`` and ``engine.hardware``: runs anywhere, returns a sane dict, never leaks a token."""

from __future__ import annotations

import json
import logging

import pytest

from engine import hardware
from engine.doctor import doctor, format_report, main, probe_milvus
from engine.milvus.server import free_port

FAKE_TOKEN = "root:D0ctor-S3cret-9137"


@pytest.fixture(scope="module")
def report() -> dict:
    return doctor()


def test_report_has_every_section(report: dict) -> None:
    assert {"engine", "python", "hardware", "cuda", "libraries", "milvus", "auto"} <= set(report)
    hw = report["hardware"]
    assert hw["torch"]["version"]
    assert isinstance(hw["cuda_devices"], list)
    assert isinstance(hw["cpu"]["bf16"], bool)
    assert set(hw["cpu"]["bf16_flags"]) <= set(hardware.BF16_FLAGS)
    mv = report["milvus"]
    assert mv["pymilvus"]
    assert mv["milvus_lite"]["importable"] is hardware.importable("milvus_lite")
    auto = report["auto"]
    assert auto["cluster"]["backend"] in ("cpu", "cuml")
    assert auto["umap"]["backend"] in ("cpu", "cuml")
    assert auto["graph"]["exact_knn_device"] in ("cpu", "cuda")
    assert auto["embedding"]["precision"] in ("fp32", "bf16", "fp16")
    json.dumps(report)  # JSON-able for bug reports


def test_graph_hint_names_the_real_flag(report: dict) -> None:
    text = format_report(report)
    flag = "--graph-source milvus|partition|exact"  # the option's real name and choices
    assert flag in json.dumps(report) and flag in text
    assert "--graph exact" not in text


def test_auto_matches_the_hardware(report: dict) -> None:
    if report["cuda"]:
        assert report["hardware"]["cuda_devices"]
        assert report["auto"]["embedding"]["device"].startswith("cuda")
        assert report["auto"]["graph"]["exact_knn_device"] == "cuda"
    else:  # this CI machine: no CUDA -> CPU everywhere, and the report says so
        assert report["hardware"]["cuda_devices"] == []
        assert report["auto"]["embedding"]["device"] == "cpu"
        assert report["auto"]["graph"]["exact_knn_device"] == "cpu"
        assert report["auto"]["cluster"]["backend"] == "cpu"
        assert report["auto"]["umap"]["backend"] == "cpu"
        expected = "bf16" if hardware.cpu_supports_bf16() else "fp32"
        assert report["auto"]["embedding"]["precision"] == expected
        assert "no CUDA device" in format_report(report)


def test_gpu_helpers_without_cuda() -> None:
    if hardware.cuda_available():
        pytest.skip("this machine has CUDA")
    assert hardware.cuda_devices() == []
    assert hardware.cuml_usable() is False
    info = hardware.cupy_info()
    assert info["installed"] is hardware.importable("cupy")


def test_cpu_bf16_detection_reads_cpuinfo() -> None:
    flags = hardware.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo here")
    assert hardware.cpu_supports_bf16() is bool(flags & {"avx512_bf16", "amx_bf16"})


def test_package_version_and_importable() -> None:
    assert hardware.package_version("numpy")
    assert hardware.package_version("surely-not-a-real-distribution-xyz") is None
    assert hardware.importable("json") and not hardware.importable("surely_not_a_module_xyz")


def test_main_prints_text_and_json(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 0
    text = capsys.readouterr().out
    for heading in ("Hardware", "Milvus", "What 'auto' chooses here", "CPU bf16", "Milvus Lite"):
        assert heading in text
    assert main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "auto" in data


def test_unreachable_milvus_is_reported_without_token(
    capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    uri = f"http://127.0.0.1:{free_port()}"
    info = probe_milvus(uri, FAKE_TOKEN, timeout=2)
    assert info["reachable"] is False
    assert f"cannot reach Milvus at {uri}" in info["error"]
    assert info["token_given"] is True
    monkeypatch.setenv("MILVUS_TOKEN", FAKE_TOKEN)
    assert main(["--milvus-uri", uri, "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["milvus"]["target"]["reachable"] is False
    for text in (json.dumps(info), out, err, caplog.text):
        assert FAKE_TOKEN not in text and "D0ctor-S3cret" not in text


def test_lite_path_is_recognised(milvus_lite_uri: str) -> None:
    info = probe_milvus(milvus_lite_uri)
    assert info["kind"] == "lite"


@pytest.mark.slow
@pytest.mark.server
def test_doctor_against_real_server(
    milvus_server: str, milvus_server_token, capsys: pytest.CaptureFixture
) -> None:
    args = ["--milvus-uri", milvus_server]
    if milvus_server_token:
        args += ["--milvus-token", milvus_server_token]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "reachable, version v2." in text
    assert "IVF_FLAT" in text and "HNSW" in text
    if "version v2.3.5" in text:  # the pip `milvus` server: DISKANN is accepted but never builds
        assert "never finish   DISKANN" in text
