"""The web console: decisions, approvals, the fleet, charts; served by the service under `/console`.

A transport beside `policyengine.api`: server-rendered pages (Jinja2 templates in
`templates/`), readable without JavaScript, charts drawn on the server as SVG by pygal.
Reviewers and admins log in with their API key; the key is exchanged for a signed session
cookie (HttpOnly, SameSite=Strict, Secure over https) naming the key id, never the key, and
checked against the key store on every request (a revoked key ends its sessions). Every
POST form carries the session's CSRF token. Every query is scoped to the session's tenant.
Reviewers decide approvals through `policyengine.approvals.service.ApprovalService.decide`,
the same rules as the API and the signed links: no self-approval, tenant and group scope,
an edited action evaluated again.

`router` is the FastAPI router; `policyengine.api.routes.console` includes it.
"""

from policyengine.console.routes import router

__all__ = ["router"]
