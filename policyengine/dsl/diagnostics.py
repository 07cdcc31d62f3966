"""Located problems in policy sources, and the error that carries them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Diagnostic(BaseModel):
    """One problem at one place: `file:line:col: CODE message`, the line, a caret, a hint."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None
    code: str
    # info: an analysis finding (I codes), reported only when asked for (`lint --analyze`, the LSP)
    severity: Literal["error", "warning", "info"] = "error"
    message: str
    hint: str | None = None
    source_line: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        head = f"{self.file}:{self.line}:{self.col}: {self.code} {self.message}"
        out = [head]
        if self.source_line:
            # tabs shown as one space each, so the caret (counted in characters) lines up
            out.append("  " + self.source_line.rstrip("\n").replace("\t", " "))
            width = 1
            if self.end_line == self.line and self.end_col and self.end_col > self.col:
                width = self.end_col - self.col
            out.append("  " + " " * (self.col - 1) + "^" * width)
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def github(self) -> str:
        """A GitHub Actions workflow annotation."""
        kind = "error" if self.is_error else "notice" if self.severity == "info" else "warning"
        msg = self.message + (f" (hint: {self.hint})" if self.hint else "")

        def data(text: str) -> str:  # workflow-command data escaping
            return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

        def prop(text: str) -> str:  # property values also escape ':' and ','
            return data(text).replace(":", "%3A").replace(",", "%2C")

        return (
            f"::{kind} file={prop(self.file)},line={self.line},col={self.col},"
            f"endLine={self.end_line or self.line},endColumn={self.end_col or self.col},"
            f"title={prop(self.code)}::{data(msg)}"
        )


class PolicyError(Exception):
    """A policy set that cannot be loaded: every diagnostic found, each with its location."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.is_error] or diagnostics
        first = errors[0].format() if errors else "policy error"
        more = f"\n(+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


def source_line(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1].rstrip("\r") if 1 <= line <= len(lines) else ""
