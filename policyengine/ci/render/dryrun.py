"""Render a dry-run report: Rich text (terminal), Markdown (pull-request comment), JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from policyengine.ci.replay.report import DryRunReport, Example


def _policy_line(r: DryRunReport) -> str:
    p = r.policy
    s = f"candidate {p.name or '(unnamed)'}" + (f" v{p.version}" if p.version is not None else "")
    s += f" ({p.hash[:12]})" if p.hash else ""
    if r.baseline is not None:
        b = r.baseline
        s += f" vs baseline {b.name or '(unnamed)'}" + (f" v{b.version}" if b.version is not None else "")
        s += f" ({b.hash[:12]})" if b.hash else ""
    else:
        s += " vs the decisions as logged"
    return s


def _request_summary(e: Example) -> str:
    parts = [e.action]
    for k, v in e.request.items():
        if k == "action":
            continue
        if k == "fields" and isinstance(v, dict):
            parts += [f"{fk}={_short(fv)}" for fk, fv in v.items()]
        else:
            parts.append(f"{k}={_short(v)}")
    if e.signals:
        parts.append("signals{" + ", ".join(f"{k}={_short(v)}" for k, v in e.signals.items()) + "}")
    return " ".join(parts)


def _short(v: Any, n: int = 40) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def _notes(r: DryRunReport) -> list[str]:
    notes = []
    if r.other_policy:
        notes.append(f"{r.other_policy} record(s) were logged under another policy and skipped "
                     "(--all-policies replays them too)")
    if r.rematched_lexicons:
        notes.append("lexicon(s) " + ", ".join(r.rematched_lexicons) + " changed since the decisions were logged: "
                     "their logged mention results were dropped and the logged text matched again")
    if r.unrecorded:
        notes.append(f"{r.unrecorded} record(s) had no logged decision and were not compared (use --baseline)")
    if r.errors:
        notes.append(f"{r.errors} record(s) could not be replayed")
    if r.signals_computed:
        names = ", ".join(f"{k} ({v})" for k, v in r.signals_computed_names.items())
        notes.append(f"{r.signals_computed} record(s) needed signals the log did not record: {names}; "
                     "those decisions are not an exact replay")
    if r.redacted:
        notes.append(f"{r.redacted} record(s) have redacted fields; conditions on those fields cannot replay exactly")
    if len(r.logged_policy_hashes) > 1:
        notes.append(f"the log spans {len(r.logged_policy_hashes)} policy versions")
    return notes


def render_text(r: DryRunReport, console: Console) -> None:
    console.print(Text(_policy_line(r), style="bold"))
    console.print(f"source: {r.source}" + (f" since {r.since}" if r.since else ""))
    console.print(f"replayed {r.replayed:,} of {r.total:,} decisions in {r.elapsed_s:.2f}s "
                  f"({r.rate_per_s:,.0f}/s; {r.unique_inputs:,} evaluations, grouping: {r.grouping})")
    style = "yellow" if r.changed else "green"
    console.print(Text(f"{r.changed:,} of {r.compared:,} decisions would change ({r.changed_share:.2%})", style=style))
    if r.by_effect:
        t = Table(title="effects: logged → candidate", title_justify="left", header_style="bold")
        t.add_column("logged")
        t.add_column("candidate")
        t.add_column("decisions", justify="right")
        for tr in r.by_effect:
            t.add_row(tr.old, tr.new, f"{tr.count:,}", style=None if tr.old == tr.new else "yellow")
        console.print(t)
    if r.chain_changes:
        t = Table(title="model chains that change", title_justify="left", header_style="bold")
        t.add_column("logged chain")
        t.add_column("candidate chain")
        t.add_column("decisions", justify="right")
        for tr in r.chain_changes:
            t.add_row(tr.old, tr.new, f"{tr.count:,}")
        console.print(t)
    for g in r.groups:
        console.print(Text(f"\n{g.kind}: {g.old} → {g.new}  ({g.count:,} decisions)", style="bold yellow"))
        for c in g.causes[:8]:
            console.print(f"  {c.count:>8,}  {c.rule}")
        if g.examples:
            t = Table(show_header=True, header_style="bold", box=None, padding=(0, 2), pad_edge=False)
            ids = [e.id or "-" for e in g.examples]  # a decision id is never cut: the column is as wide as the longest
            t.add_column("decision", no_wrap=True, min_width=max(len("decision"), *map(len, ids)))
            t.add_column("action", overflow="fold")
            for e in g.examples:
                t.add_row(e.id or "-", _request_summary(e))
            console.print(t)
    if r.shadow_rules:
        console.print(Text("\nshadow rules (not enforced): decisions each would have decided", style="bold"))
        for c in r.shadow_rules:
            console.print(f"  {c.count:>8,}  {c.rule}")
        t = Table(title="effects: candidate → with shadow rules enforced", title_justify="left", header_style="bold")
        t.add_column("candidate")
        t.add_column("with shadow rules")
        t.add_column("decisions", justify="right")
        for tr in r.shadow_effects:
            t.add_row(tr.old, tr.new, f"{tr.count:,}", style=None if tr.old == tr.new else "yellow")
        console.print(t)
    for n in _notes(r):
        console.print(Text(f"note: {n}", style="yellow"))
    for issue in r.error_examples:
        console.print(Text(f"  {issue.id or '-'}: {issue.message}", style="red"))
    for reason in r.fail_reasons:
        console.print(Text(f"FAIL: {reason}", style="bold red"))


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(r: DryRunReport) -> str:
    out = ["## Policy dry-run", ""]
    status = "❌" if r.fail_reasons else ("⚠️" if r.changed else "✅")
    out.append(f"{status} **{r.changed:,} of {r.compared:,} logged decisions would change "
               f"({r.changed_share:.2%})** — {_md_escape(_policy_line(r))}.")
    out.append("")
    out.append(f"Source: `{r.source}`" + (f" since {r.since}" if r.since else "")
               + f"; replayed {r.replayed:,} of {r.total:,} decisions in {r.elapsed_s:.1f}s.")
    for reason in r.fail_reasons:
        out += ["", f"> **Fails:** {_md_escape(reason)}"]
    changed_effects = [t for t in r.by_effect if t.old != t.new]
    if changed_effects:
        out += ["", "### Effects that change", "", "| logged | candidate | decisions |", "|---|---|---:|"]
        out += [f"| {t.old} | {t.new} | {t.count:,} |" for t in changed_effects]
    if r.chain_changes:
        out += ["", "### Model chains that change", "", "| logged chain | candidate chain | decisions |",
                "|---|---|---:|"]
        out += [f"| {_md_escape(t.old)} | {_md_escape(t.new)} | {t.count:,} |" for t in r.chain_changes]
    if r.groups:
        out += ["", "### Changes and the rules that caused them"]
        for g in r.groups:
            out += ["", f"#### {g.kind}: {_md_escape(g.old)} → {_md_escape(g.new)} ({g.count:,})", ""]
            out += [f"- `{_md_escape(c.rule)}` — {c.count:,}" for c in g.causes[:8]]
            if g.examples:
                out += ["", "<details><summary>examples</summary>", "", "| decision | action |", "|---|---|"]
                out += [f"| `{e.id or '-'}` | {_md_escape(_request_summary(e))} |" for e in g.examples]
                out += ["", "</details>"]
    if r.shadow_rules:
        out += ["", "### Shadow rules (not enforced)", "", "| would-be effect: rule | decisions |", "|---|---:|"]
        out += [f"| `{_md_escape(c.rule)}` | {c.count:,} |" for c in r.shadow_rules]
        out += ["", "| candidate | with shadow rules enforced | decisions |", "|---|---|---:|"]
        out += [f"| {t.old} | {t.new} | {t.count:,} |" for t in r.shadow_effects]
    notes = _notes(r)
    if notes:
        out += ["", "### Notes", ""] + [f"- {_md_escape(n)}" for n in notes]
    return "\n".join(out) + "\n"


def render_json(r: DryRunReport) -> str:
    data = r.model_dump(mode="json")
    data["failed"] = r.failed
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
