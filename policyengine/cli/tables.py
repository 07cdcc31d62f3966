"""Tables the CLI prints: ids are never cut, output piped to a file is not squeezed to 80 columns.

`console()` is a Rich console as wide as the terminal, or `WIDE` columns when stdout is not a
terminal (and `$COLUMNS` is unset): a table piped into `less`, a file or CI logs keeps its rows.
`table(headers, rows, ids=...)` makes a Table whose id columns are as wide as their longest
value and never wrap or truncate, and whose other columns fold (wrap) rather than end in "…".
Cells are plain text (a value holding `[brackets]` is not read as markup).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["WIDE", "console", "id_column", "table"]

WIDE = 200


def console(*, stderr: bool = False, **kw: Any) -> Console:
    """A console for tables: the terminal's width, or `WIDE` when the stream is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if "width" not in kw and not os.environ.get("COLUMNS") and not stream.isatty():
        kw["width"] = WIDE
    return Console(stderr=stderr, **kw)


def id_column(t: Table, header: str, values: Iterable[str | None], **kw: Any) -> None:
    """Add an id column to `t`: no wrapping, at least as wide as its longest value (and header)."""
    width = max([len(header), *(len(v) for v in values if v)])
    t.add_column(header, no_wrap=True, min_width=width, overflow="fold", **kw)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, ids: Collection[str] = (),
          title: str | None = None) -> Table:
    """A table of `rows` (values shown with `str`, None as empty) under `headers`; the columns
    named in `ids` are id columns (`id_column`)."""
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        if h in ids:
            id_column(t, h, (r[i] for r in cells))
        else:
            t.add_column(h, overflow="fold")
    for r in cells:
        t.add_row(*(Text(c) for c in r))
    return t
