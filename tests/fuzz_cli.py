"""Fuzz driver (run by tests/test_fuzz_options.py in a child process whose memory the test watches).

Phase 1: every numeric option of ``engine run`` (found from the CLI's own option tables, so a new
option is fuzzed without editing this file) and every range-checked index/search parameter gets
random values; each goes through ``engine.cli.main`` in-process. A rejected value must end in exit 2
with exactly one ``error:`` line; an exception escaping ``main`` is a traceback and fails the test.
Phase 2: a few real runs (MiniLM, Milvus Lite, 60 documents) combine random *accepted* values of all
options at once: each must end in exit 0 or 2, never a traceback.

Prints one JSON line per case on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import traceback

from engine import cli
from engine.errors import EngineError
from engine.milvus.indexes import PARAM_RANGES

INDEX_FOR_PARAM = {
    "M": "HNSW",
    "efConstruction": "HNSW",
    "ef": "HNSW",
    "nlist": "IVF_FLAT",
    "nprobe": "IVF_FLAT",
}


def numeric_options() -> list[str]:
    """Flags of ``engine run`` whose argparse type is numeric (derived from the settings model)."""
    flags = []
    for _title, options in cli.stage_options("run"):
        for names, kwargs in options:
            if kwargs.get("type") in (int, float, cli._int_or_none):
                flags.append(names[0])
    return flags


def random_value(rng: random.Random) -> str:
    pool = [
        lambda: str(rng.randint(-100, 100)),
        lambda: str(rng.choice([-(10**9), -1, 0, 1, 2, 3, 7, 10**9, 2**63, 2**31])),
        lambda: repr(rng.uniform(-10, 10)),
        lambda: rng.choice(["nan", "inf", "-inf", "1e400", "-0", "0.0", "1e-300"]),
        lambda: rng.choice(["abc", "", " ", "0x10", "1_000", "none", "3.5", "٣"]),
    ]
    return rng.choice(pool)()


def random_param(rng: random.Random) -> object:
    return rng.choice([rng.randint(-10, 100), 0, -5, 10**12, 2.5, "abc", None, True, [1], rng.randint(1, 64)])


def call_main(argv: list[str]) -> dict:
    err = io.StringIO()
    record: dict = {"argv": argv[4:]}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 -- the point: anything escaping main() is a traceback
        record["traceback"] = traceback.format_exc()[-1500:]
        rc = None
    text = err.getvalue()
    record["rc"] = rc
    record["error_lines"] = [line for line in text.splitlines() if line.startswith("error: ")]
    record["has_traceback"] = "Traceback" in text or "traceback" in record
    return record


def accepted(argv: list[str]) -> bool:
    """True when the options pass parsing and validation (the layer before any work)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = cli.build_parser().parse_args(argv)
        cli.config_from_args(args)
    except (SystemExit, EngineError):
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--values", type=int, default=12, help="random values per option")
    parser.add_argument("--runs", type=int, default=2, help="phase-2 real runs")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = ["run", args.corpus, "--out", args.out, "--model", "all-MiniLM-L6-v2", "--quiet"]
    good: dict[str, list[list[str]]] = {}
    cases: list[list[str]] = []
    for flag in numeric_options():
        cases += [[flag, random_value(rng)] for _ in range(args.values)]
    for key in PARAM_RANGES:
        index = INDEX_FOR_PARAM.get(key, "HNSW")
        option = "--search-params" if key in ("ef", "nprobe") else "--index-params"
        for _ in range(max(2, args.values // 3)):
            value = json.dumps({key: random_param(rng)})
            cases.append(["--index", index, option, value])
    for extra in cases:
        argv = base + extra
        if accepted(argv):
            good.setdefault(extra[0] if extra[0] != "--index" else extra[2], []).append(extra)
            print(json.dumps({"phase": 1, "argv": extra, "accepted": True}), flush=True)
            continue
        record = call_main(argv)
        record["phase"] = 1
        print(json.dumps(record), flush=True)
    # Phase 2: real runs with several accepted values at once.
    for run in range(args.runs):
        for _ in range(100):
            extra: list[str] = []
            for flag, choices in good.items():
                if flag in ("--index-params", "--search-params") or rng.random() < 0.5:
                    continue
                extra += rng.choice(choices)
            if accepted(base + extra):
                break
        argv = [*base[:3], f"{args.out}-{run}", *base[4:], *extra]
        record = call_main(argv)
        record["phase"] = 2
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
