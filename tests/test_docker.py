"""Structural checks of docker/: Docker cannot run on these machines, so the compose files and
the Dockerfile are validated as data (services, images, ports, volumes, healthchecks, GPU
reservations, a non-root user on a CUDA base that installs the engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

DOCKER = Path(__file__).resolve().parents[1] / "docker"
ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / name).read_text())
    assert isinstance(data, dict), name
    return data


def expand(value: str) -> str:
    """Compose-style ${VAR:-default} with the defaults (no environment)."""
    return ENV_REF.sub(lambda m: m.group(2) or "", value)


def merge(base: Any, over: Any) -> Any:
    """Compose's merge of an override file: mappings merge, scalars and lists replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return over


def check_healthcheck(service: dict[str, Any], name: str) -> None:
    hc = service.get("healthcheck")
    assert isinstance(hc, dict), f"{name}: healthcheck missing"
    test = hc["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck.test"
    for key in ("interval", "timeout"):
        assert re.fullmatch(r"\d+(ms|s|m)", str(hc[key])), f"{name}: healthcheck.{key}"
    assert int(hc["retries"]) >= 1


def check_gpu_reservation(service: dict[str, Any], name: str) -> None:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert isinstance(devices, list) and devices, name
    dev = devices[0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"], name
    assert ("count" in dev) != ("device_ids" in dev), f"{name}: set count or device_ids, not both"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def compose_gpu(compose: dict[str, Any]) -> dict[str, Any]:
    return merge(compose, load("docker-compose.gpu.yml"))


def test_compose_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"etcd", "minio", "standalone", "engine"} <= set(services)
    images = {name: expand(s.get("image", "")) for name, s in services.items()}
    assert images["etcd"].startswith("quay.io/coreos/etcd:v3.5")
    assert images["minio"].startswith("minio/minio:")
    assert re.fullmatch(r"milvusdb/milvus:v2\.\d+\.\d+", images["standalone"]), images["standalone"]
    assert services["standalone"]["command"] == ["milvus", "run", "standalone"]
    env = services["standalone"]["environment"]
    assert env["ETCD_ENDPOINTS"] == "etcd:2379" and env["MINIO_ADDRESS"] == "minio:9000"


def test_compose_ports_health_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = [expand(p) for p in services["standalone"]["ports"]]
    assert "19530:19530" in ports and "9091:9091" in ports
    for name in ("etcd", "minio", "standalone"):
        check_healthcheck(services[name], name)
    assert "9091/healthz" in " ".join(services["standalone"]["healthcheck"]["test"])
    deps = services["standalone"]["depends_on"]
    assert deps["etcd"]["condition"] == deps["minio"]["condition"] == "service_healthy"
    named = set(compose["volumes"])
    used: set[str] = set()
    for service in services.values():
        for vol in service.get("volumes", []):
            source = expand(vol).split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used <= named, f"undeclared named volumes: {used - named}"
    assert {"etcd_data", "minio_data", "milvus_data", "models"} <= used
    for vol in services["standalone"]["volumes"]:
        src = expand(vol).split(":")[0]
        if src.startswith("."):
            assert (DOCKER / src).exists(), f"bind-mounted file {src} missing from docker/"


def test_engine_service(compose: dict[str, Any]) -> None:
    engine = compose["services"]["engine"]
    build = engine["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    env = engine["environment"]
    assert env["MILVUS_URI"] == "http://standalone:19530"
    assert expand(env["MILVUS_TOKEN"]) == ""  # taken from the host env, never written in the file
    assert env["HF_HOME"] == "/models"
    assert any(expand(v).startswith("models:/models") for v in engine["volumes"])
    assert engine["depends_on"]["standalone"]["condition"] == "service_healthy"
    assert "engine" in engine.get("profiles", [])


def test_gpu_override(compose_gpu: dict[str, Any]) -> None:
    services = compose_gpu["services"]
    assert expand(services["standalone"]["image"]).endswith("-gpu")
    assert re.fullmatch(r"milvusdb/milvus:v2\.\d+\.\d+-gpu", expand(services["standalone"]["image"]))
    check_gpu_reservation(services["standalone"], "standalone")
    check_gpu_reservation(services["engine"], "engine")
    # the override keeps everything the base defines
    assert services["standalone"]["healthcheck"] and services["engine"]["build"]
    assert "19530:19530" in [expand(p) for p in services["standalone"]["ports"]]


def test_no_secrets_in_compose_files(compose_gpu: dict[str, Any]) -> None:
    for name, service in compose_gpu["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if "TOKEN" in key or "PASSWORD" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+(:-)?\}", str(value)), f"{name}.{key}: a literal secret"
    for name in ("docker-compose.yml", "docker-compose.gpu.yml"):
        assert "root:Milvus" not in (DOCKER / name).read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_cuda_base_nonroot_and_installs_engine() -> None:
    ins = dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    froms = [a for op, a in ins if op == "FROM"]
    assert froms and froms[0].startswith("nvidia/cuda:")
    assert "runtime" in froms[0]
    cuda_major = args["CUDA_VERSION"].split(".")[0]
    runs = " ".join(a for op, a in ins if op == "RUN")
    assert args["TORCH_CUDA"] == f"cu{cuda_major}{args['CUDA_VERSION'].split('.')[1]}"
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in runs and "torch==${TORCH_VERSION}" in runs
    assert f"cuml-cu{cuda_major}" in runs and "pypi.nvidia.com" in runs
    assert f"cupy-cuda{cuda_major}x" in runs
    assert '"/src[ray]"' in runs  # the engine itself, with Ray for `engine run --ray` (KubeRay pods)
    assert "-c /tmp/constraints-gpu.txt" in runs
    users = [a for op, a in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    assert "useradd" in runs
    env = " ".join(a for op, a in ins if op == "ENV")
    assert "HF_HOME=/models" in env
    vols = " ".join(a for op, a in ins if op == "VOLUME")
    assert "/models" in vols
    entry = [a for op, a in ins if op == "ENTRYPOINT"]
    assert entry and "engine-entrypoint" in entry[-1]
    for op, a in ins:
        if op == "COPY":
            for src in a.split()[:-1]:
                if not src.startswith("--"):
                    assert (DOCKER.parent / src).exists(), f"COPY source {src} missing"


def test_constraints_resolve_cuml_numba_conflict() -> None:
    lines = [
        ln.split("#")[0].strip()
        for ln in (DOCKER / "constraints-gpu.txt").read_text().splitlines()
        if ln.strip()
    ]
    pins = {re.split(r"[<>=!]", ln)[0]: ln for ln in lines if ln}
    assert "<0.65" in pins["numba"]
    assert "llvmlite" in pins


def test_dockerignore_keeps_what_the_build_copies() -> None:
    text = (DOCKER / "Dockerfile.dockerignore").read_text()
    assert text.splitlines()[[ln.strip() for ln in text.splitlines()].index("**")] == "**"
    for needed in (
        "!pyproject.toml",
        "!README.md",
        "!engine/**",
        "!docker/entrypoint.sh",
        "!docker/constraints-gpu.txt",
    ):
        assert needed in text


def test_entrypoint_execs_engine() -> None:
    script = DOCKER / "entrypoint.sh"
    text = script.read_text()
    assert text.startswith("#!/bin/sh") and 'exec engine "$@"' in text
    assert script.stat().st_mode & 0o111, "entrypoint.sh must be executable"
    assert "MILVUS_TOKEN" not in text  # never echoed


def test_readme_recipe_mentions_the_commands() -> None:
    text = (DOCKER / "README.md").read_text()
    for needed in (
        "## Run on a GPU cloud instance",
        "## Use a Milvus server",
        "docker compose -f docker-compose.yml -f docker-compose.gpu.yml",
        "--milvus-uri",
        "MILVUS_TOKEN",
        "nvidia-ctk",
    ):
        assert needed in text, needed


# ------------------------------------------------------------------------ beyond one machine (--ray)
def _pins() -> dict[str, str]:
    text = (DOCKER.parent / "constraints.txt").read_text()
    return dict(ln.split("==", 1) for ln in text.splitlines() if "==" in ln and not ln.startswith("#"))


def test_kuberay_raycluster_runs_the_engine_image_on_gpu_workers() -> None:
    cluster = load("kuberay-raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["spec"]["rayVersion"] == _pins()["ray"]  # the Ray the engine's constraints pin
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    (head_c,) = head["containers"]
    ports = {p["containerPort"] for p in head_c["ports"]}
    assert {6379, 10001} <= ports  # the GCS (HOST:6379) and the Ray client (ray://HOST:10001)
    env = {e["name"]: e for e in head_c["env"]}
    assert env["RAY_ADDRESS"]["value"] == "127.0.0.1:6379"  # `engine run --ray auto` on the head
    values = load("milvus-distributed-values.yaml")
    assert env["MILVUS_URI"]["value"] == f"http://milvus:{values['service']['port']}"
    assert "value" not in env["MILVUS_TOKEN"] and env["MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"  # no model on the driver
    groups = cluster["spec"]["workerGroupSpecs"]
    assert groups
    images = {head_c["image"]}
    for group in groups:
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (worker,) = group["template"]["spec"]["containers"]
        images.add(worker["image"])
        limits = worker["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1  # one model replica per GPU
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
        assert mounts["models"] == "/models"  # the model the driver names must exist on the workers
        assert {e["name"]: e.get("value") for e in worker["env"]}["HF_HOME"] == "/models"
        claims = {v["name"] for v in group["template"]["spec"]["volumes"]}
        assert set(mounts) <= claims
    assert len(images) == 1  # the same engine image everywhere
    claims = {v["name"] for v in head["volumes"]}
    assert {m["name"] for m in head_c["volumeMounts"]} <= claims


def test_milvus_distributed_helm_values() -> None:
    values = load("milvus-distributed-values.yaml")
    assert values["cluster"]["enabled"] is True and values["standalone"]["enabled"] is False
    assert re.fullmatch(r"v2\.5\.\d+", values["image"]["all"]["tag"])  # Helm chart 4.2.x deploys Milvus 2.5
    for component in ("proxy", "queryNode", "dataNode", "indexNode"):
        assert int(values[component]["replicas"]) >= 1, component
    assert values["etcd"]["replicaCount"] >= 3 and values["minio"]["mode"] == "distributed"
    assert values["pulsarv3"]["enabled"] or values["kafka"]["enabled"]  # cluster mode needs a message queue
    assert "helm install milvus " in (DOCKER / "milvus-distributed-values.yaml").read_text()
