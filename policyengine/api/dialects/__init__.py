"""Client dialects: the request and answer formats other than OpenAI's chat completions.

Each module translates one dialect at the edge, to and from the one internal shape the
gateway speaks (an OpenAI chat request in; a `Completion` or a `ChatStream` of OpenAI chunks
out), so that every dialect goes through the same policy path: routing, failover, standing
orders, tool-call decisions, holds and the decision log. The gateway never learns which
dialect a request came in.

- `anthropic`: Anthropic's Messages API (`POST /v1/messages`), its SSE events and error shape;
- `responses`: OpenAI's Responses API, the stateless subset (`POST /v1/responses`);
- `embeddings`: OpenAI's embeddings request and answer (`POST /v1/embeddings`).

A module here is pure (no I/O): it validates, translates and encodes; the route modules in
`policyengine/api/routes/` do the HTTP.
"""

from __future__ import annotations

__all__: list[str] = []


class DialectError(ValueError):
    """A request the dialect cannot translate: `param` names the field, `message` says why (a 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param
