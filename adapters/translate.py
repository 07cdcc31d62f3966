"""Small helpers shared by the translating adapters (Bedrock, Vertex generateContent)."""

from __future__ import annotations

import re
from typing import Any

import orjson

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.S)


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)


def data_url_parts(url: str) -> tuple[str | None, str | None]:
    m = _DATA_URL.match(url or "")
    return (m.group(1), m.group(2)) if m else (None, None)


def json_args(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}


_BEDROCK_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                   "content_filtered": "content_filter", "guardrail_intervened": "content_filter",
                   "model_context_window_exceeded": "length"}


def finish_from_bedrock(reason: str | None) -> str:
    return _BEDROCK_FINISH.get(reason or "end_turn", "stop")


_GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
                  "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                  "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "stop", "OTHER": "stop",
                  "LANGUAGE": "stop"}


def finish_from_gemini(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if has_calls and reason == "STOP":
        return "tool_calls"
    return _GEMINI_FINISH.get(reason, "stop")
