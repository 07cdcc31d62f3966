"""The `policyengine` command.

Each module in this package registers its own commands on `app` (one job per
module: lint/fmt/eval, serve, verify-log, test, dry-run, diff, demo...). They
are imported here by discovery so that adding a command never edits this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="policyengine",
    help="Control layer for fleets of language models: routing, failover, standing orders, approvals.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_mod}")


def main() -> None:  # pragma: no cover - console entry point
    app()
