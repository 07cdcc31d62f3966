"""The text of a model's answer (an OpenAI chat.completion), as verification compares it."""

from __future__ import annotations

import json

__all__ = ["answer_text"]


def answer_text(response: dict) -> str:
    """The assistant text of an OpenAI chat.completion (tool calls rendered as JSON)."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError("response is not an OpenAI chat.completion (no choices[0].message)") from exc
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    parts = [content] if content else []
    if message.get("tool_calls"):
        parts.append(json.dumps(
            [tc.get("function", tc) for tc in message["tool_calls"]], sort_keys=True, ensure_ascii=False
        ))
    return "\n".join(parts)
