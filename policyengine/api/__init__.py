"""The FastAPI service: evaluate, the OpenAI-compatible gateway, decisions, admin, health."""

from policyengine.api.app import create_app
from policyengine.api.auth import Principal, require_principal
from policyengine.api.context import STARTUP_HOOKS, Services

__all__ = ["STARTUP_HOOKS", "Principal", "Services", "create_app", "require_principal"]
