"""Command line: ``engine run CORPUS --out DIR`` and one subcommand per stage.

Option precedence: built-in defaults < ``--config FILE.toml`` < the run directory's saved
``run.toml`` (stage subcommands only) < flags given on the command line.
User errors print one ``error: ...`` line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from engine import __version__
from engine.config import RUN_CONFIG_NAME, EngineConfig, load_toml, parse_json_option
from engine.errors import EngineError
from engine.logs import quiet_libraries
from engine.rundir import RunLock

log = logging.getLogger("engine")


def _int_or_none(value: str) -> int | None:
    return None if value.lower() in ("none", "auto") else int(value)


def _seed(value: str) -> int | str:
    """An integer seed, or "none" (kept as text so it can override a saved seed; config maps it to None)."""
    return "none" if value.lower() in ("none", "auto") else int(value)


def _columns(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


# (flag, kwargs) per option group; defaults are SUPPRESSed so that only given flags override.
CORPUS_OPTIONS: list[tuple[str | tuple[str, ...], dict[str, Any]]] = [
    ("--text-template", {"help": 'text built per row, default "{title}\\n{description}"'}),
    ("--text-column", {"help": "use this single column as the text (instead of --text-template)"}),
    ("--id-column", {"help": "stable document ids from this column (default: row number in the file)"}),
    ("--empty", {"choices": ["drop", "error"], "help": "rows with empty text: drop (default) or error"}),
    (
        "--duplicates",
        {"choices": ["keep", "drop"], "help": "identical texts: keep (default) or drop repeats"},
    ),
    (
        "--format",
        {"choices": ["csv", "tsv", "parquet", "jsonl"], "help": "input format (default: by extension)"},
    ),
    ("--encoding", {"help": "text encoding of CSV/TSV/JSON-lines input (default utf-8)"}),
    ("--columns", {"type": _columns, "help": "comma-separated column names for a file without header row"}),
    ("--limit", {"type": int, "help": "use only the first N rows"}),
]
EMBED_OPTIONS: list[tuple[str | tuple[str, ...], dict[str, Any]]] = [
    ("--model", {"help": "BAAI/bge-m3 (default), a local directory, or a sentence-transformers model id"}),
    ("--device", {"help": "auto (default), cpu, cuda, cuda:1 ..."}),
    ("--precision", {"choices": ["auto", "fp32", "bf16", "fp16"], "help": "model precision (default auto)"}),
    ("--batch-size", {"type": _int_or_none, "help": "documents per batch (default: by token budget)"}),
    ("--max-length", {"type": int, "help": "max tokens per document (default 512)"}),
    (
        ("--restart", "--drop-existing"),
        {
            "action": "store_true",
            "dest": "restart",
            "default": argparse.SUPPRESS,
            "help": "drop the stored collection and vectors and re-embed (default: resume what is stored)",
        },
    ),
]
STORE_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--milvus-uri",
        {
            "help": "Milvus URI: a local file for Milvus Lite, http://host:19530, or local-server (the engine "
            "runs a standalone Milvus in DIR/milvus_server). Default: DIR/milvus.db (Lite) up to 50k documents, "
            "local-server above"
        },
    ),
    (
        "--milvus-token",
        {"help": "Milvus token (user:password or API key); or set MILVUS_TOKEN. Never printed."},
    ),
    ("--db-name", {"help": "Milvus database name (servers only)"}),
    ("--collection", {"help": "Milvus collection name (default engine_docs)"}),
    ("--metric", {"choices": ["COSINE", "IP", "L2"], "help": "Milvus metric (default COSINE)"}),
    ("--index", {"help": "auto (FLAT up to 50k docs, else HNSW), FLAT, IVF_FLAT, IVF_SQ8, HNSW, ..."}),
    ("--index-params", {"help": 'index build parameters as JSON, e.g. \'{"M": 16, "efConstruction": 200}\''}),
    ("--search-params", {"help": "search parameters as JSON, e.g. '{\"ef\": 64}' or '{\"nprobe\": 32}'"}),
]
GRAPH_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--graph-source",
        {"choices": ["milvus", "exact"], "help": "neighbours from Milvus (default) or exact search"},
    ),
    ("--k", {"type": int, "help": "neighbours per document in the graph (default 30)"}),
    (
        "--workers",
        {"type": int, "help": "parallel search workers (default: 2 on Milvus Lite, 4 on a server)"},
    ),
    ("--search-batch", {"type": int, "help": "query vectors per search request (default 256)"}),
    (
        "--target-recall",
        {
            "type": float,
            "help": "raise the search knob (HNSW ef, IVF nprobe) until recall@k on a sample reaches this "
            "(default 0.95); a knob set in --search-params is kept and only measured",
        },
    ),
    (
        "--recall-sample",
        {
            "type": int,
            "help": "queries checked against exact neighbours to measure recall (default 1000; 0 = off)",
        },
    ),
]
CLUSTER_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--cluster-space",
        {
            "choices": ["embedding", "graph"],
            "help": "embedding (default): a few-dimensional node embedding of the kNN graph, clustered in "
            "layers (a topic tree); graph: HDBSCAN* directly on the raw kNN graph (one layer)",
        },
    ),
    (
        "--n-clusters",
        {"type": _int_or_none, "help": "primary layer of about N clusters (default: chosen by persistence)"},
    ),
    (
        "--assign-noise",
        {
            "action": "store_true",
            "default": argparse.SUPPRESS,
            "help": "give each noise document the cluster most of its graph neighbours hold "
            "(labels.parquet column `assigned` marks them)",
        },
    ),
    ("--min-cluster-size", {"type": int, "help": "HDBSCAN min_cluster_size (default 5; finest layer)"}),
    (
        "--min-samples",
        {
            "type": _int_or_none,
            "help": "HDBSCAN min_samples (default: 5 in the embedding space, 3 on the graph)",
        },
    ),
    ("--cluster-selection-method", {"choices": ["eom", "leaf"], "help": "HDBSCAN selection (default eom)"}),
    ("--cluster-selection-epsilon", {"type": float, "help": "HDBSCAN cluster_selection_epsilon (default 0)"}),
    ("--cluster-backend", {"choices": ["auto", "cpu", "cuml"], "help": "auto: cuML with a GPU, else CPU"}),
]
MAP_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--map-method",
        {
            "choices": ["auto", "embedding", "umap"],
            "help": "embedding: refine the cluster stage's node embedding to 2-D on the graph (auto's choice "
            "when it exists; minutes at 1M); umap: umap-learn/cuML UMAP of the graph",
        },
    ),
    ("--n-neighbors", {"type": int, "help": "UMAP n_neighbors (default 15, at most --k)"}),
    ("--min-dist", {"type": float, "help": "UMAP min_dist (default 0.1)"}),
    (
        "--map-backend",
        {"choices": ["auto", "cpu", "cuml"], "help": "auto: cuML UMAP with a GPU, else umap-learn"},
    ),
]
SEED_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--seed",
        {
            "type": _seed,
            "help": "random seed of the cluster embedding and the map (default 42: identical labels every "
            "run); none = use every core, results vary",
        },
    ),
]
REPORT_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--n-keywords", {"type": int, "help": "keywords per cluster (default 10)"}),
    ("--n-representatives", {"type": int, "help": "representative documents per cluster (default 5)"}),
    (
        "--time-column",
        {
            "help": "column of dates: per-cluster counts per day/week/month (by span) and a topics-over-time chart"
        },
    ),
]

STAGE_GROUPS = {
    "run": ["corpus", "embed", "store", "graph", "cluster", "map", "seed", "report"],
    "embed": ["corpus", "embed", "store"],
    "graph": ["store", "graph"],
    "cluster": ["graph", "cluster", "seed"],
    "map": ["map", "seed"],
    "report": ["report"],
}
GROUPS = {
    "corpus": CORPUS_OPTIONS,
    "embed": EMBED_OPTIONS,
    "store": STORE_OPTIONS,
    "graph": GRAPH_OPTIONS,
    "cluster": CLUSTER_OPTIONS,
    "map": MAP_OPTIONS,
    "seed": SEED_OPTIONS,
    "report": REPORT_OPTIONS,
}
STAGE_HELP = {
    "run": "run every stage: corpus -> embed -> Milvus -> kNN graph -> cluster layers -> map -> report",
    "embed": "read the corpus and embed it into Milvus and DIR/embeddings.npy (resumable)",
    "graph": "build the kNN graph DIR/knn_graph.npz from Milvus (or --graph-source exact)",
    "cluster": "cluster layers on a node embedding of the saved kNN graph (or HDBSCAN* on the graph) -> DIR/clusters.npz",
    "map": "UMAP 2-D coordinates from the saved kNN graph -> DIR/coords.npy",
    "report": "labels.parquet, clusters.json, report.html, map.html, map.png from saved stages",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``error: ...`` line (exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="engine",
        description="Cluster a text corpus by meaning: embeddings -> Milvus -> kNN graph -> HDBSCAN -> map + report.",
    )
    parser.add_argument("--version", action="version", version=f"engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage, groups in STAGE_GROUPS.items():
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        if stage in ("run", "embed"):
            p.add_argument(
                "corpus", nargs="?", default=argparse.SUPPRESS, help="CSV, TSV, Parquet or JSON-lines file"
            )
        p.add_argument("--out", "-o", default=argparse.SUPPRESS, help="run directory (default ./out)")
        p.add_argument(
            "--config", default=argparse.SUPPRESS, help="TOML file with options (flags override it)"
        )
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or stage logs")
        p.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            help="also the libraries' own messages (Milvus, Faiss, gRPC)",
        )
        for group in groups:
            g = p.add_argument_group(f"{group} options")
            for flag, kwargs in GROUPS[group]:
                kwargs = dict(kwargs)
                kwargs.setdefault("default", argparse.SUPPRESS)
                flags = flag if isinstance(flag, tuple) else (flag,)
                g.add_argument(*flags, **kwargs)
    _add_tool_parsers(sub)
    _add_use_parsers(sub)
    return parser


def _add_use_parsers(sub: argparse._SubParsersAction) -> None:
    """Commands that use a finished run: place new documents, search within clusters."""
    help_ = "place new documents in a finished run's clusters (DIR/assigned/NAME.parquet)"
    p = sub.add_parser("assign", help=help_, description=help_)
    p.add_argument("corpus", help="CSV, TSV, Parquet or JSON-lines file, read with the run's corpus options")
    p.add_argument("--out", "-o", default="out", help="the run directory (default ./out)")
    p.add_argument("--k", type=int, default=15, help="stored neighbours that vote per document (default 15)")
    p.add_argument(
        "--store",
        action="store_true",
        help="also insert them (with their labels) into the run's Milvus collection",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or stage logs")
    help_ = "nearest documents to a query, optionally within one cluster (a Milvus filter)"
    p = sub.add_parser("search", help=help_, description=help_)
    p.add_argument("query", help="the query text")
    p.add_argument("--out", "-o", default="out", help="the run directory (default ./out)")
    p.add_argument("--k", type=int, default=10, help="documents to return (default 10)")
    p.add_argument("--cluster", type=int, default=None, help="only documents of this cluster")
    p.add_argument("--filter", default="", help="any Milvus boolean expression, e.g. 'layer_1 == 2'")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--quiet", "-q", action="store_true", help="no stage logs")


def _saved_config(out: str) -> EngineConfig:
    saved = Path(out) / RUN_CONFIG_NAME
    if not saved.exists():
        raise EngineError(f"{saved} not found: `engine run CORPUS --out {out}` first")
    options = load_toml(saved)
    options.pop("restart", None)
    options["out"] = out
    config = EngineConfig().updated(options)
    config.validate()
    return config


def _run_use(args: argparse.Namespace) -> int:
    """``engine assign`` and ``engine search`` on a finished run."""
    import json

    from engine.pipeline import Pipeline

    config = _saved_config(args.out)
    with Pipeline(config, progress=not args.quiet) as pipe:
        if args.command == "search":
            hits = pipe.search(args.query, k=args.k, cluster=args.cluster, filter=args.filter)
            if args.json:
                for row in hits.to_dict(orient="records"):
                    print(json.dumps(row, ensure_ascii=False, default=str))
            else:
                for row in hits.itertuples(index=False):
                    text = " ".join(str(row.text).split())
                    print(f"{row.score:7.3f}  cluster {row.cluster:>4}  id {row.id:<20} {text[:100]}")
                where = f" in cluster {args.cluster}" if args.cluster is not None else ""
                print(f"{len(hits)} documents{where}", file=sys.stderr)
            return 0
        from engine.corpus import load_corpus, with_source_columns

        corpus = load_corpus(
            args.corpus,
            text_template=config.text_template,
            text_column=config.text_column,
            id_column=config.id_column,
            empty=config.empty,
            fmt=config.format,
            encoding=config.encoding,
            column_names=config.columns,
        )
        name = Path(args.corpus).name.split(".")[0] or "new"
        out = pipe.assign(corpus.frame, k=args.k, store=args.store, source=Path(args.corpus).name)
        out = with_source_columns(out, corpus.frame, corpus.stats)
        path = Path(args.out) / "assigned" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(path, index=False)
        placed = int((out["cluster"] >= 0).sum()) if "cluster" in out else 0
        reasons = out["cluster_reason"].value_counts().to_dict() if "cluster_reason" in out else {}
        print(
            f"engine assign: {len(out)} documents, {placed} placed in clusters, {len(out) - placed} noise "
            f"({', '.join(f'{k} {v}' for k, v in reasons.items())}){'; stored in Milvus' if args.store else ''}\n"
            f"  {path}"
        )
    return 0


def _add_tool_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands owned by other modules, which parse their own arguments."""
    p = sub.add_parser("bench-index", help="benchmark Milvus index types on your own vectors", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("doctor", help="what this machine offers and what 'auto' will choose", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """Defaults < --config < saved run.toml (stage re-runs) < command-line flags."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "quiet", "verbose", "config")}
    for name in ("index_params", "search_params"):
        if name in given:
            given[name] = parse_json_option(given[name], name.replace("_", "-"))
    config = EngineConfig()
    if "config" in vars(args):
        config = config.updated(load_toml(args.config), source=args.config)
    out = given.get("out", config.out)
    saved = Path(out) / RUN_CONFIG_NAME
    if args.command != "run" and saved.is_file():
        saved_options = load_toml(saved)
        saved_options.pop("restart", None)  # a restart is never implied by an earlier run
        config = config.updated(saved_options, source=str(saved))
    config = config.updated(given)
    config.validate()
    return config


def _setup_logging(quiet: bool, verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet and not verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    quiet_libraries(not verbose)


def _run_stage(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline

    config = config_from_args(args)
    pipe = Pipeline(config, progress=not args.quiet)
    steps: dict[str, list[Callable[[], Any]]] = {
        "run": [pipe.run],
        "embed": [pipe.load_corpus, pipe.embed],
        "graph": [pipe.build_graph],
        "cluster": [pipe.cluster],
        "map": [pipe.project],
        "report": [pipe.report, pipe.store_labels],
    }
    if args.command == "embed" and config.corpus is None:
        raise EngineError("engine embed needs the corpus file: engine embed CORPUS --out DIR")
    if args.command == "run" and config.corpus is None:
        raise EngineError("engine run needs the corpus file: engine run CORPUS --out DIR")
    with RunLock(config.out_dir, args.command), pipe:
        if args.command != "run":
            config.save(config.out_dir / RUN_CONFIG_NAME)
        for step in steps[args.command]:
            step()
    if args.command in ("run", "report"):
        print(pipe.summary().format())
        if args.command == "run" or pipe.paths.map_html.exists():
            print(f"\nopen the map: {pipe.paths.map_html.resolve()}")
    else:
        done = ", ".join(f"{k} {v:.1f} s" for k, v in pipe.timings_.items())
        print(f"engine {args.command}: done ({done}); outputs in {config.out_dir}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Tools with their own argument parsers get the rest of the command line untouched.
    if argv[0] == "bench-index":
        from engine.bench.index_bench import main as bench_main

        _setup_logging(False)
        return bench_main(argv[1:])
    if argv[0] == "doctor":
        from engine.doctor import main as doctor_main

        return doctor_main(argv[1:])
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    # SIGTERM (kill, a scheduler's timeout) ends the command like Ctrl+C: stages stop, the run directory
    # lock and the engine-run Milvus server are released on the way out.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command in ("assign", "search"):
            return _run_use(args)
        return _run_stage(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
