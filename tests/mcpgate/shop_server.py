"""The MCP servers behind the gateway in the tests, written with the official SDK (`MCPServer`).

`python shop_server.py` serves the shop (lookup_order, refund, pack_order, delete_account, crash) on stdio;
`mail_app()` is the mail server (send_email, find_email, draft_email, slow_email) as an ASGI app for streamable HTTP;
`python shop_server.py ledger PORT` serves the ledger (post_entry, halt) over streamable HTTP on
127.0.0.1:PORT in its own process, so a test can kill it. Every call a server runs is appended
to the file named by `SHOP_CALLS` (one JSON line), so a test can see what reached it.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import Field


def _note(tool: str, args: dict) -> None:
    path = os.environ.get("SHOP_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "args": args}) + "\n")


shop = MCPServer("shop")


@shop.tool()
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    _note("lookup_order", {"order_id": order_id})
    return f"order {order_id}: delivered, 1 item, 150 GBP"


@shop.tool()
def refund(order_id: str, amount: float, currency: str = "GBP") -> str:
    """Refund (part of) an order."""
    _note("refund", {"order_id": order_id, "amount": amount, "currency": currency})
    return f"refunded {amount:g} {currency} on order {order_id}"


@shop.tool()
def delete_account(user: str) -> str:
    """Delete a customer's account."""
    _note("delete_account", {"user": user})
    return f"deleted {user}"


@shop.tool()
async def pack_order(order_id: str, ctx: Context) -> str:
    """Pack an order, reporting progress as it goes."""
    for step in (1, 2):
        await ctx.report_progress(step, 2, f"packing {order_id}: step {step}")
    return f"packed {order_id}"


@shop.tool()
def crash() -> str:
    """Stop the server process at once (a server that dies mid-call)."""
    os._exit(3)


def mail_app():
    """The mail MCP server (send_email) as a Starlette app serving streamable HTTP at /mcp."""
    mail = MCPServer("mail")

    @mail.tool()
    def send_email(to: str, subject: str, body: str) -> str:
        """Send an email."""
        _note("send_email", {"to": to, "subject": subject})
        return f"sent to {to}: {subject}"

    @mail.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def find_email(query: str) -> str:
        """Search the mailbox (read-only: declared so with `readOnlyHint`)."""
        _note("find_email", {"query": query})
        return f"2 messages match {query!r}"

    @mail.tool()
    async def draft_email(to: str, ctx: Context) -> str:
        """Draft an email, reporting progress as it goes (the answer comes as an SSE stream)."""
        for step in (1, 2):
            await ctx.report_progress(step, 2, f"drafting to {to}: step {step}")
        return f"drafted to {to}"

    @mail.tool()
    async def slow_email(to: str) -> str:
        """Send an email slowly (a call the client can give up on while it runs)."""
        _note("slow_email", {"to": to, "phase": "started"})
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            _note("slow_email", {"to": to, "phase": "cancelled"})
            raise
        return f"sent slowly to {to}"

    return mail.streamable_http_app(host="0.0.0.0")


def serve_ledger(port: int) -> None:
    """The ledger MCP server (post_entry, halt) on streamable HTTP at 127.0.0.1:port/mcp."""
    import uvicorn

    ledger = MCPServer("ledger")

    @ledger.tool()
    def post_entry(account: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Account"})],
                   amount: float) -> str:
        """Post an entry to an account (the account travels as the Mcp-Param-Account header too)."""
        _note("post_entry", {"account": account, "amount": amount})
        return f"posted {amount:g} to {account}"

    @ledger.tool()
    def halt() -> str:
        """Stop the server process at once (an HTTP server that dies mid-call)."""
        os._exit(3)

    uvicorn.run(ledger.streamable_http_app(host="0.0.0.0"), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["ledger"]:
        serve_ledger(int(sys.argv[2]))
    else:
        shop.run("stdio")
