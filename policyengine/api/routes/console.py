"""The web console's pages under `/console` (see `policyengine.console`): included here so the
app's route discovery serves them beside the API."""

from policyengine.console import router

__all__ = ["router"]
