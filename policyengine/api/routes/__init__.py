"""The service's HTTP routes, one module per area (evaluate, chat, approvals, decisions, admin...).

`policyengine.api.app.discover_routes` imports every module here whose name does not start
with `_` and includes its `router` and its `HOT_ROUTES`, so adding a route never edits this
file. The package re-exports nothing: the routes are reached over HTTP, not imported.
"""

__all__: list[str] = []
