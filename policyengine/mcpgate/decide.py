"""A tools/call as an Action (no I/O): the tool's name is the action, its arguments the fields.

- `action`: the tool's own name on its server (`refund`, not a `SERVER.TOOL` shown name), so
  `require approval for refund when amount > 100 GBP` reads as it does everywhere else.
- `fields`: the arguments, with money read as `policyengine.gateway.tools.tool_fields` reads it
  (`{"amount": 150, "currency": "GBP"}` compares with `100 GBP`), plus `mcp.server` (the
  upstream's name) and `mcp.tool`, which replace any argument called `mcp`.
- `text`: the arguments' string values (nested ones too), one per line, at most
  `text_max_chars`: what `text mentions LEXICON` and `sentiment` read, so an escalation scoped
  to a tool (`escalate for send_email when text mentions litigation`) judges what the agent
  writes. A condition on one argument works too: `escalate for send_email when body mentions
  litigation`.
- `channel` is `mcp` unless the API key pins one; the key's tenant, tier and role apply as they
  do to `/v1/evaluate` (`policyengine.gateway.make_action`).
"""

from __future__ import annotations

from typing import Any

import orjson

from policyengine.gateway import make_action
from policyengine.gateway.tools import tool_fields
from policyengine.types import Action, Principal

__all__ = ["APPROVAL_ARG", "APPROVAL_META", "ArgumentsRefused", "argument_text", "probe_action", "tool_action"]

# Where a client names the approval a call resumes: the request's `_meta`, or an argument the
# gateway removes before forwarding (an agent's model can pass it back itself).
APPROVAL_META = "policyengine/approval_id"
APPROVAL_ARG = "policyengine_approval_id"
_DEPTH = 16


class ArgumentsRefused(ValueError):
    """The arguments cannot be judged (too large, or nested too deep); the message says why."""


def argument_text(args: dict[str, Any], limit: int) -> str | None:
    """The string values in `args` (depth-first, keys in order), one per line, cut at `limit` chars."""
    if limit <= 0:
        return None
    parts: list[str] = []
    size = 0
    stack: list[tuple[Any, int]] = [(args, 0)]
    while stack and size < limit:
        v, depth = stack.pop()
        if isinstance(v, str):
            if v:
                parts.append(v)
                size += len(v) + 1
        elif depth < _DEPTH and isinstance(v, dict):
            stack.extend((x, depth + 1) for x in reversed(list(v.values())))
        elif depth < _DEPTH and isinstance(v, list):
            stack.extend((x, depth + 1) for x in reversed(v))
    return "\n".join(parts)[:limit] or None


def _base(principal: Principal, server: str, tool: str, session_id: str | None) -> dict[str, Any]:
    return {"action": tool, "actor": principal.subject, "session_id": session_id}


def _made(data: dict[str, Any], principal: Principal) -> Action:
    # the key pins no channel: the channel is where the call came from
    return make_action(data, principal, channel="mcp")


def tool_action(principal: Principal, server: str, tool: str, args: dict[str, Any], *, session_id: str | None,
                max_bytes: int, text_max_chars: int) -> Action:
    """The Action a tools/call asks the policy about. Raises `ArgumentsRefused` for arguments
    over `max_bytes` of JSON, and the gateway's `InvalidAction` / `UntrustedInput` as
    `make_action` does."""
    try:
        size = len(orjson.dumps(args))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ArgumentsRefused(f"the arguments cannot be read as JSON: {exc}")
    if size > max_bytes:
        raise ArgumentsRefused(f"the arguments are {size} bytes of JSON, over the limit of {max_bytes}")
    fields = {**tool_fields(args), "mcp": {"server": server, "tool": tool}}
    data = {**_base(principal, server, tool, session_id), "fields": fields,
            "text": argument_text(args, text_max_chars)}
    return _made(data, principal)


def probe_action(principal: Principal, server: str, tool: str) -> Action:
    """The Action a tool stands for before any argument is known: what tools/list filters on."""
    data = {**_base(principal, server, tool, None), "fields": {"mcp": {"server": server, "tool": tool}}}
    return _made(data, principal)
