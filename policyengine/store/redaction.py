"""Field redaction before a decision is logged.

A rule is either a dotted path from the logged action (`fields.card.number`,
`text`) or a bare key name (`email`) that matches at any depth. The value is
replaced by `"redacted:sha256:<hex>"` — an HMAC when a salt is configured — so
equal values can still be correlated without being readable.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import orjson


class Redactor:
    def __init__(self, rules: Iterable[str] = (), salt: str | None = None) -> None:
        self.paths: list[list[str]] = []
        self.names: set[str] = set()
        for r in rules:
            r = r.strip()
            if not r:
                continue
            if "." in r:
                self.paths.append(r.split("."))
            else:
                self.names.add(r)
        self._salt = salt.encode() if salt else None

    def __bool__(self) -> bool:
        return bool(self.paths or self.names)

    def digest(self, value: Any) -> str:
        raw = orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)
        h = hmac.new(self._salt, raw, hashlib.sha256) if self._salt else hashlib.sha256(raw)
        return f"redacted:sha256:{h.hexdigest()}"

    def redact(self, data: dict[str, Any]) -> dict[str, Any]:
        """A redacted deep copy of `data` (the input is not modified)."""
        if not self:
            return data
        out = self._by_name(data)
        for path in self.paths:
            self._by_path(out, path)
        return out

    def _by_name(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (self.digest(v) if k in self.names and v is not None else self._by_name(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._by_name(v) for v in value]
        return value

    def _by_path(self, node: Any, path: list[str]) -> None:
        head, rest = path[0], path[1:]
        if isinstance(node, list):
            for item in node:
                self._by_path(item, path)
            return
        if not isinstance(node, dict) or head not in node:
            return
        if not rest:
            if node[head] is not None:
                node[head] = self.digest(node[head])
        else:
            self._by_path(node[head], rest)
