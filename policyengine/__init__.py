"""policyengine: a control layer for fleets of language models, driven by `.policy` files.

The public surfaces, by who uses them:

- `policyengine.client`: applications and agents talking to the service
  (`PolicyEngineClient`: evaluate, wait for approvals, guard tool functions; `verify_callback`).
- `policyengine.dsl`: the policy language: `load_policy_set` (parse, check, compile),
  `check` (lint), `compile_sources`, `format_source`.
- `policyengine.evaluator`: `CompiledPolicy`, a loaded policy set;
  `CompiledPolicy.evaluate(action) -> Decision` embeds the engine in-process.
- `policyengine.gateway`: for transports: authenticate, open a call, decide / chat / hold.
- `policyengine.types`: the vocabulary every layer shares (`Action`, `Decision`, `Principal`,
  `ModelSpec`...).
- `policyengine.errors`: `PolicyEngineError`, the root of every deliberate failure, with a
  stable `code`.

The names below are re-exported here for convenience. They are loaded on first access, so
`import policyengine` (and importing any submodule, which runs this file first) imports
nothing else; `load_policy_set` and `CompiledPolicy` bring in the policy language (lark), never
the service stack (FastAPI, SQLAlchemy) or the embedding stack (torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policyengine.dsl import load_policy_set
    from policyengine.errors import PolicyEngineError
    from policyengine.evaluator import CompiledPolicy
    from policyengine.types import Action, Decision, Principal

_EXPORTS = {
    "Action": "policyengine.types",
    "Decision": "policyengine.types",
    "Principal": "policyengine.types",
    "PolicyEngineError": "policyengine.errors",
    "CompiledPolicy": "policyengine.evaluator",
    "load_policy_set": "policyengine.dsl",
}

__all__ = ["Action", "CompiledPolicy", "Decision", "PolicyEngineError", "Principal", "load_policy_set"]


def __getattr__(name: str) -> Any:  # lazy: `import policyengine.errors` must not pay for pydantic or lark
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'policyengine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
