"""Real servers on loopback for the end-to-end approval tests.

* `Recorder`: an HTTP server recording every request (app callbacks, Slack Web API,
  Slack response_url, Teams / webhooks), answering like the real thing.
* `SmtpSink`: aiosmtpd on 127.0.0.1 collecting the messages it receives.
* `AppServer`: the real policyengine app under uvicorn in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers.net import free_port


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """Records requests; Slack Web API methods answer `{"ok": true, "channel", "ts"}` (each ts in `slack_ts`)."""

    requests: list[Recorded] = field(default_factory=list)
    slack_ts: list[str] = field(default_factory=list)
    status: int = 200
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Recorder:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                rec.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path.startswith("/api/chat."):
                    ts = f"{time.time():.6f}"
                    if self.path.startswith("/api/chat.postMessage"):
                        rec.slack_ts.append(ts)
                    out = json.dumps({"ok": True, "channel": "C0REFUNDS", "ts": ts}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                else:
                    out = b"ok"
                    self.send_response(rec.status)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def on(self, prefix: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.path.startswith(prefix)]


class SmtpSink:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def parts(msg: Message) -> dict[str, str]:
    out = {}
    for p in msg.walk():
        if p.get_content_maintype() == "text":
            out[p.get_content_subtype()] = p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8")
    return out


def review_link(msg: Message) -> str:
    m = re.search(r"(https?://\S+/review/\S+)", parts(msg)["plain"])
    assert m, "no review link in the email"
    return m.group(1)


class AppServer:
    """The real app (create_app) served by uvicorn on a free port, in a background thread."""

    def __init__(self, settings: Any) -> None:
        import uvicorn

        from policyengine.api.app import create_app

        self.app = create_app(settings)
        self.port = settings.port
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def __enter__(self) -> AppServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 60, "the app to start")
        if not self.server.started:
            raise RuntimeError("the app did not start (see the log above)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@contextlib.contextmanager
def recorder() -> Iterator[Recorder]:
    r = Recorder().start()
    try:
        yield r
    finally:
        r.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
