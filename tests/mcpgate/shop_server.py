"""The MCP servers behind the gateway in the tests, written with the official SDK (`MCPServer`).

`python shop_server.py` serves the shop (lookup_order, refund, pack_order, delete_account, crash) on stdio;
`mail_app()` is the mail server (send_email) as an ASGI app for streamable HTTP. Every call a
server runs is appended to the file named by `SHOP_CALLS` (one JSON line), so a test can see
what reached it.
"""

from __future__ import annotations

import json
import os

from mcp.server import MCPServer
from mcp.server.mcpserver import Context


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

    return mail.streamable_http_app(host="0.0.0.0")


if __name__ == "__main__":
    shop.run("stdio")
