"""Dry-run replay: logged decisions through a candidate policy, and what it would decide differently.

`engine.replay` (one process) and `parallel.replay_parallel` produce a `report.DryRunReport`
from a source in `sources` (JSON lines or the store's table), parsing records with `records`
and grouping equivalent inputs with `projection`. The package re-exports nothing: the
supported entry points are re-exported by `policyengine.ci`.
"""

__all__: list[str] = []
