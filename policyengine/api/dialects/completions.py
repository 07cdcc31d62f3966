"""OpenAI's legacy Completions API (`POST /v1/completions`), translated to and from chat.

The gateway routes chat requests only, so a completion's `prompt` becomes one user message
and the answer's message text becomes the completion's `text`. That is how the models behind
the gateway (instruction-tuned, served by vLLM, Ollama, TGI, LM Studio, Bedrock, Vertex) are
asked anyway; a raw prompt without the model's chat template is not something the gateway
can promise across providers, so what needs it is refused rather than silently changed:
token-id prompts, several prompts in one request, `echo`, `logprobs`, `suffix` and
`best_of` > 1 are a 400 naming the field.

Pure: validates, translates and encodes; `policyengine.api.routes.completions` does the HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from policyengine.api.dialects import DialectError

# copied to the chat request as they are (same meaning in both APIs)
_PASSTHROUGH = ("model", "max_tokens", "temperature", "top_p", "n", "stop", "presence_penalty",
                "frequency_penalty", "seed", "user", "logit_bias", "stream", "stream_options", "metadata")
_REFUSED = {
    "echo": "echo (the prompt repeated in the answer) is not supported through the gateway",
    "logprobs": "logprobs are not supported on /v1/completions through the gateway; use chat completions",
    "suffix": "suffix (insertion) is not supported through the gateway",
}
LEGACY_DEFAULT_MAX_TOKENS = 16  # the legacy API's own default when max_tokens is omitted


def _prompt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value and all(isinstance(x, int) for x in value):
        raise DialectError("token-id prompts are not supported through the gateway (models behind it use "
                           "different tokenizers); send the prompt as text", "prompt")
    if isinstance(value, list) and len(value) > 1:
        raise DialectError("one prompt per request through the gateway (each prompt is its own decision); "
                           "send one request per prompt", "prompt")
    raise DialectError("'prompt' must be a non-empty string", "prompt")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request for a completions `body`; DialectError (naming the field) for what
    cannot be sent on unchanged."""
    prompt = _prompt(body.get("prompt"))
    if not prompt:
        raise DialectError("'prompt' must be a non-empty string", "prompt")
    for key, why in _REFUSED.items():
        # logprobs=0 still asks for the sampled tokens' log-probabilities; echo/suffix only when set
        if (body.get(key) is not None) if key == "logprobs" else bool(body.get(key)):
            raise DialectError(why, key)
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise DialectError("best_of other than 1 is not supported through the gateway", "best_of")
    chat: dict[str, Any] = {k: body[k] for k in _PASSTHROUGH if k in body}
    chat.setdefault("max_tokens", LEGACY_DEFAULT_MAX_TOKENS)
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def completion_id(decision_id: str) -> str:
    """The completion's `id`: the decision's id behind OpenAI's `cmpl-` prefix."""
    return f"cmpl-{decision_id}"


def _choice(index: int, text: str, finish: Any) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def to_completion(response: dict[str, Any], *, decision_id: str, model: str | None) -> dict[str, Any]:
    """A chat completion written as a `text_completion` (choices' message text as `text`)."""
    choices = []
    for i, ch in enumerate(response.get("choices") or ()):
        msg = ch.get("message") or {}
        content = msg.get("content")
        choices.append(_choice(ch.get("index", i), content if isinstance(content, str) else "",
                               ch.get("finish_reason")))
    out: dict[str, Any] = {"id": completion_id(decision_id), "object": "text_completion",
                           "created": response.get("created") or int(time.time()),
                           "model": model or response.get("model") or "", "choices": choices}
    if response.get("usage") is not None:
        out["usage"] = response["usage"]
    if response.get("policyengine") is not None:
        out["policyengine"] = response["policyengine"]
    return out


class CompletionEvents:
    """The gateway's chat chunks written as legacy completion chunks (a `StreamEncoder`).

    Invariants: every chunk is `object: text_completion` with the stream's one `id`; a chunk's
    delta text is its choice's `text`; usage and the `policyengine` extension pass through; an
    in-band error object is sent as it is and a complete answer ends on `data: [DONE]`."""

    __slots__ = ("_created", "_id", "_model")

    def __init__(self, *, decision_id: str, model: str | None) -> None:
        self._id, self._model, self._created = completion_id(decision_id), model or "", int(time.time())

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """One `data:` event for one chat chunk (or in-band error)."""
        if "error" in obj and "choices" not in obj:
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        choices = []
        for ch in obj.get("choices") or ():
            if not isinstance(ch, dict):
                continue
            text = (ch.get("delta") or {}).get("content")
            choices.append(_choice(ch.get("index", 0), text if isinstance(text, str) else "", ch.get("finish_reason")))
        out: dict[str, Any] = {"id": self._id, "object": "text_completion", "created": self._created,
                               "model": self._model or obj.get("model") or "", "choices": choices}
        for key in ("usage", "policyengine"):
            if obj.get(key) is not None:
                out[key] = obj[key]
        return b"data: " + orjson.dumps(out) + b"\n\n"

    def done(self) -> bytes:
        """The `[DONE]` event."""
        return b"data: [DONE]\n\n"

    def comment(self, text: str) -> bytes:
        """An SSE comment (a keep-alive the client ignores)."""
        return b": " + text.replace("\n", " ").encode() + b"\n\n"
