"""Fill the carried folder ``.whl/`` for one ``benchmarks/gpu_check.sh`` call on a lent GPU machine.

Why: that machine has no network and its own package versions (transformers 5.x breaks
``import FlagEmbedding``; no pymilvus, Milvus Lite, umap-learn, fast_hdbscan, plotly), and the
``../shared/data`` corpora beside the checkout do not travel. So this script, run HERE:

* downloads (``pip download --no-deps``) the exact versions of ``constraints.txt`` of every package the
  engine needs there and the image lacks or has at an incompatible version (``WHEELS``);
* writes ``.whl/headlines.jsonl.gz``: every headline-length (title, description) pair of the shared
  corpora (AG News, BBC News with its first sentence, the 870 headlines, the Chinese titles);
* checks that ``.whl/`` plus the working tree that travels stays under the 64 MiB a call may carry.

``python benchmarks/gpu_prepare.py`` (``--skip-download`` writes the sample and checks sizes only).
Exit 0 when within the limit, 2 with one ``error:`` line otherwise.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What one device call may carry: the working tree that travels plus the carried paths.
CARRY_LIMIT = 64 * 1024**2
#: Distributions carried as wheels (exact versions from constraints.txt). FlagEmbedding imports
#: datasets and peft; transformers 4.57 wants huggingface_hub < 1; Milvus Lite 3 needs faiss-cpu.
WHEELS = (
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "FlagEmbedding",
    "accelerate",
    "peft",
    "datasets",
    "dill",
    "multiprocess",
    "sentence-transformers",
    "pymilvus",
    "milvus-lite",
    "faiss-cpu",
    "cachetools",
    "orjson",
    "python-dotenv",
    "fast_hdbscan",
    "umap-learn",
    "pynndescent",
    "plotly",
    "tomli_w",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
SAMPLE_NAME = "headlines.jsonl.gz"


def say(msg: str) -> None:
    print(f"[gpu_prepare] {msg}", flush=True)


def pinned_versions(constraints: Path) -> dict[str, str]:
    """Canonical name -> exact version from a pip constraints file."""
    out = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonical(name)] = version.strip()
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_wheels(dest: Path, pins: dict[str, str]) -> None:
    missing = [n for n in WHEELS if canonical(n) not in pins]
    if missing:
        raise SystemExit(f"error: constraints.txt pins no version for {', '.join(missing)}")
    specs = [f"{n}=={pins[canonical(n)]}" for n in WHEELS]
    # One version per package: a stale wheel of another version would break the install there.
    wanted = {canonical(n) for n in WHEELS}
    for old in dest.glob("*.whl"):
        dist, version = old.name.split("-")[:2]
        if canonical(dist) in wanted and version != pins[canonical(dist)]:
            old.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    say(f"pip download {len(specs)} wheels into {dest}")
    proc = subprocess.run([*cmd, *specs], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING")][-3:]
        raise SystemExit("error: pip download failed: " + " | ".join(tail))


def _first_sentence(text: str, limit: int = 300) -> str:
    first = re.split(r"(?<=[.!?])\s+|\n", text.strip(), maxsplit=1)[0]
    return first[:limit]


def headline_pairs(data_dir: Path) -> list[tuple[str, str]]:
    """(title, description) pairs of headline length from every shared corpus found under ``data_dir``."""
    pairs: list[tuple[str, str]] = []
    ag = data_dir / "ag_news" / "test.csv"
    if ag.is_file():
        with ag.open(newline="", encoding="utf-8") as fh:
            pairs += [(r[1].strip(), r[2].strip()) for r in csv.reader(fh) if len(r) >= 3]
    bbc = data_dir / "bbc_news" / "bbc_news.csv"
    if bbc.is_file():
        with bbc.open(newline="", encoding="utf-8") as fh:
            pairs += [(r["title"].strip(), _first_sentence(r["text"])) for r in csv.DictReader(fh)]
    news = data_dir / "news_headlines_2024" / "news_data_dedup.csv"
    if news.is_file():
        with news.open(newline="", encoding="utf-8") as fh:
            pairs += [(r["title"].strip(), (r["description"] or "").strip()) for r in csv.DictReader(fh)]
    for part in ("dev.txt", "test.txt"):
        zh = data_dir / "thucnews_titles_zh" / part
        if zh.is_file():
            lines = zh.read_text(encoding="utf-8").splitlines()
            pairs += [(ln.split("\t")[0].strip(), "") for ln in lines if ln.strip()]
    return [(t, d) for t, d in pairs if t or d]


def write_sample(dest: Path, data_dir: Path) -> Path:
    pairs = headline_pairs(data_dir)
    if not pairs:
        raise SystemExit(f"error: no corpus found under {data_dir} (parameter --data-dir)")
    path = dest / SAMPLE_NAME
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        for t, d in pairs:
            fh.write(json.dumps([t, d], ensure_ascii=False) + "\n")
    say(f"wrote {len(pairs):,} headline pairs from {data_dir} to {path}")
    return path


def travelling_tree_bytes(root: Path) -> int:
    """Bytes of the tracked and untracked-not-ignored files (what a call sends besides carried paths)."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        return 0
    names = {n for n in proc.stdout.decode("utf-8", "replace").split("\0") if n}
    return sum((root / n).stat().st_size for n in names if (root / n).is_file())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(ROOT / ".whl"), help="the carried folder (default .whl/)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--constraints", default=str(ROOT / "constraints.txt"))
    p.add_argument("--skip-download", action="store_true", help="sample and size check only")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_download:
            download_wheels(dest, pinned_versions(Path(args.constraints)))
        write_sample(dest, Path(args.data_dir))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    carried = folder_bytes(dest)
    tree = travelling_tree_bytes(ROOT)
    total = carried + tree
    mib = 1024**2
    say(
        f"{dest.name}/ {carried / mib:.1f} MiB ({len(list(dest.glob('*.whl')))} wheels) + working tree "
        f"{tree / mib:.1f} MiB = {total / mib:.1f} MiB of {CARRY_LIMIT / mib:.0f} MiB"
    )
    if total >= CARRY_LIMIT:
        print(
            f"error: {dest} plus the working tree is {total / mib:.1f} MiB, over the {CARRY_LIMIT / mib:.0f} MiB "
            "one device call may carry",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
