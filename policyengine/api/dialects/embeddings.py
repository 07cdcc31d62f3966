"""OpenAI's embeddings request and answer at the edge.

- `validate(body)`: `input` (a string, a list of strings, a list of token ids, or a list of
  lists of token ids), `model`, `encoding_format` (float or base64), `dimensions`, `user`
  checked; a 400 names the field.
- `action_text(body)`: the text the policy's conditions read (`text mentions ...`): the string
  inputs joined, or None for token ids.
- `upstream_body(body)`: what is sent upstream: always `encoding_format: float`, so that every
  OpenAI-compatible server (some have no base64) answers the same way.
- `encode(resp, encoding_format)`: the answer in the format the client asked for (the openai
  SDK asks for base64 by default and decodes it): base64 of little-endian float32, as OpenAI.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from policyengine.adapters.base import NATIVE_KEY
from policyengine.api.dialects import DialectError

__all__ = ["action_text", "encode", "estimate_tokens", "upstream_body", "validate"]

GATEWAY_ONLY = ("metadata", NATIVE_KEY)


def _is_tokens(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def validate(body: dict[str, Any]) -> None:
    """Refuse (DialectError, naming the field) an embeddings body the gateway cannot send on."""
    inp = body.get("input")
    ok = (isinstance(inp, str) and inp != "") or _is_tokens(inp) or (
        isinstance(inp, list) and bool(inp)
        and (all(isinstance(s, str) and s != "" for s in inp) or all(_is_tokens(t) for t in inp)))
    if not ok:
        raise DialectError("'input' must be a non-empty string, a list of non-empty strings, a list of token ids "
                           "or a list of lists of token ids", "input")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise DialectError("'model' must be a string (a model name, or 'auto' to let the policy route)", "model")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise DialectError("'encoding_format' must be float or base64", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise DialectError("'dimensions' must be a positive integer", "dimensions")
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise DialectError("'metadata' must be an object", "metadata")


def action_text(body: dict[str, Any]) -> str | None:
    """The input's text (strings joined by newlines), or None when the input is token ids."""
    inp = body["input"]
    if isinstance(inp, str):
        return inp
    if inp and all(isinstance(s, str) for s in inp):
        return "\n".join(inp)
    return None


def estimate_tokens(body: dict[str, Any], chars_per_token: float = 4.0) -> int:
    """Estimated input tokens: characters / chars_per_token, or the token ids counted."""
    inp = body["input"]
    if isinstance(inp, str):
        return math.ceil(len(inp) / chars_per_token)
    if _is_tokens(inp):
        return len(inp)
    return sum(math.ceil(len(s) / chars_per_token) if isinstance(s, str) else len(s) for s in inp)


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request sent upstream: gateway-only fields removed, floats asked for."""
    out = {k: v for k, v in body.items() if k not in GATEWAY_ONLY}
    out["encoding_format"] = "float"
    return out


def encode(resp: dict[str, Any], encoding_format: str | None) -> dict[str, Any]:
    """`resp` with each embedding as the client asked: floats, or base64 of float32 (little-endian)."""
    if encoding_format != "base64":
        return resp
    data = []
    for d in resp.get("data") or ():
        emb = d.get("embedding") if isinstance(d, dict) else None
        if isinstance(emb, list):
            d = {**d, "embedding": base64.b64encode(struct.pack(f"<{len(emb)}f", *emb)).decode()}
        data.append(d)
    return {**resp, "data": data}
