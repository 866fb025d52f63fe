"""User filters (``engine search --filter``): checked before they reach Milvus, combined so they only narrow.

Why: the search ANDs the user's expression with ``cluster == N``. A filter such as
``id >= 0) or (id >= 0`` closes the bracket put around it and escapes ``--cluster``; a misspelt field
(``cluster_1`` for ``layer_1``) is silently a dynamic-field key that matches nothing. So a filter must
be one self-contained expression (brackets balanced outside string literals, strings closed) that
names only fields the collection holds; Milvus itself then parses it (:meth:`MilvusStore.check_filter`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.errors import EngineError

#: Words of Milvus' expression language that are not field names (case-insensitive).
KEYWORDS = frozenset({"and", "or", "not", "in", "like", "true", "false", "is", "null", "exists"})
_WORD = re.compile(r"(?<![\w.$])\$?[A-Za-z_]\w*")
_PAIRS = {")": "(", "]": "["}


def _code_parts(expr: str) -> str:
    """``expr`` with every string literal blanked (brackets and words inside strings are data)."""
    out: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in expr:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
                out.append(ch)
                continue
            out.append(" ")
            continue
        if ch in "'\"":
            quote = ch
        out.append(ch)
    if quote is not None:
        raise EngineError(f"--filter {expr!r} does not parse: a string literal is not closed ({quote})")
    return "".join(out)


def filter_fields(expr: str) -> list[str]:
    """Field names an expression uses (words that are neither keywords nor function names), in order."""
    code = _code_parts(expr)
    names: list[str] = []
    for m in _WORD.finditer(code):
        word = m.group()
        if word.lower() in KEYWORDS or code[m.end() :].lstrip().startswith("("):
            continue
        if word not in names:
            names.append(word)
    return names


def check_filter(expr: str, fields: Iterable[str]) -> str:
    """The stripped filter when it is one self-contained expression on known ``fields``; else EngineError.

    ``$meta`` (the dynamic-field map) is allowed: its keys are string literals the user spells out.
    """
    expr = expr.strip()
    if not expr:
        return ""
    code = _code_parts(expr)
    stack: list[str] = []
    for ch in code:
        if ch in "([":
            stack.append(ch)
        elif ch in ")]":
            if not stack or stack.pop() != _PAIRS[ch]:
                raise EngineError(
                    f"--filter {expr!r} does not parse: unbalanced {ch!r} (a filter is one expression; "
                    "it can only narrow --cluster)"
                )
    if stack:
        raise EngineError(f"--filter {expr!r} does not parse: {stack[-1]!r} is not closed")
    known = list(dict.fromkeys(fields))
    unknown = [f for f in filter_fields(expr) if f not in known and f != "$meta"]
    if unknown:
        raise EngineError(
            f"--filter names {', '.join(repr(f) for f in unknown)}, which this run's collection does not "
            f"hold; its fields: {', '.join(known)}"
        )
    return expr


def combine(*parts: str) -> str:
    """AND of checked expressions, each bracketed (a checked part cannot close another's bracket)."""
    kept = [p for p in parts if p]
    return " and ".join(f"({p})" for p in kept) if len(kept) > 1 else (kept[0] if kept else "")
