"""What the doctor reports: findings (error / warning / ok) and the exit code they add up to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "ok"]
EXIT = {"ok": 0, "warning": 1, "error": 2}  # the exit code of a report: its worst finding


@dataclass(frozen=True)
class Finding:
    """One check's result: `code` is stable (for CI filters), `subject` names what was checked
    (a model, deployment, variable, channel or group), `where` the policy file:line when known,
    `hint` what to change. Messages never hold a secret's value."""

    severity: Severity
    code: str
    subject: str
    message: str
    hint: str | None = None
    where: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """Every finding, in the order the checks ran."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, severity: Severity, code: str, subject: str, message: str, *, hint: str | None = None,
            where: str | None = None) -> None:
        self.findings.append(Finding(severity, code, subject, message, hint, where))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 when the worst is a warning, 2 when any is an error."""
        return max((EXIT[f.severity] for f in self.findings), default=0)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings if f.severity != "ok"}
