"""The one hardware probe: CUDA devices and memory, CuPy/cuML, CPU bf16.

Why: every ``auto`` choice (embedding device and precision, exact kNN device, cuML HDBSCAN/UMAP)
depends on the same few facts, so every stage and ``engine doctor`` ask here and nowhere else;
finding them must never fail or import heavy GPU stacks needlessly. Every function here returns a plain value and swallows import/runtime errors
(a broken CUDA install reads as "no CUDA", with the reason kept in ``error`` fields).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from typing import Any


def usable_cpus() -> int:
    """CPUs this process may use: ``OMP_NUM_THREADS`` when set, else the CPUs it is allowed to run on."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: CPU flags that give native bf16 matmuls (avx512_bf16: Cooper Lake / Zen 4+; amx_*: Sapphire Rapids+).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni", "avx512_vnni")


def package_version(dist: str) -> str | None:
    """Installed version of a distribution without importing it (cuML's import costs seconds)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def importable(module: str) -> bool:
    """True when ``import module`` would find the module (does not import it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def torch_info() -> dict[str, Any]:
    """torch version, the CUDA it was built for, and whether it sees a GPU."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 -- a broken install reads as "not available"
        return {"version": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    info: dict[str, Any] = {"version": torch.__version__, "cuda_build": torch.version.cuda}
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        info["cuda_available"] = False
        info["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return info


def cuda_available() -> bool:
    """torch sees at least one CUDA GPU."""
    return bool(torch_info().get("cuda_available"))


def cuda_device_count() -> int:
    """How many CUDA GPUs torch sees (0 without CUDA)."""
    if not cuda_available():
        return 0
    import torch

    return int(torch.cuda.device_count())


def cuda_bf16_supported() -> bool:
    """The current CUDA device computes in bf16 (Ampere and newer); False without CUDA."""
    if not cuda_available():
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def cuda_devices() -> list[dict[str, Any]]:
    """One dict per CUDA device: index, name, compute capability, total/free memory (GiB), bf16."""
    if not cuda_available():
        return []
    import torch

    out: list[dict[str, Any]] = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        dev: dict[str, Any] = {
            "index": i,
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "total_gib": round(props.total_memory / 1024**3, 1),
            "bf16": props.major >= 8,  # Ampere and newer
        }
        try:
            free, _total = torch.cuda.mem_get_info(i)
            dev["free_gib"] = round(free / 1024**3, 1)
        except Exception:  # noqa: BLE001 -- a busy/MIG device may refuse; total is enough
            dev["free_gib"] = None
        out.append(dev)
    return out


def nvidia_driver() -> str | None:
    """Driver version from ``nvidia-smi`` (None when absent)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run(  # noqa: S603
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = res.stdout.strip().splitlines()
    return line[0].strip() if res.returncode == 0 and line else None


def cupy_info() -> dict[str, Any]:
    """CuPy version and device count (CuPy is what cuML and our GPU helpers run on)."""
    version = package_version("cupy-cuda12x") or package_version("cupy-cuda11x") or package_version("cupy")
    info: dict[str, Any] = {"installed": importable("cupy"), "version": version}
    if not info["installed"]:
        return info
    try:
        import cupy

        info["version"] = cupy.__version__
        info["devices"] = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 -- CUDA runtime missing or no device
        info["devices"] = 0
        info["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return info


def cuml_info() -> dict[str, Any]:
    """cuML presence and version, found without importing it (import needs a GPU and is slow)."""
    version = package_version("cuml-cu12") or package_version("cuml-cu11") or package_version("cuml")
    return {"installed": importable("cuml"), "version": version}


def cuml_usable(module: str = "cuml") -> bool:
    """cuML imports *and* CuPy sees a CUDA device: the condition for the cuML backends.

    ``module`` is the part of cuML a stage needs (``cuml.cluster``, ``cuml.manifold``): it is
    imported too, so a broken install reads as "no cuML" instead of failing mid-run.
    """
    try:
        importlib.import_module("cuml")
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 -- ImportError, or CUDA failing to initialise during the import
        return False
    return cupy_info().get("devices", 0) > 0


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_bf16_flags() -> list[str]:
    """The bf16-relevant flags this CPU has (subset of BF16_FLAGS)."""
    flags = cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (avx512_bf16 or AMX): bf16 embedding is then ~3x faster than fp32 on CPU.

    The kernel's flags decide when present (AMX also needs the kernel to enable it); torch is asked
    only where there is no /proc/cpuinfo.
    """
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:  # no /proc/cpuinfo (macOS, Windows): ask torch
        import torch

        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
        return "AMX" in cap or "BF16" in cap
    except Exception:  # noqa: BLE001
        return False


def gpu_summary() -> dict[str, Any]:
    """Everything above in one dict (what ``engine doctor`` prints under "hardware")."""
    return {
        "torch": torch_info(),
        "cuda_devices": cuda_devices(),
        "nvidia_driver": nvidia_driver(),
        "cupy": cupy_info(),
        "cuml": cuml_info(),
        "cpu": {"model": cpu_model(), "bf16_flags": cpu_bf16_flags(), "bf16": cpu_supports_bf16()},
    }
