"""The results the gateway answers a tools/call with when it does not forward the upstream's.

Every refusal is a `CallToolResult` with `isError: true`, not a JSON-RPC error: MCP clients hand
an error result to the model as the tool's output, so the agent reads why (denied by which
rule, waiting for which approval, which upstream is down) and can say so or try otherwise; a
JSON-RPC error is usually shown as a bare failure. Its text is one readable paragraph; its
`structuredContent.policyengine` carries the same facts for programs: `outcome`, `effect`,
`decision_id`, `reason` and, when held, `approval` (`approval_id`, `state`, `status_url`) and
how to resume (`resume`). JSON-RPC errors are kept for what is wrong with the request itself
(an unknown tool, the caller not authenticated, the decision log down).
"""

from __future__ import annotations

from typing import Any

import mcp_types as types

from policyengine.mcpgate.decide import APPROVAL_ARG, APPROVAL_META

__all__ = ["refusal", "resume_hint"]


def resume_hint(approval_id: str) -> dict[str, Any]:
    """How a client resumes a held call: the same tool and arguments, naming the approval."""
    return {"approval_id": approval_id, "meta": {APPROVAL_META: approval_id}, "argument": {APPROVAL_ARG: approval_id}}


def refusal(text: str, *, outcome: str, effect: str | None = None, decision_id: str | None = None,
            reason: str | None = None, approval: dict[str, Any] | None = None) -> types.CallToolResult:
    """An error result saying why the call was not run."""
    info: dict[str, Any] = {"outcome": outcome}
    for k, v in (("effect", effect), ("decision_id", decision_id), ("reason", reason), ("approval", approval)):
        if v is not None:
            info[k] = v
    if approval and approval.get("state", "pending") == "pending" and approval.get("approval_id"):
        info["resume"] = resume_hint(approval["approval_id"])
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content={"policyengine": info}, is_error=True)
