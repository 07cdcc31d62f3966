"""The HTTP service: routes, the hot path and error mapping over `policyengine.gateway`.

`create_app(settings)` builds the FastAPI application; `require_principal(*roles)` is the
dependency every route authenticates with. Everything a request does beyond translating
HTTP is in the gateway.
"""

from policyengine.api.app import create_app
from policyengine.api.http import require_principal
from policyengine.types import Principal

__all__ = ["Principal", "create_app", "require_principal"]
