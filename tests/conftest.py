"""Shared pytest configuration. Fixture modules live in tests/fixtures/ (one per concern)."""

import os

import pytest

# Tests run on shared 2-core machines: one thread per library keeps timings sane.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.models",
    "tests.fixtures.milvus",
]

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def shared_data_dir() -> str:
    """The real corpora in ../shared/data (never copied into the repo)."""
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(path):
        pytest.skip(f"shared data not found at {path}")
    return path
