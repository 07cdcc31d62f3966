"""A local stand-in for the reviewers' channel: receives the service's webhook notifications.

The demo's policy notifies `webhook "reviewers"`; the service signs every body
(`X-PolicyEngine-Signature`), and the inbox checks the signature before it
accepts a notification. The review link a human would click is read from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from policyengine.approvals.signing import SIGNATURE_HEADER, SignatureError, verify_body

from .procs import LOOPBACK


class Inbox:
    def __init__(self, *, port: int, secret: str | None) -> None:
        self.port = port
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.secret:
            try:
                verify_body(body, request.headers.get(SIGNATURE_HEADER), self.secret)
            except SignatureError as exc:
                self.rejected.append(str(exc))
                return web.json_response({"error": str(exc)}, status=401)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.json_response({"error": "not JSON"}, status=400)
        async with self._changed:
            self.received.append({"at": time.time(), "payload": payload,
                                  "idempotency_key": request.headers.get("Idempotency-Key")})
            self._changed.notify_all()
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first notification payload for which `match` is true (waits up to `timeout` s)."""
        async def found() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for item in self.received:
                        if match(item["payload"]):
                            return item["payload"]
                    await self._changed.wait()

        return await asyncio.wait_for(found(), timeout)
