"""classify_error against realistic bodies from every server the dispatcher meets.

The bodies are written the way each server actually sends them (status, headers,
envelope, message wording); status codes alone would misclassify many of them.
"""

from __future__ import annotations

import email.utils
import time
from types import SimpleNamespace

import orjson
import pytest
from policyengine.adapters import ClassifierRule, classify_error, load_rules, parse_retry_after

AMZ = "x-amzn-ErrorType"

CASES = [
    # ---------------- vLLM ----------------
    ("vllm-context-flat", "vllm", 400, {}, {
        "object": "error", "message": "This model's maximum context length is 32768 tokens. However, you requested "
        "40960 tokens (36864 in the messages, 4096 in the completion). Please reduce the length of the messages or "
        "completion.", "type": "BadRequestError", "param": None, "code": 400}, "failover", "context_length_exceeded"),
    ("vllm-context-nested", "vllm", 400, {}, {"error": {
        "message": "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length "
        "is 8192 tokens and your request has 5000 input tokens (4096 > 8192 - 5000).", "type": "BadRequestError",
        "param": None, "code": 400}}, "failover", "context_length_exceeded"),
    ("vllm-bad-request", "vllm", 400, {}, {"error": {"message": "temperature must be non-negative, got -1.",
        "type": "BadRequestError", "param": None, "code": 400}}, "fatal", "invalid_request"),
    ("vllm-not-found", "vllm", 404, {}, {"object": "error", "message": "The model `qwen-7b` does not exist.",
        "type": "NotFoundError", "param": None, "code": 404}, "failover", "model_not_found"),
    ("vllm-unauthorized", "vllm", 401, {}, {"error": "Unauthorized"}, "failover", "auth_invalid"),
    ("vllm-engine-dead", "vllm", 500, {}, {"error": {"message": "EngineCore encountered an issue. See stack trace "
        "(above) for the root cause.", "type": "InternalServerError", "param": None, "code": 500}},
        "failover", "engine_crashed"),
    ("vllm-sse-error", "vllm", 400, {}, b'data: {"error": {"object": "error", "message": "This model\'s maximum '
        b'context length is 4096 tokens. However, you requested 5000 tokens.", "type": "BadRequestError", '
        b'"param": null, "code": 400}}', "failover", "context_length_exceeded"),
    ("vllm-sse-internal", "vllm", 500, {}, 'data: {"object":"error","message":"Background loop has errored '
        'already.","type":"InternalServerError","param":null,"code":500}', "failover", "engine_crashed"),
    # ---------------- Ollama ----------------
    ("ollama-not-found", "ollama", 404, {}, {"error": {"message": 'model "llama3.1:70b" not found, try pulling it '
        'first', "type": "api_error", "param": None, "code": None}}, "failover", "model_not_found"),
    ("ollama-native-not-found", "ollama", 404, {}, {"error": 'model "gemma2" not found, try pulling it first'},
        "failover", "model_not_found"),
    ("ollama-oom", "ollama", 500, {}, {"error": {"message": "llama runner process has terminated: signal: killed",
        "type": "api_error", "param": None, "code": None}}, "failover", "engine_crashed"),
    ("ollama-busy", "ollama", 503, {}, {"error": "server busy, please try again.  maximum pending requests "
        "exceeded"}, "retry", "overloaded"),
    ("ollama-cuda-oom", "ollama", 500, {}, {"error": "model requires more system memory (9.6 GiB) than is "
        "available (4.1 GiB)"}, "failover", "server_error"),
    # ---------------- TGI ----------------
    ("tgi-422-tokens", "tgi", 422, {}, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must "
        "be <= 4096. Given: 3900 `inputs` tokens and 512 `max_new_tokens`", "error_type": "validation"},
        "failover", "context_length_exceeded"),
    ("tgi-422-inputs", "tgi", 422, {}, {"error": "Input validation error: `inputs` must have less than 8000 "
        "tokens. Given: 9123", "error_type": "validation"}, "failover", "context_length_exceeded"),
    ("tgi-422-validation", "tgi", 422, {}, {"error": "Input validation error: `temperature` must be strictly "
        "positive", "error_type": "validation"}, "fatal", "invalid_request"),
    ("tgi-429-overloaded", "tgi", 429, {}, {"error": "Model is overloaded", "error_type": "overloaded"},
        "retry", "overloaded"),
    ("tgi-424-generation", "tgi", 424, {}, {"error": "Request failed during generation: Server error: CUDA out "
        "of memory. Tried to allocate 2.00 GiB", "error_type": "generation"}, "failover", "engine_crashed"),
    # ---------------- transformers serve (5.2x: a prompt-length check, FastAPI's {"detail": ...}) ----------------
    ("transformers-serve-context", "openai", 400, {}, {"detail": "The prompt has 177 tokens, but the model takes at "
        "most 64, prompt and answer (`--max-model-len`)."}, "failover", "context_length_exceeded"),
    # ---------------- LM Studio ----------------
    ("lmstudio-overflow", "lmstudio", 400, {}, {"error": "Trying to keep the first 5210 tokens when context the "
        "overflows. However, the model is loaded with context length of only 4096 tokens, which is not enough. "
        "Try to load the model with a larger context length, or provide a shorter input"},
        "failover", "context_length_exceeded"),
    ("lmstudio-no-model", "lmstudio", 404, {}, {"error": {"message": "No models loaded. Please load a model in the "
        "developer page or use the `lms load` command.", "type": "invalid_request_error", "param": "model",
        "code": "model_not_found"}}, "failover", "model_not_loaded"),
    ("lmstudio-crash", "lmstudio", 500, {}, {"error": "Model has crashed without additional information. (Exit "
        "code: null)"}, "failover", "engine_crashed"),  # a crash marker: no retry on the same model
    # ---------------- OpenAI ----------------
    ("openai-rate-limit", "openai", 429, {"retry-after": "2"}, {"error": {"message": "Rate limit reached for gpt-4o "
        "in organization org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 1200. Please try again "
        "in 2.4s. Visit https://platform.openai.com/account/rate-limits to learn more.", "type": "tokens",
        "param": None, "code": "rate_limit_exceeded"}}, "retry", "rate_limited"),
    ("openai-insufficient-quota", "openai", 429, {}, {"error": {"message": "You exceeded your current quota, please "
        "check your plan and billing details. For more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.", "type": "insufficient_quota",
        "param": None, "code": "insufficient_quota"}}, "failover", "quota_exhausted"),
    ("openai-context", "openai", 400, {}, {"error": {"message": "This model's maximum context length is 128000 "
        "tokens. However, your messages resulted in 130412 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
        "failover", "context_length_exceeded"),
    ("openai-bad-key", "openai", 401, {}, {"error": {"message": "Incorrect API key provided: sk-proj-****abcd. You "
        "can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
        "param": None, "code": "invalid_api_key"}}, "failover", "auth_invalid"),
    ("openai-500", "openai", 500, {}, {"error": {"message": "The server had an error while processing your request. "
        "Sorry about that!", "type": "server_error", "param": None, "code": None}}, "failover", "server_error"),
    ("openai-503-overloaded", "openai", 503, {}, {"error": {"message": "The engine is currently overloaded, please "
        "try again later", "type": "server_error", "param": None, "code": None}}, "retry", "overloaded"),
    ("openai-invalid", "openai", 400, {}, {"error": {"message": "Invalid type for 'messages[0].content': expected "
        "one of a string or array of objects, but got an integer instead.", "type": "invalid_request_error",
        "param": "messages[0].content", "code": "invalid_type"}}, "fatal", "invalid_request"),
    ("openai-policy", "openai", 400, {}, {"error": {"message": "Your request was rejected as a result of our safety "
        "system. Your prompt may contain text that is not allowed by our safety system.", "type":
        "invalid_request_error", "param": None, "code": "content_policy_violation"}}, "fatal", "content_filter"),
    # ---------------- Azure OpenAI ----------------
    ("azure-content-filter", "openai", 400, {}, {"error": {"message": "The response was filtered due to the prompt "
        "triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more "
        "about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?"
        "linkid=2198766", "type": None, "param": "prompt", "code": "content_filter", "status": 400, "innererror": {
        "code": "ResponsibleAIPolicyViolation", "content_filter_result": {"hate": {"filtered": False, "severity":
        "safe"}, "violence": {"filtered": True, "severity": "medium"}}}}}, "fatal", "content_filter"),
    ("azure-429", "openai", 429, {"retry-after": "6"}, {"error": {"code": "429", "message": "Requests to the "
        "ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit "
        "of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}},
        "retry", "rate_limited"),
    ("azure-401", "openai", 401, {}, {"error": {"code": "401", "message": "Access denied due to invalid subscription "
        "key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct "
        "regional API endpoint for your resource."}}, "failover", "auth_invalid"),
    # ---------------- Anthropic ----------------
    ("anthropic-529", "anthropic", 529, {}, {"type": "error", "error": {"type": "overloaded_error", "message":
        "Overloaded"}}, "retry", "overloaded"),
    ("anthropic-credit", "anthropic", 400, {}, {"type": "error", "error": {"type": "invalid_request_error",
        "message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
        "upgrade or purchase credits."}}, "failover", "quota_exhausted"),
    ("anthropic-rate", "anthropic", 429, {"retry-after": "17"}, {"type": "error", "error": {"type":
        "rate_limit_error", "message": "This request would exceed the rate limit for your organization of 50 "
        "requests per minute."}}, "retry", "rate_limited"),
    ("anthropic-auth", "anthropic", 401, {}, {"type": "error", "error": {"type": "authentication_error",
        "message": "invalid x-api-key"}}, "failover", "auth_invalid"),
    ("anthropic-too-long", "anthropic", 400, {}, {"type": "error", "error": {"type": "invalid_request_error",
        "message": "prompt is too long: 215000 tokens > 200000 maximum"}}, "failover", "context_length_exceeded"),
    # ---------------- Amazon Bedrock ----------------
    ("bedrock-throttling", "bedrock", 429, {AMZ: "ThrottlingException:http://internal.amazon.com/coral/"
        "com.amazon.bedrock/"}, {"message": "Too many requests, please wait before trying again."},
        "retry", "rate_limited"),
    ("bedrock-model-timeout", "bedrock", 408, {AMZ: "ModelTimeoutException:http://internal.amazon.com/coral/"
        "com.amazon.bedrock/"}, {"message": "Model has timed out in processing the request. Try your request "
        "again."}, "failover", "timeout"),
    ("bedrock-not-ready", "bedrock", 429, {AMZ: "ModelNotReadyException"}, {"message": "Model is not ready to serve "
        "inference requests. The AWS SDK will automatically retry the operation up to 5 times."},
        "retry", "model_not_ready"),
    ("bedrock-unavailable", "bedrock", 503, {AMZ: "ServiceUnavailableException:http://internal.amazon.com/coral/"
        "com.amazon.bedrock/"}, {"message": "Bedrock is unable to process your request."}, "retry", "overloaded"),
    ("bedrock-too-long", "bedrock", 400, {AMZ: "ValidationException:http://internal.amazon.com/coral/"
        "com.amazon.bedrock/"}, {"message": "Input is too long for requested model."},
        "failover", "context_length_exceeded"),
    ("bedrock-validation", "bedrock", 400, {AMZ: "ValidationException"}, {"message": "The model returned the "
        "following errors: Malformed input request: #/temperature: 3.0 is not less or equal to 1.0, please "
        "reformat your input and try again."}, "fatal", "invalid_request"),
    ("bedrock-expired", "bedrock", 403, {AMZ: "ExpiredTokenException:http://internal.amazon.com/coral/"
        "com.amazon.coral.service/"}, {"message": "The security token included in the request is expired"},
        "failover", "auth_expired"),
    ("bedrock-access-denied", "bedrock", 403, {AMZ: "AccessDeniedException"}, {"message": "You don't have access to "
        "the model with the specified model ID."}, "failover", "permission_denied"),
    ("bedrock-body-type", "bedrock", 403, {}, {"__type": "com.amazon.coral.service#UnrecognizedClientException",
        "message": "The security token included in the request is invalid."}, "failover", "auth_invalid"),
    ("bedrock-stream-throttling", "bedrock", None, {":exception-type": "throttlingException"}, {"message":
        "Too many tokens, please wait before trying again."}, "retry", "rate_limited"),
    ("bedrock-guardrail", "bedrock", 400, {AMZ: "ValidationException"}, {"message": "Your request was blocked by "
        "the guardrail gr-123 for content policy"}, "fatal", "content_filter"),
    # ---------------- Vertex AI / Gemini API ----------------
    ("gemini-exhausted", "vertex", 429, {}, {"error": {"code": 429, "message": "Resource has been exhausted (e.g. "
        "check quota).", "status": "RESOURCE_EXHAUSTED"}}, "retry", "rate_limited"),
    ("gemini-daily-quota", "vertex", 429, {}, {"error": {"code": 429, "message": "You exceeded your current quota, "
        "please check your plan and billing details.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type":
        "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage."
        "googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerDayPerProjectPerModel-"
        "FreeTier"}]}, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}]}},
        "failover", "quota_exhausted"),
    ("gemini-key-invalid", "vertex", 400, {}, {"error": {"code": 400, "message": "API key not valid. Please pass a "
        "valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc."
        "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service":
        "generativelanguage.googleapis.com"}}]}}, "failover", "auth_invalid"),
    ("gemini-precondition", "vertex", 400, {}, {"error": {"code": 400, "message": "User location is not supported "
        "for the API use.", "status": "FAILED_PRECONDITION"}}, "failover", "precondition_failed"),
    ("gemini-unavailable", "vertex", 503, {}, {"error": {"code": 503, "message": "The model is overloaded. Please "
        "try again later.", "status": "UNAVAILABLE"}}, "retry", "overloaded"),
    ("gemini-too-long", "vertex", 400, {}, {"error": {"code": 400, "message": "The input token count (1250000) "
        "exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}},
        "failover", "context_length_exceeded"),
    ("gemini-invalid", "vertex", 400, {}, {"error": {"code": 400, "message": "Invalid JSON payload received. "
        "Unknown name \"foo\": Cannot find field.", "status": "INVALID_ARGUMENT"}}, "fatal", "invalid_request"),
    ("vertex-list-envelope", "vertex", 403, {}, [{"error": {"code": 403, "message": "Permission "
        "'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/p/locations/"
        "us-central1/publishers/google/models/gemini-1.5-pro' (or it may not exist).", "status":
        "PERMISSION_DENIED"}}], "failover", "permission_denied"),
    ("vertex-unauthenticated", "vertex", 401, {}, {"error": {"code": 401, "message": "Request had invalid "
        "authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication "
        "credential.", "status": "UNAUTHENTICATED"}}, "failover", "auth_invalid"),
    # ---------------- no body / proxies ----------------
    ("nginx-502", None, 502, {"content-type": "text/html"}, "<html><head><title>502 Bad Gateway</title></head>"
        "<body><center><h1>502 Bad Gateway</h1></center></body></html>", "failover", "bad_gateway"),
    ("empty-504", None, 504, {}, b"", "failover", "timeout"),
]


@pytest.mark.parametrize(("name", "provider", "status", "headers", "body", "cls", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_realistic_bodies(name, provider, status, headers, body, cls, reason):
    raw = orjson.dumps(body) if isinstance(body, dict | list) else body
    got = classify_error(status, headers, raw, provider)
    assert (got.error_class, got.reason) == (cls, reason), got


def test_body_may_be_dict_str_or_bytes():
    b = {"error": {"message": "x", "code": "rate_limit_exceeded"}}
    for form in (b, orjson.dumps(b), orjson.dumps(b).decode()):
        assert classify_error(429, {}, form).reason == "rate_limited"


def test_retry_after_forms(monkeypatch):
    assert classify_error(429, {"Retry-After": "7"}, b"").retry_after == 7.0
    assert classify_error(429, {"retry-after-ms": "1500", "retry-after": "9"}, b"").retry_after == 1.5
    now = float(int(time.time()))  # a whole second: an HTTP date holds no fraction
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == 30.0
    assert parse_retry_after({"retry-after": date}, now=now + 40) == 0.0  # a date in the past: no wait
    monkeypatch.setattr("policyengine.adapters.classify.time", SimpleNamespace(time=lambda: now + 0.25))
    assert classify_error(429, {"retry-after": date}, b"").retry_after == 29.75  # measured from the clock
    monkeypatch.undo()
    gem = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}}
    assert classify_error(429, {}, gem).retry_after == 12.0
    assert parse_retry_after({"retry-after": "garbage"}) is None
    assert parse_retry_after({"retry-after": "-5"}) == 0.0


def test_user_rules_come_first_and_load_from_yaml(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("- name: gpu-pool-draining\n  status: [503]\n  message: 'draining'\n  class: failover\n"
                 "  reason: pool_draining\n")
    rules = load_rules(f)
    body = {"error": "node draining for maintenance"}
    assert classify_error(503, {}, body).reason == "overloaded"
    got = classify_error(503, {}, body, rules=rules)
    assert (got.error_class, got.reason, got.rule) == ("failover", "pool_draining", "gpu-pool-draining")
    # provider-restricted rule
    r = ClassifierRule.model_validate({"providers": ["tgi"], "status": ["4xx"], "class": "retry", "reason": "x"})
    assert classify_error(422, {}, b"", "tgi", rules=[r]).reason == "x"
    assert classify_error(422, {}, b"", "vllm", rules=[r]).reason == "invalid_request"


@pytest.mark.parametrize("bad, msg", [
    ("- {class: sometimes, reason: x}", "class"),
    ("- {class: retry, reason: x, message: '(unclosed'}", "invalid regular expression"),
    ("- {class: retry, reason: x, status: ['9xx']}", "status"),
    ("- {class: retry, reason: x, colour: red}", "colour"),
    ("just: [a, mapping", "not valid YAML"),
])
def test_bad_rules_are_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        load_rules(bad + "\n")


def test_missing_rules_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_rules(tmp_path / "nope.yaml")
