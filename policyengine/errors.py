"""The root of every error policyengine raises on purpose.

Every deliberate failure in the engine (a policy that does not load, a request the API
refuses, a model chain that failed, a decision log that cannot commit, an approval that
cannot change state, a notification that cannot be delivered) is a `PolicyEngineError`:

- `code` is stable: documented, logged, sent to clients, and safe to match on. A subclass
  sets its default as a class attribute; an instance may narrow it.
- `span` locates the error in policy source when there is one (`file:line:col`).

This module sits at the bottom of the import graph: it imports nothing from policyengine,
so every layer can raise these without importing another layer. How an error becomes an
HTTP response is decided in exactly one place, `policyengine.api.errors.to_response`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Location", "PolicyEngineError", "describe_validation"]


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a policy source: 1-based line and column, optionally its end."""

    file: str
    line: int
    col: int = 1
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class PolicyEngineError(Exception):
    """Base of the engine's error hierarchy.

    Guarantees: `str(err) == err.message`; `err.code` is a non-empty snake_case identifier
    that does not change between releases for the same failure; `err.span` is a `Location`
    (or anything with `file`, `line` and `col`) or None.
    """

    code: ClassVar[str] = "policyengine_error"

    def __init__(self, message: str, *, code: str | None = None, span: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance narrows its class's default
        self.span = span


_TRANSPORT_LOCS = ("body", "query", "path", "header")


def describe_validation(errors: list[Any], limit: int = 5) -> tuple[str, str | None]:
    """A pydantic `ValidationError.errors()` list as one readable line, and the dotted path of
    the first field at fault (None when there is none). Transport prefixes (`body`, `query`,
    `path`, `header`) are left out of the paths; at most `limit` problems are spelled out."""

    def loc(e: Any) -> str:
        return ".".join(str(p) for p in e.get("loc", ()) if p not in _TRANSPORT_LOCS) or "body"

    msgs = [f"{loc(e)}: {e.get('msg')}" for e in errors[:limit]]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(msgs) + more, (loc(errors[0]) if errors else None)
