"""The gateway: the one layer between the transports (HTTP routes, other dialects) and the engine.

A transport authenticates the caller (a `Principal`), turns its request into an `Action`
(`make_action`), opens a `Call` (`open_call`: the policy snapshot is read once and the
policy decides), and hands the Call to one path:

- `decide(call)`: an action submitted for a decision (`/v1/evaluate`);
- `chat(call, body, stream=...)`: a model call, which refuses, holds, or goes on to
  `complete`, `stream_chat` or `verify`;
- `embed(call, body)`: an embeddings call routed to the models that serve embeddings;
- `hold(call)`: the approval of a held decision (used by the paths above).

It gets back a result (`Decided`, `Completion`, `ChatStream`) or a `GatewayError`, and
writes either in its own format. The gateway imports no transport; the transports import
nothing of the engine but this package's surface (and the types).

The commit order, the same on every path
----------------------------------------
1. **Decide.** The policy evaluates the request (`open_call`): a Decision and its id.
2. **Record.** The decision row (the action, the decision, every rule that applied) is
   queued to the group commit (`Call.record`).
3. **Call.** If the path calls models, it does so now, while the row commits.
4. **Confirm.** The row's commit is awaited. Nothing is sent, held or released before it is
   durable; if it cannot commit, the request fails with `DecisionLogUnavailable` and any
   answer obtained meanwhile is discarded unread.
5. **Decide again** (dual-model verification only). A decision that depends on the answers
   is written as the outcome row and awaited like step 4, before it is acted on.
6. **Act.** Respond, refuse, or hold (create the approval).
7. **Outcome.** What only the answer tells (the model that answered, every attempt, usage,
   finish reason) is the outcome row (`kind=chat_outcome`, `follows` = the decision's id,
   id = `outcome_id(decision_id)`), queued without waiting: it rides along with the next
   commit, or is written after `log_follow_up_delay_s`.

Paths without a model call skip steps 3, 5 and 7; a refusal is step 6.
"""

from policyengine.gateway.call import (
    HELD,
    Call,
    PendingCommit,
    make_action,
    merged_record,
    new_decision_id,
    open_call,
    outcome_id,
)
from policyengine.gateway.embed import Embedded, embed
from policyengine.gateway.errors import (
    ApprovalRequired,
    ApprovalsUnavailable,
    DecisionLogUnavailable,
    EvaluationFailed,
    GatewayError,
    InvalidAction,
    ModelNotAllowed,
    NoRoute,
    PolicyDenied,
    TenantMismatch,
    UpstreamFailed,
    VerificationFailed,
)
from policyengine.gateway.hold import hold, reasons
from policyengine.gateway.keys import KeyCache
from policyengine.gateway.paths import (
    ChatStream,
    Completion,
    Decided,
    StreamEncoder,
    attempt_dicts,
    chat,
    complete,
    decide,
    stream_chat,
    verify,
)
from policyengine.gateway.runtime import ApprovalsPort, Runtime, build_runtime

__all__ = [
    "HELD",
    "ApprovalRequired",
    "ApprovalsPort",
    "ApprovalsUnavailable",
    "Call",
    "ChatStream",
    "Completion",
    "Decided",
    "DecisionLogUnavailable",
    "Embedded",
    "EvaluationFailed",
    "GatewayError",
    "InvalidAction",
    "KeyCache",
    "ModelNotAllowed",
    "NoRoute",
    "PendingCommit",
    "PolicyDenied",
    "Runtime",
    "StreamEncoder",
    "TenantMismatch",
    "UpstreamFailed",
    "VerificationFailed",
    "attempt_dicts",
    "build_runtime",
    "chat",
    "complete",
    "decide",
    "embed",
    "hold",
    "make_action",
    "merged_record",
    "new_decision_id",
    "open_call",
    "outcome_id",
    "reasons",
    "stream_chat",
    "verify",
]
