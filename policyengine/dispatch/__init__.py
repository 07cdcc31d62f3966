"""Model dispatch: execute a Decision's model chain through provider adapters.

Public surface (the contract with the API):

    Dispatcher(models, state, *, settings=None, classifier_rules=None, environ=None)
        await .complete(body, routing, *, session_id=None, prompt_tokens=None) -> DispatchResult
        .stream(body, routing, *, session_id=None, prompt_tokens=None) -> DispatchStream
        await .status() -> {"cooldowns": [...], "breakers": [...]}
        await .aclose()
    DispatchResult, Attempt, DispatchStream, DispatchError, DispatchSettings
"""

from __future__ import annotations

from policyengine.adapters.classify import ClassifierRule

from .dispatcher import Dispatcher
from .results import Attempt, DispatchError, DispatchResult
from .settings import DispatchSettings
from .stream import DispatchStream
from .tokens import estimate_prompt_tokens

__all__ = [
    "Attempt",
    "ClassifierRule",
    "DispatchError",
    "DispatchResult",
    "DispatchSettings",
    "DispatchStream",
    "Dispatcher",
    "estimate_prompt_tokens",
]
