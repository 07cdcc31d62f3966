"""The dry-run report: what a candidate policy would have decided differently."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

ChangeKind = Literal["effect", "chain", "tags", "approval", "limits"]


class PolicyRef(BaseModel):
    name: str = ""
    version: int | str | None = None
    hash: str = ""
    files: list[str] = Field(default_factory=list)


class Example(BaseModel):
    id: str
    ts: float | None = None
    tenant: str | None = None
    action: str
    request: dict[str, Any]  # the logged action (signals listed separately)
    signals: dict[str, Any]
    old: str
    new: str
    causes: list[str]


class CauseCount(BaseModel):
    rule: str  # "+ <source> (file:line)" now fires, "- <source> (file:line)" no longer fires
    count: int


class ChangeGroup(BaseModel):
    kind: ChangeKind
    old: str
    new: str
    count: int
    causes: list[CauseCount] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)


class Transition(BaseModel):
    old: str
    new: str
    count: int


class ReplayIssue(BaseModel):
    id: str
    message: str


class DryRunReport(BaseModel):
    policy: PolicyRef
    baseline: PolicyRef | None = None  # None: compared against the decisions as logged
    source: str
    since: str | None = None
    total: int = 0  # records read
    replayed: int = 0  # evaluated without error
    compared: int = 0  # replayed records that had something to compare with
    changed: int = 0
    changed_share: float = 0.0  # changed / compared
    by_kind: dict[str, int] = Field(default_factory=dict)
    by_effect: list[Transition] = Field(default_factory=list)  # every old -> new pair, incl. unchanged
    chain_changes: list[Transition] = Field(default_factory=list)
    groups: list[ChangeGroup] = Field(default_factory=list)
    new_effects: dict[str, int] = Field(default_factory=dict)  # effect under the candidate, all replayed
    other_policy: int = 0  # records logged under another policy name: skipped
    unrecorded: int = 0  # records without a logged decision (no baseline): not compared
    redacted: int = 0  # records with redacted fields (conditions on them cannot replay exactly)
    signals_computed: int = 0  # records where the candidate needed a signal the log did not record
    signals_computed_names: dict[str, int] = Field(default_factory=dict)
    logged_policy_hashes: dict[str, int] = Field(default_factory=dict)
    errors: int = 0
    error_examples: list[ReplayIssue] = Field(default_factory=list)
    unique_inputs: int = 0  # distinct inputs evaluated (see `grouping`)
    rematched_lexicons: list[str] = Field(default_factory=list)  # recorded mention results dropped, text re-matched
    grouping: str = "exact"  # "projected": inputs the policies cannot tell apart share one evaluation
    elapsed_s: float = 0.0
    rate_per_s: float = 0.0  # decisions per wall-clock second
    cpu_s: float = 0.0  # CPU seconds spent replaying (all workers)
    peak_rss_mb: float | None = None  # peak resident memory of the replaying process
    fail_reasons: list[str] = Field(default_factory=list)
    # `shadow` rules of the candidate: how many replayed decisions each fired on (never enforced), and
    # the candidate's effect -> the effect with them enforced, over the decisions where one fired
    shadow_rules: list[CauseCount] = Field(default_factory=list)
    shadow_effects: list[Transition] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.fail_reasons)
