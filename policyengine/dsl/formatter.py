"""The one printer of the policy language: canonical text of conditions, literals,
statements and whole files (`policyengine fmt`; also the checker's messages, the
compiler's explanations and CI's rule descriptions).

Rules: one statement per line; model and approval/escalation blocks one property
per line, indented two spaces; single spaces between tokens; blank lines between
statements kept (collapsed to one); comments kept: a comment on its own line stays
above the statement that follows it, a comment at the end of a statement's last
line stays there, a comment inside a multi-line block moves above that block.
The output parses to the same tree as the input (spans aside) and is a fixed point.
`format_item(it, one_line=True)` is the same text with a block's items on its line.
"""

from __future__ import annotations

from . import ast
from .parser import canonical_decimal, escape, parse


def expr(e: ast.Expr) -> str:
    """A condition's canonical text (minimal parentheses: `and` binds tighter than `or`)."""
    if isinstance(e, ast.Or):
        return " or ".join(expr(x) for x in e.items)
    if isinstance(e, ast.And):
        return " and ".join(f"({expr(x)})" if isinstance(x, ast.Or) else expr(x) for x in e.items)
    if isinstance(e, ast.Not):
        inner = e.item
        s = expr(inner)
        return f"not ({s})" if isinstance(inner, ast.And | ast.Or) else f"not {s}"
    if isinstance(e, ast.Cmp):
        return f"{e.path.value} {e.op} {e.value.raw}"
    if isinstance(e, ast.In):
        return f"{e.path.value} {'not in' if e.negated else 'in'} {values(e.values)}"
    if isinstance(e, ast.Mentions):
        by = f" by {e.mode.value}" if e.mode is not None else ""
        return f"{e.path.value} mentions {e.lexicon.value}{by}"
    if isinstance(e, ast.Truthy):
        return e.path.value
    raise TypeError(f"not an expression: {e!r}")


def values(vs: tuple[ast.Value, ...]) -> str:
    """A literal list as written: `["a", 100 GBP]`."""
    return "[" + ", ".join(v.raw for v in vs) + "]"


def names(ns: tuple[ast.Name, ...] | None) -> str:
    """Names separated by `, ` (nothing for None)."""
    return ", ".join(n.value for n in ns or ())


def when(cond: ast.Expr | None) -> str:
    """` when <cond>`, or nothing without a condition."""
    return f" when {expr(cond)}" if cond is not None else ""


def route(r: ast.Route) -> str:
    """A `route` statement on one line."""
    head = "route default" if r.cond is None else f"route when {expr(r.cond)}"
    out = f"{head} -> {r.primary.value}"
    if r.fallback is not None:
        out += f" fallback [{names(r.fallback)}]"
    if r.sticky:
        out += " sticky session" + (" return on recovery" if r.sticky_return else "")
    if r.prefer_self_hosted:
        out += " prefer self_hosted"
    if r.rate_limit_wait_raw is not None:
        out += f" on rate_limit wait up to {r.rate_limit_wait_raw}"
    if r.hedge is not None:
        out += f" hedge after {r.hedge.after.raw}"
        if r.hedge.budget is not None:
            out += f" budget {r.hedge.budget.raw}"
    return out


def hold_item(h: ast.HoldItem) -> str:
    """One item of an approval/escalation hold block."""
    if h.kind == "reviewers":
        return f"reviewers group {escape(h.group or '')}"
    if h.kind == "notify":
        return "notify " + ", ".join(f"{c.kind} {escape(c.target)}" for c in h.channels)
    if h.kind == "remind":
        return f"remind every {h.raw}"
    if h.kind == "chat":
        return f"on chat {h.mode}"
    if h.kind == "confirm":
        return "confirm by user"
    out = f"timeout {h.raw} -> {h.outcome}"
    if h.outcome == "escalate" and h.group is not None:
        out += f" to group {escape(h.group)}"
    return out


def limit_item(li: ast.LimitItem) -> str:
    """One item of a limit's block."""
    if li.kind == "notify":
        return f"at {li.raw} notify " + ", ".join(f"{c.kind} {escape(c.target)}" for c in li.channels)
    if li.kind == "outage":
        return f"on outage fail {'open' if li.fail_open else 'closed'}"
    what = {"deny": "deny", "prefer_self_hosted": "prefer self_hosted", "require_approval": "require approval"}
    out = f"at {li.raw} {what[li.action or 'deny']}"
    if li.group is not None:
        out += f" group {escape(li.group)}"
    return out


def limit_head(lm: ast.Limit) -> str:
    """A limit or budget statement without its block."""
    head = f"budget {lm.amount.raw}" if lm.kind == "spend" else f"limit {lm.kind} {lm.amount.raw}"
    head += f" per {lm.window.value}"
    if lm.scope:
        head += f" per {names(lm.scope)}"
    if lm.models is not None:
        head += f" on model {names(lm.models)}"
    return head + when(lm.cond)


def _sv(v: ast.Str | ast.Env) -> str:
    return f"env({escape(v.name)})" if isinstance(v, ast.Env) else escape(v.value)


def _per(n: int) -> str:
    if n == 1_000_000:
        return "1m"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _prop(p: ast.Prop) -> str:
    v = p.value
    if p.key == "provider":
        return f"provider {v.value}"  # type: ignore[union-attr]
    if p.key == "api":
        return f"api {v.value}"  # type: ignore[union-attr]
    if p.key in ("base_url", "project"):
        return f"{p.key} {_sv(v)}"  # type: ignore[arg-type]
    if p.key in ("model_id", "region"):
        return f"{p.key} {escape(v.value)}"  # type: ignore[union-attr]
    if p.key == "keys":
        return "keys [" + ", ".join(_sv(k) for k in v) + "]"  # type: ignore[union-attr]
    if p.key == "cost":
        amount, per, currency = v  # type: ignore[misc]
        money = canonical_decimal(amount) + (f" {currency}" if currency else "")
        return "cost 0" if amount == 0 and per == 1000 and not currency else f"cost {money} per {_per(per)} tokens"
    if p.key == "context":
        return f"context {v}"
    if p.key == "timeout":
        return "timeout " + " ".join(f"{t.kind} {t.raw}" for t in v)  # type: ignore[union-attr]
    if p.key == "supports":
        return "supports " + ", ".join(v)  # type: ignore[arg-type]
    if p.key == "serves":
        return "serves [" + ", ".join(n.value for n in v) + "]"  # type: ignore[union-attr]
    if p.key == "header":
        name, val = v  # type: ignore[misc]
        return f"header {escape(name)} {_sv(val)}"
    if p.key == "deployment":
        # one line: `deployment NAME { prop prop }` (a comment inside moves above it)
        inner = " ".join(_prop(q) for q in v.props)  # type: ignore[union-attr]
        return f"deployment {v.name.value} {{ {inner} }}" if inner else f"deployment {v.name.value} {{}}"  # type: ignore[union-attr]
    if p.key == "balance":
        return f"balance {v.value}"  # type: ignore[union-attr]
    if p.key == "health":
        out = "health"
        if v.path is not None:  # type: ignore[union-attr]
            out += f" {escape(v.path.value)}"  # type: ignore[union-attr]
        if v.every is not None:  # type: ignore[union-attr]
            out += f" every {v.every.raw}"  # type: ignore[union-attr]
        return out
    if p.key in ("weight", "max_concurrency"):
        return f"{p.key} {v.raw}"  # type: ignore[union-attr]
    raise ValueError(p.key)


def prop_text(p: ast.Prop) -> str:
    """One model (or deployment) property's canonical text, e.g. `deployment a { base_url env("A") weight 3 }`."""
    return _prop(p)


def _block(head: str, lines: list[str], one_line: bool = False) -> str:
    if one_line:
        return head + " { " + "".join(f"{ln}  " for ln in lines).rstrip() + (" }" if lines else "}")
    if not lines:
        return head + " {\n}"
    return head + " {\n" + "".join(f"  {ln}\n" for ln in lines) + "}"


def format_item(it: ast.Item, one_line: bool = False) -> str:
    """One statement's canonical text (comments aside). With `one_line`, a block's items
    follow its head on the same line, two spaces apart: `head { item  item }`. A shadow rule
    is its rule's text after `shadow `."""
    text = _format_item(it, one_line)
    return f"shadow {text}" if getattr(it, "shadow", False) else text


def _format_item(it: ast.Item, one_line: bool = False) -> str:
    if isinstance(it, ast.PolicyDecl):
        out = f"policy {escape(it.name)}"
        if it.version is not None:
            out += f" version {it.version if isinstance(it.version, int) else escape(it.version)}"
        return out
    if isinstance(it, ast.ModelDecl):
        return _block(f"model {it.name.value}", [_prop(p) for p in it.props], one_line)
    if isinstance(it, ast.Route):
        return route(it)
    if isinstance(it, ast.AllowChoice):
        return f"allow model choice [{names(it.models)}]{when(it.cond)}"
    if isinstance(it, ast.Authorize):
        return f"authorize {names(it.actions)}{when(it.cond)}"
    if isinstance(it, ast.Deny):
        return f"deny {names(it.actions)}{when(it.cond)}"
    if isinstance(it, ast.RequireApproval):
        head = f"require approval for {names(it.actions)}{when(it.cond)}"
        return head if it.hold is None else _block(head, [hold_item(h) for h in it.hold], one_line)
    if isinstance(it, ast.Lexicon):
        return f"lexicon {it.name.value} [" + ", ".join(escape(p.value) for p in it.phrases) + "]"
    if isinstance(it, ast.Escalate):
        scope = f" for {names(it.actions)}" if it.actions is not None else ""
        head = f"escalate{scope} when {expr(it.cond)}"
        return head if it.hold is None else _block(head, [hold_item(h) for h in it.hold], one_line)
    if isinstance(it, ast.Verify):
        scope = f" for {names(it.actions)}" if it.actions is not None else ""
        head = f"verify{scope}{when(it.cond)} with {names(it.models)}"
        if it.judge is not None:
            head += f" judge {it.judge.model.value}"
            if it.judge.fallback:
                head += f" fallback [{names(it.judge.fallback)}]"
            if it.judge.raw:
                head += f" timeout {it.judge.raw}"
        inner = f"escalate when {expr(it.escalate)}"
        if it.tag is not None:
            inner += f" otherwise tag {escape(it.tag)}"
        return _block(head, [inner, *(hold_item(h) for h in it.hold)], one_line)
    if isinstance(it, ast.Limit):
        head = limit_head(it)
        return head if it.items is None else _block(head, [limit_item(li) for li in it.items], one_line)
    raise TypeError(f"cannot format {it!r}")


def _block_parts(it: ast.Item) -> tuple[str, list[tuple[int, int, str]]] | None:
    """A block statement as (header, [(first line, last line, text) per item]); None for one-liners."""
    if isinstance(it, ast.ModelDecl):
        return f"model {it.name.value}", [(p.span.line, p.span.end_line, _prop(p)) for p in it.props]
    if isinstance(it, ast.RequireApproval | ast.Escalate) and it.hold is not None:
        head = format_item(type(it)(**{**it.__dict__, "hold": None}))  # type: ignore[arg-type]
        return head, [(h.span.line, h.span.end_line, hold_item(h)) for h in it.hold]
    if isinstance(it, ast.Limit) and it.items is not None:
        return limit_head(it), [(li.span.line, li.span.end_line, limit_item(li)) for li in it.items]
    if isinstance(it, ast.Verify):
        head, _, rest = format_item(it).partition(" {\n")
        inner = rest.split("\n")[0].strip()
        return head, [(it.escalate.span.line, it.escalate.span.end_line, inner),
                      *((h.span.line, h.span.end_line, hold_item(h)) for h in it.hold)]
    return None


def _block_with_comments(head: str, start_line: int, children: list[tuple[int, int, str]],
                         comments: list[ast.Comment]) -> str:
    """Keep comments inside a block with the item they annotate: a comment at the end of an
    item's line stays there, one on its own line stays above the next item."""
    head_note: str | None = None
    before: dict[int, list[str]] = {}
    after: dict[int, str] = {}
    tail: list[str] = []
    for c in comments:
        if not c.own_line:
            idx = next((i for i in range(len(children) - 1, -1, -1) if children[i][1] == c.line and i not in after), None)
            if idx is not None:
                after[idx] = c.text
                continue
            if c.line == start_line and head_note is None:
                head_note = c.text
                continue
        nxt = next((i for i, ch in enumerate(children) if ch[0] > c.line), None)
        if nxt is None:
            tail.append(c.text)
        else:
            before.setdefault(nxt, []).append(c.text)
    out = [head + " {" + (f"  {head_note}" if head_note else "")]
    for i, (_a, _b, text) in enumerate(children):
        out.extend(f"  {b}" for b in before.get(i, ()))
        out.append(f"  {text}" + (f"  {after[i]}" if i in after else ""))
    out.extend(f"  {t}" for t in tail)
    out.append("}")
    return "\n".join(out)


def format_file(f: ast.PolicyFile) -> str:
    """The canonical text of a parsed file, its comments kept (see the module docstring);
    "" for a file with neither statements nor comments."""
    lines = f.text.split("\n")
    comments = sorted(f.comments, key=lambda c: (c.line, c.col))
    out: list[str] = []
    ci = 0
    prev_end = 0

    def blank_between(a: int, b: int) -> bool:
        """Is there an empty line strictly between source lines a and b?"""
        return any(not lines[i - 1].strip() for i in range(a + 1, b) if 1 <= i <= len(lines))

    for it in f.items:
        start, end = it.span.line, it.span.end_line
        inner: list[ast.Comment] = []
        trailing: ast.Comment | None = None
        while ci < len(comments) and comments[ci].line < start:
            c = comments[ci]
            if out and blank_between(prev_end, c.line):
                out.append("")
            out.append(c.text)
            prev_end = c.line
            ci += 1
        while ci < len(comments) and comments[ci].line <= end:
            c = comments[ci]
            if c.line == end and not c.own_line and trailing is None:
                trailing = c
            else:
                inner.append(c)
            ci += 1
        if out and blank_between(prev_end, start):
            out.append("")
        parts = _block_parts(it)
        if parts is not None and inner:
            text = _block_with_comments(parts[0], start, parts[1], inner)
        else:
            out.extend(c.text for c in inner)
            text = format_item(it)
        if trailing is not None:
            text += "  " + trailing.text
        out.append(text)
        prev_end = end
    for c in comments[ci:]:
        if out and blank_between(prev_end, c.line):
            out.append("")
        out.append(c.text)
        prev_end = c.line
    return "\n".join(out) + "\n" if out else ""


def format_source(text: str, file: str = "<string>") -> str:
    """Canonical text of one file. Raises PolicyError on a syntax error."""
    return format_file(parse(text, file))
