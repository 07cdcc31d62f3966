"""GitHub Actions workflow commands (`::error file=...,line=...::message`).

Escaping follows the runner's rules: in the message `%`, CR and LF are
percent-encoded; in property values `:` and `,` are too.
"""

from __future__ import annotations

from typing import Literal


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: Literal["error", "warning", "notice"], message: str, *, file: str | None = None,
               line: int | None = None, col: int | None = None, title: str | None = None) -> str:
    props = []
    if file:
        props.append(f"file={escape_property(file)}")
    if line is not None:
        props.append(f"line={line}")
    if col is not None:
        props.append(f"col={col}")
    if title:
        props.append(f"title={escape_property(title)}")
    head = f"::{level}" + (" " + ",".join(props) if props else "")
    return f"{head}::{escape_data(message)}"
