"""Corpus stage: read CSV / TSV / Parquet / JSON-lines into one frame of (id, text, source columns).

Why this shape: every later stage works on *positions* 0..N-1 in this frame's order and
on a stable int64 ``id`` per row, the Milvus primary key. Ids must not change between
re-runs of the same file, or a resumed ingest would embed rows twice or skip rows.
By default the id is the row's number in the file (0-based, header excluded), which is
stable while the file is unchanged; ``id_column`` derives it from a column instead
(integers as they are, anything else hashed to 63 bits), which also survives edits.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import EngineError

DEFAULT_TEMPLATE = "{title}\n{description}"
#: Widest padding / longest precision a template's format spec may ask for: "{title:>99999999}"
#: would build a 100 MB string per row (measured: MemoryError), and no real text needs more.
MAX_SPEC_WIDTH = 1000
#: [[fill]align][sign][z][#][0][width][grouping][.precision][type] -- Python's format-spec grammar
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?", re.S)
#: Per-field limit of Python's csv module (128 KiB by default): long articles are normal, so
#: the strict quote check reads fields of any size a C long allows.
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
#: Columns the engine adds to the corpus frame; a source column with one of these names is stored
#: in corpus.parquet as ``source_<name>`` and gets its own name back in labels.parquet.
ENGINE_COLUMNS = ("id", "text", "row")
SOURCE_PREFIX = "source_"
FORMATS = ("csv", "tsv", "parquet", "jsonl")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass
class Corpus:
    """The loaded corpus: ``frame`` (``id``, ``text``, ``row`` and source columns) and load ``stats``."""

    frame: pd.DataFrame
    stats: dict = field(default_factory=dict)
    path: str = ""

    def __len__(self) -> int:
        return len(self.frame)


def detect_format(path: Path, fmt: str | None = None) -> str:
    """Pick the reader from ``fmt`` or the file extension (``.gz`` etc. looked through)."""
    if fmt:
        if fmt not in FORMATS:
            raise EngineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in _EXTENSIONS:
            return _EXTENSIONS[suffix]
    raise EngineError(
        f"cannot tell the format of {path.name!r} from its extension; pass --format ({', '.join(FORMATS)})"
    )


def first_undecodable(path: Path, encoding: str, chunk: int = 1 << 20) -> tuple[int, int, bytes] | None:
    """(byte offset, line, the bad bytes) of the first byte sequence ``encoding`` cannot decode, or None.

    Why not the reader's ``UnicodeDecodeError``: pandas decodes in chunks, so its offset is relative
    to a chunk (measured: "offset 100" for a bad byte at 2140).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset, lines = 0, 1
    with open(path, "rb") as fh:
        while True:
            data = fh.read(chunk)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                buffered = exc.object  # the undecoded tail of the previous chunk + this chunk
                at = offset - pending + exc.start
                head = bytes(buffered[: exc.start])
                line = lines - buffered[:pending].count(b"\n") + head.count(b"\n")
                return at, line, bytes(buffered[exc.start : exc.end])
            if not data:
                return None
            offset += len(data)
            lines += data.count(b"\n")


def check_csv_quotes(path: Path, encoding: str, sep: str = ",") -> None:
    """Strict CSV quoting, line by line: an unbalanced quote is an error naming its line.

    pandas' reader is lenient: a field opened with ``"`` and never closed swallows the following
    rows until the next quote (measured: 59 of 60 rows read, one holding the next row's id and
    title, exit 0). Python's ``csv`` module in strict mode refuses exactly that.
    """
    start = 1
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=sep, quotechar='"', strict=True)
        try:
            for _ in reader:
                start = reader.line_num + 1
        except csv.Error as exc:
            if "expected after" not in str(exc) and "end of data" not in str(exc):
                raise EngineError(f"{path}: line {start}: not valid CSV ({exc})") from None
            raise EngineError(
                f'{path}: line {start}: unbalanced quote: a field opened with " is not closed before '
                f"{'the end of the file' if 'end of data' in str(exc) else f'line {reader.line_num}'} "
                f'({exc}); fix the quoting of that row (a quote inside a quoted field is written "")'
            ) from None


def first_bad_json_line(path: Path, encoding: str) -> tuple[int, str] | None:
    """(line number, reason) of the first line of a JSON-lines file that is not one JSON object."""
    with open(path, encoding=encoding) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                return number, f"{exc.msg} at column {exc.colno}"
            if not isinstance(value, dict):
                return number, f"a JSON {type(value).__name__}, not an object"
    return None


def read_table(
    path: str | Path,
    fmt: str | None = None,
    encoding: str = "utf-8",
    column_names: list[str] | None = None,
) -> pd.DataFrame:
    """Read the raw table; every failure becomes one EngineError line naming the file."""
    path = Path(path)
    if not path.exists():
        raise EngineError(f"corpus file not found: {path}")
    if path.is_dir():
        raise EngineError(f"corpus path is a directory, not a file: {path}")
    fmt = detect_format(path, fmt)
    header = None if column_names else "infer"
    try:
        if fmt == "csv":
            check_csv_quotes(path, encoding)
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                encoding=encoding,
                header=0 if header == "infer" else None,
                names=column_names,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                quoting=3 if fmt == "tsv" else 0,  # QUOTE_NONE for TSV: quotes are text there
                on_bad_lines="error",
            )
        elif fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype=False, encoding=encoding)
    except UnicodeDecodeError as exc:
        found = first_undecodable(path, encoding)
        at, line, bad = found if found else (exc.start, 0, exc.object[exc.start : exc.end])
        raise EngineError(
            f"{path}: line {line}: cannot decode byte {bad[:1]!r} at byte offset {at} as {encoding}; "
            "pass --encoding (e.g. latin-1, gbk)"
        ) from None
    except pd.errors.EmptyDataError:
        raise EngineError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise EngineError(f"{path}: not valid {fmt.upper()}: {str(exc).strip().splitlines()[-1]}") from None
    except ValueError as exc:  # JSON and Parquet readers raise ValueError on malformed input
        bad_line = first_bad_json_line(path, encoding) if fmt == "jsonl" else None
        if bad_line is not None:
            raise EngineError(f"{path}: line {bad_line[0]}: not valid JSON-lines: {bad_line[1]}") from None
        raise EngineError(f"{path}: not valid {fmt}: {str(exc).strip().splitlines()[0]}") from None
    except (OSError, ImportError) as exc:
        raise EngineError(f"{path}: cannot read as {fmt}: {exc}") from None
    if column_names and fmt in ("parquet", "jsonl"):
        if len(column_names) != frame.shape[1]:
            raise EngineError(
                f"--columns names {len(column_names)} columns but {path.name} has {frame.shape[1]}"
            )
        frame.columns = column_names
    frame.columns = [str(c) for c in frame.columns]
    return frame


def template_fields(template: str) -> list[str]:
    """Column names a ``str.format`` template refers to, in order."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise EngineError(f"--text-template {template!r} is not a valid format string: {exc}") from None
    if not names:
        raise EngineError(f"--text-template {template!r} names no column (use e.g. '{{title}}')")
    if any(name == "" or name.isdigit() for name in names):
        raise EngineError(f"--text-template {template!r}: name the columns, e.g. '{{title}}', not '{{}}'")
    for _, name, spec, _ in string.Formatter().parse(template):
        check_format_spec(template, name, spec or "")
    return names


def check_format_spec(template: str, name: str | None, spec: str) -> None:
    """Refuse a field's format spec that nests fields, is malformed, or pads beyond MAX_SPEC_WIDTH."""
    if not spec:
        return
    match = _SPEC.fullmatch(spec)
    if "{" in spec or match is None:
        raise EngineError(
            f"--text-template {template!r}: {{{name}:{spec}}} is not a supported format spec "
            "(use e.g. '{title}', '{title:.200}' or '{price:.2f}')"
        )
    for part in ("width", "precision"):
        if match.group(part) and int(match.group(part)) > MAX_SPEC_WIDTH:
            raise EngineError(
                f"--text-template {template!r}: the {part} {int(match.group(part))} in {{{name}:{spec}}} "
                f"is over {MAX_SPEC_WIDTH} characters; drop the format spec or use a smaller {part}"
            )


def build_texts(frame: pd.DataFrame, template: str) -> pd.Series:
    """Fill the template per row, vectorised; a missing (NaN) field becomes empty text.

    Surrounding whitespace is stripped so that a row whose fields are all empty yields "",
    and a row with only a title does not end in a dangling newline.
    """
    parts = list(string.Formatter().parse(template))
    out = pd.Series([""] * len(frame), index=frame.index, dtype=object)
    for literal, name, spec, conv in parts:
        if literal:
            out = out + literal
        if name is None:
            continue
        column = frame[name]
        values = column.astype(object).where(column.notna(), "")
        if spec or conv:
            fmt = "{0" + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            try:
                values = values.map(lambda v, f=fmt: f.format(v) if v != "" else "")
            except (ValueError, TypeError) as exc:
                raise EngineError(
                    f"--text-template {template!r}: {{{name}{'!' + conv if conv else ''}:{spec}}} does not "
                    f"apply to column {name!r} ({exc})"
                ) from None
        else:
            values = values.map(lambda v: v if isinstance(v, str) else str(v))
        out = out + values
    # Collapse the separators that empty fields leave behind ("title\n" -> "title").
    return out.str.strip()


def stable_ids(values: pd.Series, column: str) -> np.ndarray:
    """int64 ids from a column: integers kept as they are, anything else hashed (blake2b, 63 bits)."""
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise EngineError(f"--id-column {column!r} is empty at row {row}")
    if pd.api.types.is_integer_dtype(values):
        ids = values.to_numpy(dtype=np.int64)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and (numeric % 1 == 0).all() and numeric.abs().max() < 2**62:
            ids = numeric.to_numpy(dtype=np.int64)
        else:
            ids = np.fromiter(
                (
                    int.from_bytes(hashlib.blake2b(str(v).encode("utf-8"), digest_size=8).digest(), "big")
                    >> 1
                    for v in values
                ),
                dtype=np.int64,
                count=len(values),
            )
    duplicated = pd.Series(ids).duplicated(keep="first").to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise EngineError(
            f"--id-column {column!r} is not unique: row {row} repeats the id of an earlier row "
            f"({values.iloc[row]!r})"
        )
    return ids


def load_corpus(
    path: str | Path,
    text_template: str = DEFAULT_TEMPLATE,
    text_column: str | None = None,
    id_column: str | None = None,
    empty: str = "drop",
    duplicates: str = "keep",
    fmt: str | None = None,
    encoding: str = "utf-8",
    column_names: list[str] | None = None,
    limit: int | None = None,
) -> Corpus:
    """Load a corpus and build one text per row.

    ``empty``: ``"drop"`` rows whose text is empty (counted in the stats) or ``"error"``.
    ``duplicates``: ``"keep"`` identical texts (they become zero-distance neighbours, which the
    graph and HDBSCAN preserve) or ``"drop"`` all but the first occurrence.
    """
    if empty not in ("drop", "error"):
        raise EngineError(f"--empty must be 'drop' or 'error', got {empty!r}")
    if duplicates not in ("keep", "drop"):
        raise EngineError(f"--duplicates must be 'keep' or 'drop', got {duplicates!r}")
    if limit is not None and limit < 1:
        raise EngineError(f"--limit must be a positive number of rows, got {limit}")

    frame = read_table(path, fmt=fmt, encoding=encoding, column_names=column_names)
    n_rows = len(frame)
    if n_rows == 0:
        raise EngineError(f"{path}: no rows")
    if limit is not None:
        frame = frame.iloc[:limit]

    if text_column is not None:
        if text_column not in frame.columns:
            raise EngineError(
                f"--text-column {text_column!r} is not a column of {Path(path).name} "
                f"(columns: {', '.join(frame.columns)})"
            )
        template = "{" + text_column + "}"
    else:
        template = text_template
    missing = [name for name in template_fields(template) if name not in frame.columns]
    if missing:
        raise EngineError(
            f"--text-template names column {missing[0]!r}, which {Path(path).name} does not have "
            f"(columns: {', '.join(frame.columns)}); use --text-column or --text-template"
        )
    if id_column is not None and id_column not in frame.columns:
        raise EngineError(
            f"--id-column {id_column!r} is not a column of {Path(path).name} (columns: {', '.join(frame.columns)})"
        )

    texts = build_texts(frame, template)
    row_numbers = np.arange(len(frame), dtype=np.int64)
    ids = stable_ids(frame[id_column], id_column) if id_column else row_numbers.copy()

    out = frame.copy()
    renamed = {}
    for name in ENGINE_COLUMNS:  # a source column named id/text/row is kept, under a reserved name
        if name in out.columns:
            stored = SOURCE_PREFIX + name
            while stored in out.columns:
                stored = "_" + stored
            renamed[stored] = name
    out = out.rename(columns={v: k for k, v in renamed.items()})
    out.insert(0, "id", ids)
    out.insert(1, "text", texts.to_numpy(dtype=object))
    out.insert(2, "row", row_numbers)

    is_empty = texts.str.len().to_numpy() == 0
    n_empty = int(is_empty.sum())
    if n_empty and empty == "error":
        row = int(np.flatnonzero(is_empty)[0])
        raise EngineError(
            f"row {row} (file line {row + 2}) has empty text from template {template!r}; "
            f"{n_empty} such rows in all (use --empty drop to skip them)"
        )
    out = out.loc[~is_empty]

    is_dup = out["text"].duplicated(keep="first").to_numpy()
    n_dup = int(is_dup.sum())
    if duplicates == "drop":
        out = out.loc[~is_dup]

    if len(out) == 0:
        raise EngineError(
            f"{path}: zero usable rows ({n_rows} read, {n_empty} with empty text from template {template!r})"
        )
    out = out.reset_index(drop=True)
    stats = {
        "rows_read": int(n_rows),
        "rows_limited_to": int(limit) if limit is not None else None,
        "empty_texts": n_empty,
        "empty_policy": empty,
        "duplicate_texts": n_dup,
        "duplicate_policy": duplicates,
        "documents": int(len(out)),
        "template": template,
        "source_columns": [str(c) for c in frame.columns],
        "renamed_columns": renamed,
    }
    return Corpus(frame=out, stats=stats, path=str(path))


def source_columns(frame: pd.DataFrame, stats: dict | None = None) -> dict[str, str]:
    """{column in the corpus frame: its name in the source file} for every source column, in file order.

    Uses the ``renamed_columns`` recorded at load time; a run saved before that existed falls back
    to every column the engine did not add.
    """
    renamed = dict((stats or {}).get("renamed_columns") or {})
    return {c: renamed.get(c, c) for c in frame.columns if c not in ENGINE_COLUMNS}


def with_source_columns(
    results: pd.DataFrame, frame: pd.DataFrame, stats: dict | None = None
) -> pd.DataFrame:
    """``results`` (engine columns, corpus order) followed by every source column under its own name.

    Why: users filter and join on their own columns (date, category, url, their string ids), so
    labels.parquet carries them as given. A source ``id`` or ``text`` keeps its name and the
    engine's column of that name becomes ``engine_id`` / ``engine_text``; a source column named
    like a result (``cluster``, ``x`` ...) is carried as ``source_<name>``.
    """
    out = results.copy()
    names: dict[str, str] = {}  # output name -> stored column, built once: one concat, not one insert each
    for stored, original in source_columns(frame, stats).items():
        name = original
        if original in ENGINE_COLUMNS and original in out.columns:
            out = out.rename(columns={original: "engine_" + original})
        elif original in out.columns:
            name = SOURCE_PREFIX + original
        names[name] = stored
    if not names:
        return out
    carried = frame[list(names.values())].set_axis(list(names), axis=1).reset_index(drop=True)
    return pd.concat([out.reset_index(drop=True), carried], axis=1).set_axis(out.index, axis=0)


def engine_id_column(labels: pd.DataFrame) -> str:
    """The column of labels.parquet holding the engine's int64 ids (the Milvus primary key)."""
    return "engine_id" if "engine_id" in labels.columns else "id"


def parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: source columns of mixed Python types are kept as text."""
    for column in frame.columns:
        if frame[column].dtype == object and column != "text":
            frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return frame
