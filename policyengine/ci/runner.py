"""`policyengine test`: run policy test files, compare, and measure rule coverage.

Test files are grouped by the policy set they test; each set is loaded once.
Coverage counts the rules of the set (routes, model choice, authorize, require
approval, deny, escalate, verify; see `policyengine.ci.rules`) that fired in at
least one test. A `verify` rule is only fully covered when tests exercised both
of its outcomes (divergence above the threshold, and within it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from policyengine.ci.expect import Mismatch, compare, hit_label, obligation_label
from policyengine.ci.paths import display_path
from policyengine.ci.rules import parse_sources, rules_of
from policyengine.ci.spec import PolicyTest, SpecError, discover_test_files, load_test_file
from policyengine.ci.uncovered import uncovered_actions
from policyengine.dsl.diagnostics import Diagnostic
from policyengine.types import Decision

Status = Literal["passed", "failed", "error", "skipped"]


class CaseResult(BaseModel):
    file: str
    line: int
    name: str
    status: Status
    mismatches: list[Mismatch] = Field(default_factory=list)
    error: str | None = None
    effect: str | None = None
    chain: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    obligations: list[str] = Field(default_factory=list)
    fired: list[str] = Field(default_factory=list)


class RuleCoverage(BaseModel):
    location: str  # file:line
    kind: str
    text: str
    tests: int = 0  # how many tests fired it
    partial: str | None = None  # what is still untested about a covered rule

    @property
    def covered(self) -> bool:
        return self.tests > 0


class SetResult(BaseModel):
    policy: list[str]
    name: str | None = None
    hash: str | None = None
    test_files: list[str] = Field(default_factory=list)
    cases: list[CaseResult] = Field(default_factory=list)
    rules: list[RuleCoverage] = Field(default_factory=list)
    error: str | None = None  # the policy set did not load
    diagnostics: list[str] = Field(default_factory=list)
    # findings about the tests themselves (W245: a case's action no rule names); they fail nothing
    warnings: list[Diagnostic] = Field(default_factory=list)

    @property
    def covered(self) -> int:
        return sum(1 for r in self.rules if r.covered)


class FileError(BaseModel):
    file: str
    line: int | None
    message: str


class PolicyTestReport(BaseModel):
    target: str
    sets: list[SetResult] = Field(default_factory=list)
    file_errors: list[FileError] = Field(default_factory=list)
    min_coverage: float | None = None

    def count(self, status: Status) -> int:
        return sum(1 for s in self.sets for c in s.cases if c.status == status)

    @property
    def total_rules(self) -> int:
        return sum(len(s.rules) for s in self.sets)

    @property
    def covered_rules(self) -> int:
        return sum(s.covered for s in self.sets)

    @property
    def coverage(self) -> float:
        """Percent of rules fired by at least one test (100 when there are no rules)."""
        return 100.0 * self.covered_rules / self.total_rules if self.total_rules else 100.0

    @property
    def coverage_ok(self) -> bool:
        return self.min_coverage is None or self.coverage + 1e-9 >= self.min_coverage

    @property
    def ok(self) -> bool:
        return (not self.file_errors and all(s.error is None for s in self.sets)
                and self.count("failed") == 0 and self.count("error") == 0 and self.coverage_ok)

    def summary(self) -> dict[str, Any]:
        return {"passed": self.count("passed"), "failed": self.count("failed"), "errors": self.count("error"),
                "skipped": self.count("skipped"), "rules": self.total_rules, "covered": self.covered_rules,
                "coverage": round(self.coverage, 2), "min_coverage": self.min_coverage,
                "coverage_ok": self.coverage_ok, "ok": self.ok}


def _load(paths: Sequence[str]) -> Any:
    from policyengine.dsl import load_policy_set

    return load_policy_set(list(paths))


def _run_case(policy: Any, file: str, case: PolicyTest, provider: Any) -> tuple[CaseResult, Decision | None]:
    base = CaseResult(file=file, line=case.line, name=case.name, status="passed")
    if case.skip:
        base.status = "skipped"
        base.error = case.skip if isinstance(case.skip, str) else None
        return base, None
    try:
        if case.usage:
            usage = {}
            for ref, value in case.usage.items():
                lm = policy.find_limit(ref)
                if lm is None:
                    base.status, base.error = "error", (f"usage: no single limit matches {ref!r} (give its rule id, "
                                                        "line, or text of its source)")
                    return base, None
                usage[lm.rule_id] = value
            d = policy.evaluate_with_usage(case.given, usage, provider)
        else:
            d = policy.evaluate(case.given, provider)
    except Exception as exc:
        base.status, base.error = "error", f"evaluation raised {type(exc).__name__}: {exc}"
        return base, None
    base.mismatches = compare(case.expect, d)
    base.status = "failed" if base.mismatches else "passed"
    base.effect, base.chain, base.tags = d.effect, list(d.routing.chain), list(d.tags)
    base.obligations = [obligation_label(o) for o in d.obligations]
    base.fired = [hit_label(h) for h in d.rules]
    return base, d


def run_case(policy: Any, file: str, case: PolicyTest, provider: Any = None) -> tuple[CaseResult, Decision | None]:
    """Run one case of test file `file` against a compiled policy (skipped, errored, passed or
    failed, with its mismatches), and the decision it got (None when skipped or errored)."""
    return _run_case(policy, file, case, provider)


def run_tests(target: str | Path, *, min_coverage: float | None = None, signal_provider: Any = None,
              match: str | None = None) -> PolicyTestReport:
    """Discover and run every test file for `target` (folder, .policy file or test file).

    `match`: run only tests whose name contains it (case-insensitive); coverage then
    counts only what those tests exercised.
    """
    report = PolicyTestReport(target=str(target), min_coverage=min_coverage)
    groups: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for path in discover_test_files(target):
        try:
            tf = load_test_file(path)
        except SpecError as exc:
            report.file_errors.append(FileError(file=exc.file, line=exc.line, message=exc.message))
            continue
        groups[tuple(tf.policy)].append(tf)
    for policy_paths, files in groups.items():
        sr = SetResult(policy=[display_path(p) for p in policy_paths], test_files=[f.path for f in files])
        report.sets.append(sr)
        try:
            policy = _load(policy_paths)
        except Exception as exc:
            diags = getattr(exc, "diagnostics", None)
            sr.error = f"policy set did not load: {type(exc).__name__}"
            sr.diagnostics = [d.format() for d in diags] if diags else [str(exc)]
            continue
        sr.name, sr.hash = policy.name, policy.hash
        parsed = parse_sources(policy.sources)
        rules = rules_of(parsed)
        sr.warnings = uncovered_actions(parsed, files)
        by_loc = {(r.file, r.line): RuleCoverage(location=f"{display_path(r.file)}:{r.line}", kind=r.kind, text=r.text)
                  for r in rules}
        verify_outcomes: dict[tuple[str, int], set[str]] = defaultdict(set)
        for tf in files:
            for case in tf.tests:
                if match and match.lower() not in case.name.lower():
                    continue
                res, d = _run_case(policy, tf.path, case, signal_provider)
                sr.cases.append(res)
                if d is None:
                    continue
                seen: set[tuple[str, int]] = set()
                for h in (*d.rules, *d.shadow):  # a shadow rule is covered by the tests that fire it
                    if h.span is None:
                        continue
                    loc = (h.span.file, h.span.line)
                    if loc in by_loc and loc not in seen:
                        seen.add(loc)
                        by_loc[loc].tests += 1
                    if h.kind == "verify" and "divergence" in case.given.signals:
                        verify_outcomes[loc].add("escalate" if h.effect == "escalate" else "aligned")
        for loc, cov in by_loc.items():
            if cov.kind == "verify" and cov.covered:
                missing = {"escalate", "aligned"} - verify_outcomes.get(loc, set())
                if missing:
                    what = {"escalate": "divergence above the threshold", "aligned": "divergence within the threshold"}
                    cov.partial = "no test with " + " or ".join(what[m] for m in sorted(missing))
        sr.rules = list(by_loc.values())
    return report
