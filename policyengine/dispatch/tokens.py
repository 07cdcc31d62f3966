"""Prompt size estimate for context-window decisions when the caller did not say.

ceil(characters / chars_per_token) over every message's text (4 characters per
token by default: close for English with BPE tokenisers, pessimistic for code),
plus `max_tokens` / `max_completion_tokens` since the window must hold the answer.
"""

from __future__ import annotations

import math
from typing import Any


def _text_len(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, dict):
                n += len(part.get("text") or "")
            elif isinstance(part, str):
                n += len(part)
        return n
    return len(str(content))


def estimate_prompt_tokens(body: dict, chars_per_token: float = 4.0) -> int:
    """Estimated prompt tokens of an OpenAI chat body: ceil(characters / chars_per_token) over the
    messages' text (+4 per message), tool calls and tool definitions. The answer is not counted."""
    chars = 0
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            chars += _text_len(m.get("content")) + 4
            for tc in m.get("tool_calls") or ():
                fn = (tc or {}).get("function") or {}
                chars += len(fn.get("name") or "") + len(fn.get("arguments") or "")
    for t in body.get("tools") or ():
        chars += len(str(t))
    return math.ceil(chars / chars_per_token)


def requested_output_tokens(body: dict) -> int:
    """The answer budget the body asks for (`max_completion_tokens`, else `max_tokens`), 0 if none."""
    v = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return int(v) if isinstance(v, int | float) else 0
