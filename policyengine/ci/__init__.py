"""Policies in CI: policy tests with rule coverage, dry-run replay of logged decisions, static diff.

    from policyengine.ci import run_tests, replay, DatabaseSource, diff_sets, read_sources

    report = run_tests("policies/support-desk", min_coverage=90)        # PolicyTestReport
    report = replay(load_policy_set(["policies/new"]), DatabaseSource("sqlite:///decisions.db"))
    report = diff_sets("old", read_sources("origin/main:policies"), "new", read_sources("policies"))

The CLI commands (`policyengine test | dry-run | diff`) live in `policyengine.cli.ci_cmds`.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run_tests": "policyengine.ci.runner",
    "PolicyTestReport": "policyengine.ci.runner",
    "load_test_file": "policyengine.ci.spec",
    "SpecError": "policyengine.ci.spec",
    "replay": "policyengine.ci.replay.engine",
    "apply_thresholds": "policyengine.ci.replay.engine",
    "replay_parallel": "policyengine.ci.replay.parallel",
    "DryRunReport": "policyengine.ci.replay.report",
    "JsonlSource": "policyengine.ci.replay.sources",
    "DatabaseSource": "policyengine.ci.replay.sources",
    "diff_sets": "policyengine.ci.diff",
    "DiffReport": "policyengine.ci.diff",
    "read_sources": "policyengine.ci.sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: importing one tool does not import the others
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'policyengine.ci' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
