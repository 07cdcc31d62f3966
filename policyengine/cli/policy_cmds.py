"""`policyengine lint`, `fmt` and `eval`: the policy language at the command line."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from policyengine.cli import app
from policyengine.dsl import (
    Diagnostic,
    PolicyError,
    check,
    discover_sets,
    expand_paths,
    format_source,
    load_policy_set,
)
from policyengine.types import DEFAULT_JUDGE_TIMEOUT_S, Action, Decision

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class LintFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


class EvalFormat(StrEnum):
    text = "text"
    json = "json"


def _print_diag(d: Diagnostic) -> None:
    color = "red" if d.is_error else "blue" if d.severity == "info" else "yellow"
    lines = d.format().split("\n")
    out.print(Text(lines[0], style=f"bold {color}"))
    for ln in lines[1:]:
        out.print(Text(ln, style=color if ln.strip().startswith("^") else ("cyan" if "hint:" in ln else "")))


@app.command("lint")
def lint(
    paths: Annotated[list[Path], typer.Argument(help="Policy files or directories; each is checked as its own set.")],
    format: Annotated[LintFormat, typer.Option("--format", "-f", help="text, json, or github annotations.")] = LintFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too (exit 1).")] = False,
    analyze: Annotated[bool, typer.Option("--analyze", help="Also report where rules overlap (I codes: "
                                          "informational, they never fail).")] = False,
) -> None:
    """Check policy sets; exit 1 if any has errors (warnings alone exit 0).

    Each PATH is checked as its own policy set: a file, or a directory whose *.policy
    files form one set; a directory holding only set folders (like policies/) checks each."""
    diags: list[Diagnostic] = []
    files = 0
    for p in paths:
        sets = discover_sets(p) if p.is_dir() else [[p]]
        if not sets:
            diags.extend(check([p]))  # reports "no .policy files found"
        for s in sets:
            files += len(s)
            diags.extend(check(s, analyze=analyze))
    errors = sum(d.is_error for d in diags)
    infos = sum(d.severity == "info" for d in diags)
    warnings = len(diags) - errors - infos
    if format is LintFormat.json:
        sys.stdout.write(json.dumps([d.model_dump() for d in diags], indent=2) + "\n")
    elif format is LintFormat.github:
        for d in diags:
            sys.stdout.write(d.github() + "\n")
    else:
        for d in diags:
            _print_diag(d)
        if errors:
            out.print(Text(f"{errors} error(s), {warnings} warning(s) in {files} file(s)", style="bold red"))
        else:
            out.print(Text(f"ok: {files} file(s), {warnings} warning(s)" + (f", {infos} finding(s)" if analyze else ""),
                           style="bold green"))
    raise typer.Exit(1 if errors or (strict and warnings) else 0)


@app.command("fmt")
def fmt(
    paths: Annotated[list[Path], typer.Argument(help="Policy files or directories.")],
    check_only: Annotated[bool, typer.Option("--check", help="Do not write; exit 1 if a file is not formatted.")] = False,
) -> None:
    """Rewrite policy files in the one canonical format (`-` formats stdin to stdout)."""
    if [str(p) for p in paths] == ["-"]:
        text = sys.stdin.read()
        try:
            new = format_source(text, "<stdin>")
        except PolicyError as e:
            for d in e.diagnostics:
                err.print(d.format())
            raise typer.Exit(1)
        if check_only:
            raise typer.Exit(0 if new == text else 1)
        sys.stdout.write(new)
        raise typer.Exit(0)
    changed: list[Path] = []
    failed = False
    files = expand_paths(paths)
    if not files:
        err.print("fmt: no .policy files found")
        raise typer.Exit(2)
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
            new = format_source(text, str(f))
        except PolicyError as e:
            for d in e.diagnostics:
                _print_diag(d)
            failed = True
            continue
        except OSError as e:
            err.print(f"{f}: cannot read: {e}")
            failed = True
            continue
        if new != text:
            changed.append(f)
            if not check_only:
                f.write_text(new, encoding="utf-8")
    for f in changed:
        out.print(f"{'would reformat' if check_only else 'reformatted'} {f}")
    if not changed and not failed:
        out.print(f"{len(files)} file(s) already formatted")
    raise typer.Exit(1 if failed or (check_only and changed) else 0)


def _signal_provider(policy: Any) -> tuple[Any | None, str]:
    """The default signal provider for `eval` and a note saying where signals come from.

    A policy using a signal whose optional dependencies are not installed (sentiment or
    verify/divergence without the `embeddings` extra) is refused here, right after it loads
    and before anything is evaluated: the error names the rule and `pip install
    'policyengine-llm[embeddings]'`, exit 1. (`--no-signals` never calls this.)"""
    from policyengine.signals.requirements import EmbeddingsNotInstalled, require_available

    try:
        require_available(policy)
    except EmbeddingsNotInstalled as e:
        err.print(Text(f"error: {e.message}", style="bold red"))
        raise typer.Exit(1)
    try:
        from policyengine import signals as sig_mod

        cls = getattr(sig_mod, "DefaultSignalProvider", None)
        if cls is None:
            return None, "no default signal provider installed: signals not supplied with the action are not computed"
        return cls(), f"signals computed by {cls.__module__}.{cls.__name__}"
    except Exception as e:  # the provider is optional: never fail the evaluation over it
        return None, f"default signal provider unavailable ({type(e).__name__}: {e}): signals not supplied are not computed"


@app.command("eval")
def eval_cmd(
    policy: Annotated[list[Path], typer.Argument(help="Policy file(s) or directory (one policy set).")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Action as JSON, or a JSON array of actions ('-' for stdin).")],
    format: Annotated[EvalFormat, typer.Option("--format", "-f")] = EvalFormat.text,
    no_signals: Annotated[bool, typer.Option("--no-signals", help="Do not compute signals; use only those supplied.")] = False,
) -> None:
    """Evaluate an action (or a list of them) against a policy set and explain each decision."""
    try:
        compiled = load_policy_set(policy)
    except PolicyError as e:
        for d in e.diagnostics:
            _print_diag(d)
        raise typer.Exit(1)
    try:
        raw = sys.stdin.read() if str(input) == "-" else input.read_text(encoding="utf-8")
    except OSError as e:
        err.print(f"--input: cannot read {input}: {e}")
        raise typer.Exit(2)
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        err.print(f"--input: not JSON ({input}): {e}")
        raise typer.Exit(2)
    docs = doc if isinstance(doc, list) else [doc]
    actions: list[Action] = []
    for i, one in enumerate(docs):
        try:
            actions.append(Action.model_validate(one))
        except ValidationError as e:
            where = f" (item {i})" if isinstance(doc, list) else ""
            err.print(f"--input: not a valid action{where} ({input}):")
            for x in e.errors():
                loc = ".".join(str(p) for p in x["loc"]) or "(root)"
                err.print(f"  {loc}: {x['msg']}")
            raise typer.Exit(2)
    provider, provider_note = (None, "signals: only those supplied with the action (--no-signals)") if no_signals \
        else _signal_provider(compiled)
    decisions = [compiled.evaluate(a, provider) for a in actions]
    if format is EvalFormat.json:
        docs_out = []
        for d in decisions:
            one = d.model_dump(mode="json")
            one["explanation"] = explain_lines(d)
            one["signal_provider"] = provider_note
            docs_out.append(one)
        sys.stdout.write(json.dumps(docs_out if isinstance(doc, list) else docs_out[0], indent=2) + "\n")
    else:
        for i, d in enumerate(decisions):
            if i:
                out.print()
            render(d, provider_note)


def explain_lines(d: Decision) -> list[str]:
    lines = [f"{d.effect.upper()}: {d.action}"]
    for h in d.rules:
        where = f"{h.span.file}:{h.span.line}" if h.span else h.rule_id
        because = "; ".join(h.because)
        lines.append(f"  {h.kind}{' -> ' + h.effect if h.effect else ''} at {where}: {h.source}"
                     + (f" [{because}]" if because else ""))
    for h in d.shadow:
        where = f"{h.span.file}:{h.span.line}" if h.span else h.rule_id
        because = "; ".join(h.because)
        lines.append(f"  shadow {h.kind} -> {h.effect} (not enforced) at {where}: {h.source}"
                     + (f" [{because}]" if because else ""))
    if d.shadow_effect is not None:
        lines.append(f"  with shadow rules enforced: {d.shadow_effect.upper()}")
    return lines + [f"  note: {n}" for n in d.notes]


_EFFECT_STYLE = {"allow": "bold green", "deny": "bold red", "require_approval": "bold yellow", "escalate": "bold magenta"}


def render(d: Decision, provider_note: str) -> None:
    out.print(Text.assemble(("Decision: ", "bold"), (d.effect.upper(), _EFFECT_STYLE[d.effect]), f"  action {d.action!r}"))
    out.print(f"Policy {d.policy_name!r} version {d.policy_version}  hash {d.policy_hash[:16]}")
    if d.routing.chain:
        extra = [x for x, on in (("sticky session", d.routing.sticky), ("returns on recovery", d.routing.sticky_return),
                                 ("prefer self_hosted", d.routing.prefer_self_hosted)) if on]
        if d.routing.hedge_after is not None:
            extra.append(f"hedge after {d.routing.hedge_after:g}s, budget {d.routing.hedge_budget:.0%}")
        out.print(f"Model chain: {' -> '.join(d.routing.chain)}" + (f"  ({', '.join(extra)})" if extra else ""))
    if d.allowed_models:
        out.print(f"Caller may choose: {', '.join(d.allowed_models)}")
    if d.rules:
        out.print(Text("Rules that applied:", style="bold"))
        for h in d.rules:
            head = Text(f"  {h.rule_id}  {h.kind}")
            if h.effect:
                head.append(f" -> {h.effect}", style=_EFFECT_STYLE.get(h.effect, ""))
            out.print(head)
            if h.source:
                out.print(Text(f"      {h.source}", style="cyan"))
            for b in h.because:
                out.print(f"      because {b}")
    for o in d.obligations:
        chans = ", ".join(f"{c.kind} {c.target}" for c in o.channels) or "none"
        timing = []
        if o.remind_every_s:
            timing.append(f"remind every {human(o.remind_every_s)}")
        if o.timeout_s:
            timing.append(f"timeout {human(o.timeout_s)} -> {o.on_timeout}" + (f" to {o.escalate_to}" if o.escalate_to else ""))
        out.print(f"Obligation ({o.rule_id}): reviewers {o.group or '(any)'}; notify {chans}"
                  + (f"; {'; '.join(timing)}" if timing else ""))
    if d.verification:
        v = d.verification
        out.print(f"Verification required: run {' and '.join(v.models)}; escalate if divergence > {v.threshold:g}"
                  + (f", else tag {v.tag!r}" if v.tag else ""))
        if v.judge:
            then = f" (then {', '.join(v.judge_fallback)})" if v.judge_fallback else ""
            out.print(f"Judge: {v.judge}{then} would be asked whether the answers diverge (not called here; its "
                      f"verdict decides, within {v.judge_timeout or DEFAULT_JUDGE_TIMEOUT_S:g}s, else the "
                      "embedded comparator does)")
    if d.tags:
        out.print(f"Tags: {', '.join(d.tags)}")
    if d.shadow:
        out.print(Text("Shadow rules (not enforced):", style="bold"))
        for h in d.shadow:
            head = Text(f"  {h.rule_id}  shadow {h.kind}")
            head.append(f" -> would {h.effect}", style=_EFFECT_STYLE.get(h.effect or "", ""))
            out.print(head)
            out.print(Text(f"      {h.source}", style="cyan"))
            for b in h.because:
                out.print(f"      because {b}")
        assert d.shadow_effect is not None
        out.print(Text.assemble("With shadow rules enforced: ",
                                (d.shadow_effect.upper(), _EFFECT_STYLE[d.shadow_effect])))
    if d.signals:
        out.print("Signals used: " + ", ".join(f"{k}={_short(v)}" for k, v in d.signals.items()))
    for n in d.notes:
        out.print(Text(f"note: {n}", style="dim"))
    out.print(Text(provider_note, style="dim"))


def _short(v: Any) -> str:
    if isinstance(v, dict) and "matched_text" in v:
        return repr(v["matched_text"])
    return "not supplied" if v is None else str(v)


def human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
