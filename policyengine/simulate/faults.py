"""What a simulated upstream can be told to do wrong, and the error bodies real servers send."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Flavour = Literal["vllm", "ollama", "tgi", "lmstudio", "openai"]

FaultKind = Literal[
    "rate_limit",  # 429; Retry-After as seconds, HTTP date, retry-after-ms, or none
    "error",  # any status with the flavour's realistic body (e.g. a 500 once)
    "unavailable",  # 503 overloaded / engine starting
    "reset",  # TCP reset before any response header
    "hang",  # accept the request, never answer (for `delay` seconds, default forever)
    "slow_first_token",  # wait `delay` seconds before the first token (or the whole response)
    "stream_cut",  # send `after_chunks` content chunks, then drop the connection
    "stall",  # send `after_chunks` chunks, then go silent for `delay` seconds (default forever)
    "malformed",  # send `after_chunks` chunks, then a line that is not JSON
    "no_done",  # finish the answer but never send `data: [DONE]` (hold=True keeps the socket open)
    "stream_error",  # send `after_chunks` chunks, then an error event inside the stream
    "context_exceeded",  # the flavour's real context-length error
    "content_filter",  # Azure OpenAI-style content management rejection
    "expired_key",  # 401 as if the key had expired
    "quota_exhausted",  # 429 insufficient_quota (retrying never helps)
]


class Fault(BaseModel):
    """One scripted misbehaviour. `times=None` keeps it until cleared."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    times: int | None = Field(1, ge=1)
    status: int | None = Field(None, ge=100, le=599)
    retry_after: float | None = Field(None, ge=0)  # seconds, sent as `Retry-After`
    retry_after_ms: float | None = Field(None, ge=0)  # sent as `retry-after-ms`
    retry_after_http_date: bool = False  # send Retry-After as an HTTP date instead of seconds
    delay: float | None = Field(None, ge=0)
    after_chunks: int = Field(2, ge=0)
    hold: bool = False
    body: Any = None  # override the error body (dict -> JSON, str -> text)
    only_stream: bool | None = None  # apply only to streaming (True) or plain (False) requests


def error_body(flavour: Flavour, kind: str, *, model: str, status: int | None = None,
               context: int = 4096, prompt_tokens: int = 0, max_tokens: int = 0) -> tuple[int, Any]:
    """(status, body) the way each server really reports `kind`."""
    requested = prompt_tokens + max_tokens
    if kind == "context_exceeded":
        if flavour == "vllm":
            return 400, {"object": "error", "message": (
                f"This model's maximum context length is {context} tokens. However, you requested {requested} "
                f"tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the "
                "length of the messages or completion."), "type": "BadRequestError", "param": None, "code": 400}
        if flavour == "tgi":
            return 422, {"error": (f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {context}. "
                                   f"Given: {prompt_tokens} `inputs` tokens and {max_tokens} `max_new_tokens`"),
                         "error_type": "validation"}
        if flavour == "lmstudio":
            return 400, {"error": (f"Trying to keep the first {prompt_tokens} tokens when context the overflows. "
                                   f"However, the model is loaded with context length of only {context} tokens, "
                                   "which is not enough. Try to load the model with a larger context length, or "
                                   "provide a shorter input")}
        if flavour == "ollama":
            return 400, {"error": {"message": f"the input length exceeds the context length ({prompt_tokens} > {context})",
                                   "type": "invalid_request_error", "param": None, "code": None}}
        return 400, {"error": {"message": (
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{requested} tokens. Please reduce the length of the messages."),
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
    if kind == "content_filter":
        return 400, {"error": {"message": (
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
            "Please modify your prompt and retry. To learn more about our content filtering policies please read "
            "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"),
            "type": None, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": False, "severity": "safe"}, "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": False, "severity": "safe"}, "violence": {"filtered": True, "severity": "high"}}}}}
    if kind in ("expired_key", "bad_key"):
        if flavour == "vllm":
            return 401, {"error": "Unauthorized"}
        if flavour in ("tgi", "ollama"):
            return 401, {"error": "Unauthorized", "error_type": "authentication"} if flavour == "tgi" else {"error": "unauthorized"}
        return 401, {"error": {"message": "Incorrect API key provided: sk-****. You can find your API key at "
                                          "https://platform.openai.com/account/api-keys.",
                               "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    if kind == "quota_exhausted":
        return 429, {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                                          "details. For more information on this error, read the docs: "
                                          "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                               "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    if kind == "rate_limit":
        if flavour == "tgi":
            return 429, {"error": "Model is overloaded", "error_type": "overloaded"}
        return 429, {"error": {"message": f"Rate limit reached for {model} on requests per min (RPM): Limit 60, "
                                          "Used 60, Requested 1.", "type": "requests", "param": None,
                               "code": "rate_limit_exceeded"}}
    if kind == "unavailable":
        if flavour == "ollama":
            return 503, {"error": {"message": "server busy, please try again.  maximum pending requests exceeded",
                                   "type": "api_error", "param": None, "code": None}}
        if flavour == "tgi":
            return 503, {"error": "Model is overloaded", "error_type": "overloaded"}
        return 503, {"error": {"message": "The server is overloaded or not ready yet.", "type": "server_error",
                               "param": None, "code": None}}
    if kind == "model_not_found":
        if flavour == "lmstudio":
            return 404, {"error": {"message": "No models loaded. Please load a model in the developer page or use "
                                              "the `lms load` command.", "type": "invalid_request_error",
                                   "param": "model", "code": "model_not_found"}}
        if flavour == "ollama":
            return 404, {"error": {"message": f'model "{model}" not found, try pulling it first', "type": "api_error",
                                   "param": None, "code": None}}
        return 404, {"object": "error", "message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                     "param": None, "code": 404}
    # generic server error ("error" kind)
    st = status or 500
    if flavour == "vllm":
        return st, {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                              "type": "InternalServerError", "param": None, "code": st}}
    if flavour == "ollama":
        return st, {"error": {"message": "llama runner process has terminated: signal: killed", "type": "api_error",
                              "param": None, "code": None}}
    if flavour == "tgi":
        return st, {"error": "Request failed during generation: Server error: CUDA out of memory. Tried to allocate "
                             "2.00 GiB", "error_type": "generation"}
    if flavour == "lmstudio":
        return st, {"error": "Model has crashed without additional information. (Exit code: null)"}
    return st, {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                          "type": "server_error", "param": None, "code": None}}
