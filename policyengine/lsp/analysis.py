"""What the language server knows about a policy set: pure functions over its text, no I/O.

A document is checked together with the other `.policy` files of its directory (one policy
set, as `policyengine lint DIR` sees it); every position here is 1-based like the checker's
(`policyengine.dsl.diagnostics.Diagnostic`); the server converts to LSP's 0-based positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from policyengine.dsl import ast, check_sources
from policyengine.dsl.diagnostics import Diagnostic, PolicyError
from policyengine.dsl.formatter import format_source
from policyengine.dsl.parser import parse

# Keywords offered by completion: statement starts first, then the words used inside them.
KEYWORDS: tuple[str, ...] = (
    "policy", "model", "route", "allow", "authorize", "require", "deny", "lexicon", "escalate", "verify",
    "limit", "budget", "shadow",
    "version", "default", "when", "fallback", "sticky", "session", "prefer", "self_hosted", "approval", "for",
    "reviewers", "group", "notify", "remind", "every", "timeout", "on", "chat", "confirm", "by", "user",
    "with", "judge", "otherwise", "tag", "per", "at", "and", "or", "not", "in", "mentions", "true", "false", "env",
    "provider", "api", "base_url", "model_id", "keys", "cost", "context", "supports", "region", "project",
    "header", "serves", "requests", "tokens", "choice",
)

# What each kind of rule does and where it stands in the fixed precedence (docs/language.md).
RULE_HELP: dict[type, str] = {
    ast.Deny: "**deny**: refuses the action when its condition holds. Precedence 1 (highest): "
              "any matching deny ends the evaluation.",
    ast.RequireApproval: "**require approval**: holds the action for a reviewer when its condition holds. "
                         "Precedence 3 (with escalate): above authorize, below deny.",
    ast.Escalate: "**escalate**: sends the action to a human when its condition holds. "
                  "Precedence 3 (with require approval): above authorize, below deny.",
    ast.Verify: "**verify**: runs the request on two models and escalates when they diverge (with `judge M`, "
                "a third model's verdict decides unless it fails). "
                "Precedence 3 (with escalate and require approval).",
    ast.Authorize: "**authorize**: allows the action when its condition holds. Precedence 4: the first matching "
                   "authorize allows, unless a deny, escalation or approval applied.",
    ast.Route: "**route**: picks the model chain for a chat request; the first matching route wins, "
               "else `route default`.",
    ast.AllowChoice: "**allow model choice**: the models this caller may request by name.",
    ast.Limit: "**limit / budget**: counts requests, tokens or spend per window; `at N%` says what happens.",
}


@dataclass(frozen=True)
class Symbol:
    """A model, lexicon or reviewer group: what it is and where it is defined (a group, which the
    policy does not declare, at its first `reviewers group` or `to group`)."""

    kind: str  # model | lexicon | group
    name: str
    file: str
    span: ast.Span
    detail: str


@dataclass
class Index:
    """The symbols and statements of one policy set (the last version that parsed)."""

    symbols: dict[tuple[str, str], Symbol] = field(default_factory=dict)  # (kind, name) -> symbol
    items: dict[str, list[ast.Item]] = field(default_factory=dict)  # file -> its statements
    groups_used: dict[str, list[ast.Span]] = field(default_factory=dict)

    def find(self, name: str, kinds: tuple[str, ...] = ("model", "lexicon")) -> Symbol | None:
        for k in kinds:
            s = self.symbols.get((k, name))
            if s is not None:
                return s
        return None

    def names(self, kind: str) -> list[str]:
        return [n for (k, n) in self.symbols if k == kind]


def diagnostics_for(sources: dict[str, str], file: str) -> list[Diagnostic]:
    """The checker's diagnostics of the policy set `sources` that are located in `file`, the
    informational findings (I codes) included."""
    return [d for d in check_sources(sources, analyze=True) if d.file == file]


def test_diagnostics(sources: dict[str, str], test_files: list[Any]) -> dict[str, list[Diagnostic]]:
    """W245 per test file (every file of `test_files` is a key, so fixed ones clear); {} when the
    set does not parse."""
    from policyengine.ci.uncovered import uncovered_actions

    try:
        files = [parse(text, name) for name, text in sources.items()]
    except PolicyError:
        return {}
    out: dict[str, list[Diagnostic]] = {tf.path: [] for tf in test_files}
    for d in uncovered_actions(files, test_files):
        out.setdefault(d.file, []).append(d)
    return out


def _model_detail(m: ast.ModelDecl) -> str:
    parts = []
    for p in m.props:
        if p.key in ("provider", "api", "context", "region"):
            parts.append(f"{p.key} {p.value}")
        elif p.key == "cost":
            parts.append("cost " + str(p.value[0] if isinstance(p.value, tuple) else p.value))
    return ", ".join(parts)


def build_index(sources: dict[str, str]) -> Index:
    """The symbols of every file of `sources` that parses (a file with a syntax error adds none)."""
    ix = Index()
    for file, text in sources.items():
        try:
            pf = parse(text, file)
        except PolicyError:
            continue
        ix.items[file] = pf.items
        for it in pf.items:
            if isinstance(it, ast.ModelDecl):
                ix.symbols.setdefault(("model", it.name.value), Symbol(
                    "model", it.name.value, file, it.name.span, _model_detail(it)))
            elif isinstance(it, ast.Lexicon):
                phrases = ", ".join(f'"{p.value}"' for p in it.phrases[:8]) + (" ..." if len(it.phrases) > 8 else "")
                ix.symbols.setdefault(("lexicon", it.name.value), Symbol(
                    "lexicon", it.name.value, file, it.name.span, f"{len(it.phrases)} phrases: {phrases}"))
            named = [*(getattr(it, "hold", None) or ()), *(getattr(it, "items", None) or ())]
            for h in named:  # `reviewers group`, `timeout ... -> escalate to group`, a limit's `require approval group`
                if getattr(h, "group", None):
                    ix.groups_used.setdefault(h.group, []).append(h.span)
                    ix.symbols.setdefault(("group", h.group), Symbol("group", h.group, file, h.span, ""))
    for g, spans in ix.groups_used.items():
        s = ix.symbols[("group", g)]
        where = ", ".join(f"{sp.file.rsplit('/', 1)[-1]}:{sp.line}" for sp in spans[:6])
        ix.symbols[("group", g)] = Symbol("group", g, s.file, s.span,
                                          f"reviewer group, named by {len(spans)} rule(s): {where}")
    return ix


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*([.\-/][A-Za-z0-9_]+)*")
_GROUP = re.compile(r'group\s+"([^"\\]*)"')


def word_at(line_text: str, col: int) -> tuple[str, str] | None:
    """(kind, word) under 1-based column `col`: ("group", name) inside `group "name"`, else
    ("name", identifier); None on whitespace or punctuation."""
    i = col - 1
    for m in _GROUP.finditer(line_text):
        if m.start() <= i < m.end():
            return "group", m.group(1)
    for m in _WORD.finditer(line_text):
        if m.start() <= i < m.end():
            return "name", m.group(0)
    return None


def item_at(ix: Index, file: str, line: int) -> ast.Item | None:
    """The statement of `file` whose span holds `line`."""
    for it in ix.items.get(file, ()):
        sp = getattr(it, "span", None)
        if sp is not None and sp.line <= line <= sp.end_line:
            return it
    return None


def hover_text(ix: Index, file: str, line_text: str, line: int, col: int,
               covered: dict[tuple[str, int], list[str]] | None = None) -> str | None:
    """Markdown for the position: a model / lexicon / group (what it is, where defined), else the
    rule under the cursor (what it does, its precedence, whether it is a shadow rule and, given
    `covered` ((file, line of a rule) -> the names of the cases that fire it, see `run_examples`),
    which tests fire it)."""
    w = word_at(line_text, col)
    if w is not None:
        kind, word = w
        sym = ix.find(word, ("group",) if kind == "group" else ("model", "lexicon"))
        if sym is not None:
            where = f"{sym.file.rsplit('/', 1)[-1]}:{sym.span.line}"
            return f"**{sym.kind}** `{sym.name}`" + (f": {sym.detail}" if sym.detail else "") + \
                f"\n\n{'first named' if sym.kind == 'group' else 'defined'} at {where}"
    it = item_at(ix, file, line)
    if it is None:
        return None
    text = RULE_HELP.get(type(it))
    if text is None:
        return None
    if getattr(it, "shadow", False):
        text += "\n\n**shadow**: evaluated and logged (its would-be effect), never enforced; delete `shadow` to enforce it."
    if covered is not None:
        sp = it.span  # type: ignore[union-attr]
        names = covered.get((file, sp.line), [])
        text += ("\n\nfired by " + f"{len(names)} test(s): " + ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                 if names else "\n\nno test in the `.tests.yaml` files next to it fires this rule")
    return text


def definition(ix: Index, line_text: str, col: int) -> Symbol | None:
    """Where the model, lexicon or group under the cursor is defined."""
    w = word_at(line_text, col)
    if w is None:
        return None
    kind, word = w
    return ix.find(word, ("group",) if kind == "group" else ("model", "lexicon"))


def test_fields(test_files: list[str]) -> list[str]:
    """The action fields the policy tests use (`given.fields` and `defaults.fields` keys of
    `.tests.yaml` texts), in first-seen order; a file that is not valid YAML adds none."""
    import yaml

    out: dict[str, None] = {}
    for text in test_files:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not isinstance(doc, dict):
            continue
        givens = [doc.get("defaults") or {}] + [t.get("given") or {} for t in doc.get("tests") or []
                                                 if isinstance(t, dict)]
        for g in givens:
            fields = g.get("fields") if isinstance(g, dict) else None
            if isinstance(fields, dict):
                out.update(dict.fromkeys(str(k) for k in fields))
    return list(out)


def completions(ix: Index, fields: tuple[str, ...] | list[str] = ()) -> list[tuple[str, str]]:
    """(label, kind) for completion: keywords, model names, lexicon names, the fields the tests use."""
    return ([(k, "keyword") for k in KEYWORDS] + [(m, "model") for m in ix.names("model")]
            + [(lx, "lexicon") for lx in ix.names("lexicon")] + [(f, "field") for f in fields])


def formatted(text: str, file: str) -> str | None:
    """The canonical text of a document, or None when it does not parse (nothing to format)."""
    try:
        return format_source(text, file)
    except PolicyError:
        return None


@dataclass(frozen=True)
class Example:
    """One `.tests.yaml` case run against the policy set as edited: its name and where it is
    written, `passed` / `failed` / `error` / `skipped`, the effect decided, and what differed
    from its `expect` (one line per mismatch) or why it did not run."""

    name: str
    file: str
    line: int
    status: str
    effect: str | None = None
    mismatches: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "line": self.line, "status": self.status,
                "effect": self.effect, "mismatches": list(self.mismatches), "error": self.error}


@dataclass
class ExampleRun:
    """Every case of some test files run against one policy set: `by_rule` maps each rule
    (file, line of its first line) to the cases whose decision it is part of (shadow hits
    included), in test-file order; `unplaced` are the cases that could not be run or placed
    (an evaluation error, a skipped case)."""

    by_rule: dict[tuple[str, int], list[Example]] = field(default_factory=dict)
    unplaced: list[Example] = field(default_factory=list)


def run_examples(sources: dict[str, str], test_files: list[Any], signals: Any = None) -> ExampleRun | None:
    """Run every case of `test_files` (`policyengine.ci.spec.PolicyTestFile`) against the policy
    set `sources` (as `policyengine test` does, signal values from the cases) and place each
    result on the rules its decision lists. None when the set does not compile."""
    from policyengine.ci.runner import run_case
    from policyengine.dsl import compile_sources

    try:
        policy = compile_sources(sources)
    except PolicyError:
        return None
    out = ExampleRun()
    for tf in test_files:
        for case in tf.tests:
            res, d = run_case(policy, tf.path, case, signals)
            ex = Example(name=res.name, file=res.file, line=res.line, status=res.status, effect=res.effect,
                         mismatches=tuple(f"{m.check}: expected {m.expected}, got {m.actual}" for m in res.mismatches),
                         error=res.error)
            if d is None:
                out.unplaced.append(ex)
                continue
            placed: set[tuple[str, int]] = set()
            for h in (*d.rules, *d.shadow):
                if h.span is not None and (h.span.file, h.span.line) not in placed:
                    placed.add((h.span.file, h.span.line))
                    out.by_rule.setdefault((h.span.file, h.span.line), []).append(ex)
    return out


def rules_in(ix: Index, file: str) -> list[ast.Item]:
    """The statements of `file` that decide something (what `policyengine test` counts as rules)."""
    from policyengine.ci.rules import RULE_TYPES

    return [it for it in ix.items.get(file, ()) if type(it) in RULE_TYPES]


def lens_title(examples: list[Example]) -> str:
    """The code lens above a rule: how many examples fire it and how many of those pass."""
    if not examples:
        return "▶ no example fires this rule"
    passed = sum(1 for e in examples if e.status == "passed")
    n = len(examples)
    return f"▶ {n} example{'s' if n != 1 else ''}: {passed} pass, {n - passed} fail"
