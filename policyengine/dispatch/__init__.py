"""Model dispatch: run a Decision's model chain through provider adapters.

`ChainDispatcher(models, state, *, settings=None, classifier_rules=None, environ=None)` walks
a routing chain (sticky model first when the session is pinned, self-hosted first when the
policy prefers it), skipping models that are cooling down, whose breaker is open, or whose
context window is too small. Each upstream error is classified into one of three classes:

* retry: transient (rate limit, overload): the same model and key again after a bounded
  backoff, then a cooldown and the next key or model;
* failover: this key (credentials, quota) or this model (crash, timeout, context window) will
  not answer: the next key or the next model, at once;
* fatal: the request itself is refused (invalid, content policy): stop, try no other model.

`await complete(...)` returns a `DispatchResult`: the OpenAI chat.completion, the policy
model and key id that answered, usage, latency and every `Attempt` (calls and skips, in
order). When no model answered it raises `DispatchError`, which carries the error class of
the last failure, its reason, status, body, model and message, `retry_after` when known, and
the same attempts. `stream(...)` returns a `DispatchStream` of chat.completion chunks with the
same failover before its first token, continuation on another model after a break, and a
`DispatchResult` at its end. State (cooldowns, breakers, pins) is fail-open: a failing state
store never fails a request.
"""

from __future__ import annotations

from policyengine.adapters.classify import ClassifierRule

from .dispatcher import ChainDispatcher
from .results import Attempt, DispatchError, DispatchResult, ErrorClass
from .settings import DispatchSettings
from .stream import DispatchStream
from .tokens import estimate_prompt_tokens

__all__ = [
    "Attempt",
    "ChainDispatcher",
    "ClassifierRule",
    "DispatchError",
    "DispatchResult",
    "DispatchSettings",
    "DispatchStream",
    "ErrorClass",
    "estimate_prompt_tokens",
]
