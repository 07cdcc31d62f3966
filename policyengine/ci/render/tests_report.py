"""Render a policy test report: Rich text, JSON, or GitHub workflow annotations."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from policyengine.ci.render.github import annotation
from policyengine.ci.runner import PolicyTestReport

_MARK = {"passed": ("✓", "green"), "failed": ("✗", "red"), "error": ("!", "red"), "skipped": ("-", "yellow")}


def render_text(report: PolicyTestReport, console: Console) -> None:
    for fe in report.file_errors:
        console.print(Text(f"{fe.file}:{fe.line or 1}: {fe.message}", style="red"))
    for s in report.sets:
        title = f"policy {s.name or ''} ({', '.join(s.policy)})".replace("policy  (", "policy (")
        console.print(Text(title, style="bold"))
        if s.error:
            console.print(Text(f"  {s.error}", style="red"))
            for d in s.diagnostics:
                console.print(Text("  " + d.replace("\n", "\n  ")))
            continue
        for c in s.cases:
            mark, style = _MARK[c.status]
            console.print(Text.assemble((f"  {mark} ", style), c.name, (f"  {c.file}:{c.line}", "dim")))
            if c.status == "error" and c.error:
                console.print(Text(f"      {c.error}", style="red"))
            if c.status == "skipped" and c.error:
                console.print(Text(f"      skipped: {c.error}", style="yellow"))
            if c.mismatches:
                t = Table(show_header=True, header_style="bold", box=None, padding=(0, 2), pad_edge=False)
                t.add_column("check")
                t.add_column("expected", style="green", overflow="fold")
                t.add_column("actual", style="red", overflow="fold")
                for m in c.mismatches:
                    t.add_row(m.check, m.expected, m.actual)
                console.print(t, style="", crop=False)
                if c.fired:
                    console.print(Text("      rules that fired: " + "; ".join(c.fired), style="dim"))
        for w in s.warnings:
            console.print(Text("  " + w.format().replace("\n", "\n  "), style="yellow"))
        uncovered = [r for r in s.rules if not r.covered]
        partial = [r for r in s.rules if r.covered and r.partial]
        pct = 100.0 * s.covered / len(s.rules) if s.rules else 100.0
        console.print(Text(f"  rule coverage: {s.covered}/{len(s.rules)} rules ({pct:.1f}%)", style="bold"))
        if uncovered or partial:
            t = Table(show_header=True, header_style="bold", box=None, padding=(0, 2), pad_edge=False)
            t.add_column("rule not exercised by any test", overflow="fold")
            t.add_column("kind")
            t.add_column("source", overflow="fold")
            for r in uncovered:
                t.add_row(r.location, r.kind, r.text)
            for r in partial:
                t.add_row(r.location, r.kind, f"{r.text}\n(partly: {r.partial})")
            console.print(t)
    sm = report.summary()
    line = (f"{sm['passed']} passed, {sm['failed']} failed, {sm['errors']} errors, {sm['skipped']} skipped; "
            f"coverage {sm['coverage']:.1f}% ({sm['covered']}/{sm['rules']} rules)")
    if report.min_coverage is not None:
        line += f", minimum {report.min_coverage:g}%"
    console.print(Text(line, style="green" if report.ok else "red"))
    if not report.coverage_ok:
        console.print(Text(f"coverage {report.coverage:.1f}% is below --min-coverage {report.min_coverage:g}%",
                           style="red"))


def render_json(report: PolicyTestReport) -> str:
    data = report.model_dump(mode="json")
    for s, sd in zip(report.sets, data["sets"], strict=True):
        for r, rd in zip(s.rules, sd["rules"], strict=True):
            rd["covered"] = r.covered
        sd["coverage"] = {"covered": s.covered, "rules": len(s.rules)}
    data["summary"] = report.summary()
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_github(report: PolicyTestReport) -> str:
    """Workflow commands: an error per failing test (at its line), a warning per unexercised rule."""
    out: list[str] = []
    for fe in report.file_errors:
        out.append(annotation("error", fe.message, file=fe.file, line=fe.line or 1, title="policy test file"))
    for s in report.sets:
        if s.error:
            msg = s.error + ("\n" + "\n".join(s.diagnostics) if s.diagnostics else "")
            out.append(annotation("error", msg, file=s.test_files[0] if s.test_files else None, title="policy"))
            continue
        for c in s.cases:
            if c.status == "failed":
                msg = "\n".join(f"{m.check}: expected {m.expected}, actual {m.actual}" for m in c.mismatches)
                out.append(annotation("error", msg, file=c.file, line=c.line, title=f"policy test failed: {c.name}"))
            elif c.status == "error":
                out.append(annotation("error", c.error or "error", file=c.file, line=c.line,
                                      title=f"policy test error: {c.name}"))
        for w in s.warnings:
            out.append(annotation("warning", w.message + (f" (hint: {w.hint})" if w.hint else ""), file=w.file,
                                  line=w.line, title=w.code))
        for r in s.rules:
            file, _, line = r.location.rpartition(":")
            if not r.covered:
                out.append(annotation("warning", f"no test exercises this rule: {r.text}", file=file,
                                      line=int(line), title="rule not covered"))
            elif r.partial:
                out.append(annotation("notice", f"partly covered: {r.partial}", file=file, line=int(line),
                                      title="rule partly covered"))
    sm = report.summary()
    text = (f"{sm['passed']} passed, {sm['failed']} failed, {sm['errors']} errors; "
            f"rule coverage {sm['coverage']:.1f}% ({sm['covered']}/{sm['rules']})")
    if not report.coverage_ok:
        out.append(annotation("error", f"rule coverage {report.coverage:.1f}% is below the minimum "
                                       f"{report.min_coverage:g}%", title="policy coverage"))
    out.append(text)
    return "\n".join(out)
