"""Render a static policy diff: Rich text, Markdown, JSON."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from policyengine.ci.diff import DiffReport

_STYLE = {"added": "green", "removed": "red", "changed": "yellow"}
_SIGN = {"added": "+", "removed": "-", "changed": "~"}


def render_text(r: DiffReport, console: Console) -> None:
    console.print(Text(f"{r.old.spec} → {r.new.spec}", style="bold"))
    if not r.changed:
        console.print(Text(f"no differences ({r.unchanged} rules identical)", style="green"))
        return
    for h in r.header:
        console.print(f"  {h}")
    n = {s: sum(1 for c in r.rules if c.status == s) for s in ("added", "removed", "changed")}
    console.print(f"rules: {n['added']} added, {n['removed']} removed, {n['changed']} changed, "
                  f"{r.unchanged} unchanged ({r.moved} moved)")
    for c in r.rules:
        style = _STYLE[c.status]
        where = c.new_at or c.old_at
        console.print(Text(f"\n{_SIGN[c.status]} {c.kind} ({c.status}) {where}", style=f"bold {style}"))
        if c.old is not None and c.status != "added":
            console.print(Text(f"  - {c.old}", style="red"))
        if c.new is not None and c.status != "removed":
            console.print(Text(f"  + {c.new}", style="green"))
        for d in c.details:
            console.print(f"    {d}")
    for label, items in (("models", r.models), ("lexicons", r.lexicons)):
        for m in items:
            console.print(Text(f"\n{_SIGN[m.status]} {label[:-1]} {m.name} ({m.status})",
                               style=f"bold {_STYLE[m.status]}"))
            for d in m.details:
                console.print(f"    {d}")
    if r.impacts:
        t = Table(title="treatment that may change", title_justify="left", header_style="bold")
        t.add_column("actions / routes")
        t.add_column("why", overflow="fold")
        t.add_column("where", overflow="fold", style="dim")
        for i in r.impacts:
            t.add_row(i.target, i.change, "\n".join(dict.fromkeys(i.at)))
        console.print(t)


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(r: DiffReport) -> str:
    out = [f"## Policy diff: `{r.old.spec}` → `{r.new.spec}`", ""]
    if not r.changed:
        return "\n".join([*out, f"No differences ({r.unchanged} rules identical).", ""])
    out += [f"- {h}" for h in r.header]
    n = {s: sum(1 for c in r.rules if c.status == s) for s in ("added", "removed", "changed")}
    out += [f"Rules: **{n['added']} added, {n['removed']} removed, {n['changed']} changed**, "
            f"{r.unchanged} unchanged.", ""]
    if r.rules:
        out += ["```diff"]
        for c in r.rules:
            out.append(f"# {c.kind} {c.status} at {c.new_at or c.old_at}")
            if c.old is not None and c.status != "added":
                out.append(f"- {c.old}")
            if c.new is not None and c.status != "removed":
                out.append(f"+ {c.new}")
        out += ["```", ""]
    for label, items in (("Models", r.models), ("Lexicons", r.lexicons)):
        if items:
            out += [f"**{label}:**", ""]
            out += [f"- {m.status} `{m.name}`" + (": " + "; ".join(m.details) if m.details else "") for m in items]
            out.append("")
    if r.impacts:
        out += ["### Treatment that may change", "", "| actions / routes | why | where |", "|---|---|---|"]
        out += [f"| {_md(i.target)} | {_md(i.change)} | {_md(', '.join(dict.fromkeys(i.at)))} |" for i in r.impacts]
    return "\n".join(out) + "\n"


def render_json(r: DiffReport) -> str:
    data = r.model_dump(mode="json")
    data["changed"] = r.changed
    return json.dumps(data, indent=2, ensure_ascii=False)
