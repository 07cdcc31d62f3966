"""Source text -> `PolicyFile` (AST with spans). Syntax errors become located Diagnostics."""

from __future__ import annotations

import dataclasses
import difflib
import re
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from . import ast
from .diagnostics import Diagnostic, PolicyError, source_line

CURRENCY_SYMBOLS = {"£": "GBP", "$": "USD", "€": "EUR"}
DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")

# Friendly names for terminals in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": 'a string ("...")',
    "NUMBER": "a number",
    "INT": "an integer",
    "MONEY": "an amount with a currency (100 GBP)",
    "DURATION": "a duration (30s, 5m, 1h)",
    "CMP": "a comparison (==, !=, <, <=, >, >=)",
    "TIMEOUT_KIND": "connect, first_token, idle or total",
    "CAPABILITY": "streaming, tools or prefill",
    "CHANNEL_KIND": "slack, teams, email or webhook",
    "COST_UNIT": "1k or 1m",
    "LIMIT_KIND": "requests or tokens",
    "FAIL_MODE": "open or closed",
    "PERCENT": "a percentage (80%)",
    "LBRACE": "{",
    "RBRACE": "}",
    "LSQB": "[",
    "RSQB": "]",
    "LPAR": "(",
    "RPAR": ")",
    "COMMA": ",",
    "__ANON_0": "->",
}


# Words from other policy languages, and what they are called here.
_SYNONYMS = {
    "permit": "authorize", "allow": "authorize", "forbid": "deny", "block": "deny", "reject": "deny",
    "approve": "require approval for", "hold": "require approval for", "approval": "require approval for",
    "lexicons": "lexicon", "models": "model", "routes": "route", "escalation": "escalate",
}


@cache
def _lark() -> Lark:
    grammar = resources.files("policyengine.dsl").joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True,
                cache=True)


_ESCAPE_RE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t"}


def unescape(tok: str) -> str:
    body = tok[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def escape(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def parse_duration(text: str) -> Decimal:
    m = _DURATION_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 5m, 1h, 2d, 500ms)")
    return Decimal(m.group(1)) * DURATION_UNITS[m.group(2)]


def canonical_decimal(d: Decimal) -> str:
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def percent(frac: Decimal) -> str:
    """A fraction as the canonical percentage text: 0.1 -> `10%`, 0.125 -> `12.5%`."""
    return canonical_decimal(frac * 100) + "%"


def parse_money_token(text: str) -> tuple[Decimal, str]:
    text = text.strip()
    if text[0] in CURRENCY_SYMBOLS:
        return Decimal(text[1:].replace("_", "")), CURRENCY_SYMBOLS[text[0]]
    m = re.fullmatch(r"([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Z]{3})", text)
    assert m is not None
    return Decimal(m.group(1).replace("_", "")), m.group(2)


def _span(file: str, x: Any) -> ast.Span:
    """Span of a token or a tree's meta (lark columns and lines are 1-based)."""
    try:
        line, col = x.line or 1, x.column or 1
        return ast.Span(file, line, col, x.end_line or line, x.end_column or col + 1)
    except AttributeError:  # an empty rule has no position
        return ast.Span(file, 1, 1, 1, 2)




class _Builder(Transformer):
    def __init__(self, file: str) -> None:
        super().__init__(visit_tokens=False)
        self.file = file

    def sp(self, x: Any) -> ast.Span:
        return _span(self.file, x)

    def name(self, tok: Token) -> ast.Name:
        return ast.Name(str(tok), self.sp(tok))

    def names_of(self, toks: list[Any]) -> tuple[ast.Name, ...]:
        return tuple(self.name(t) for t in toks if t is not None)

    # ------------------------------------------------------------ top level
    def start(self, items: list[Any]) -> list[Any]:
        return items

    @v_args(meta=True)
    def policy_decl(self, meta: Any, c: list[Any]) -> ast.PolicyDecl:
        return ast.PolicyDecl(unescape(c[0]), c[1], self.sp(meta))

    def version(self, c: list[Token]) -> int | str:
        t = c[0]
        return int(t) if t.type == "INT" else unescape(t)

    # ------------------------------------------------------------ models
    @v_args(meta=True)
    def model_decl(self, meta: Any, c: list[Any]) -> ast.ModelDecl:
        return ast.ModelDecl(self.name(c[0]), tuple(c[1:]), self.sp(meta))

    @v_args(meta=True)
    def prop_provider(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("provider", self.name(c[0]), self.sp(meta))

    @v_args(meta=True)
    def prop_api(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("api", self.name(c[0]), self.sp(meta))

    @v_args(meta=True)
    def prop_base_url(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("base_url", c[0], self.sp(meta))

    @v_args(meta=True)
    def prop_model_id(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("model_id", ast.Str(unescape(c[0]), self.sp(c[0])), self.sp(meta))

    @v_args(meta=True)
    def prop_keys(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("keys", tuple(x for x in c if x is not None), self.sp(meta))

    @v_args(meta=True)
    def prop_cost(self, meta: Any, c: list[Any]) -> ast.Prop:
        tok = c[0]
        currency: str | None = None
        if getattr(tok, "type", None) == "MONEY":
            amount, currency = parse_money_token(str(tok))
        else:
            amount = Decimal(str(tok))
        per = c[1] if c[1] is not None else 1000
        # (amount, tokens it is the price of, currency or None)
        return ast.Prop("cost", (amount, per, currency), self.sp(meta))

    def cost_unit(self, c: list[Token]) -> int:
        t = str(c[0])
        n = int(t[:-1])
        return n * (1000 if t[-1] in "kK" else 1_000_000)

    @v_args(meta=True)
    def prop_context(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("context", int(c[0]), self.sp(meta))

    @v_args(meta=True)
    def prop_timeout(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("timeout", tuple(c), self.sp(meta))

    @v_args(meta=True)
    def timeout_part(self, meta: Any, c: list[Token]) -> ast.TimeoutPart:
        return ast.TimeoutPart(str(c[0]), parse_duration(str(c[1])), str(c[1]), self.sp(meta))

    @v_args(meta=True)
    def prop_supports(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("supports", tuple(str(x) for x in c if x is not None), self.sp(meta))

    @v_args(meta=True)
    def prop_serves(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("serves", tuple(self.name(x) for x in c if x is not None), self.sp(meta))

    @v_args(meta=True)
    def prop_region(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("region", ast.Str(unescape(c[0]), self.sp(c[0])), self.sp(meta))

    @v_args(meta=True)
    def prop_project(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("project", c[0], self.sp(meta))

    @v_args(meta=True)
    def prop_header(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("header", (unescape(c[0]), c[1]), self.sp(meta))

    @v_args(meta=True)
    def prop_deployment(self, meta: Any, c: list[Any]) -> ast.Prop:
        dep = ast.DeploymentDecl(self.name(c[0]), tuple(c[1:]), self.sp(meta))
        return ast.Prop("deployment", dep, self.sp(meta))

    @v_args(meta=True)
    def prop_balance(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("balance", self.name(c[0]), self.sp(meta))

    @v_args(meta=True)
    def prop_health(self, meta: Any, c: list[Any]) -> ast.Prop:
        path = ast.Str(unescape(c[0]), self.sp(c[0])) if c[0] is not None else None
        every = self.v_duration([c[1]]) if c[1] is not None else None
        return ast.Prop("health", ast.HealthDecl(path, every, self.sp(meta)), self.sp(meta))

    @v_args(meta=True)
    def prop_weight(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("weight", self.v_num(c), self.sp(meta))

    @v_args(meta=True)
    def prop_max_concurrency(self, meta: Any, c: list[Any]) -> ast.Prop:
        return ast.Prop("max_concurrency", self.v_num(c), self.sp(meta))

    @v_args(meta=True)
    def str_lit(self, meta: Any, c: list[Any]) -> ast.Str:
        return ast.Str(unescape(c[0]), self.sp(meta))

    @v_args(meta=True)
    def env_ref(self, meta: Any, c: list[Any]) -> ast.Env:
        return ast.Env(unescape(c[0]), self.sp(meta))

    # ------------------------------------------------------------ routing
    @v_args(meta=True)
    def route_decl(self, meta: Any, c: list[Any]) -> ast.Route:
        cond, primary, fb, *opts = c
        sticky = sticky_return = prefer = False
        wait: tuple[Decimal, str] | None = None
        hedge: ast.Hedge | None = None
        for o in opts:
            if o[0] == "sticky":
                sticky, sticky_return = True, o[1]
            elif o[0] == "prefer":
                prefer = True
            elif o[0] == "rate_wait":
                wait = o[1]
            elif o[0] == "hedge":
                hedge = o[1]
        return ast.Route(cond, self.name(primary), fb, sticky, sticky_return, prefer, self.sp(meta),
                         rate_limit_wait=wait[0] if wait else None, rate_limit_wait_raw=wait[1] if wait else None,
                         hedge=hedge)

    def route_default(self, c: list[Any]) -> None:
        return None

    def route_when(self, c: list[Any]) -> Any:
        return c[0]

    def fallback(self, c: list[Any]) -> tuple[ast.Name, ...]:
        return self.names_of(c)

    def opt_sticky(self, c: list[Any]) -> tuple[str, bool]:
        return ("sticky", bool(c and c[0]))

    def sticky_return(self, c: list[Any]) -> bool:
        return True

    def opt_prefer(self, c: list[Any]) -> tuple[str, bool]:
        return ("prefer", True)

    def opt_rate_wait(self, c: list[Any]) -> tuple[str, tuple[Decimal, str]]:
        return ("rate_wait", (parse_duration(str(c[0])), str(c[0])))

    @v_args(meta=True)
    def opt_hedge(self, meta: Any, c: list[Any]) -> tuple[str, ast.Hedge]:
        return ("hedge", ast.Hedge(self.v_duration([c[0]]), c[1], self.sp(meta)))

    def hedge_budget(self, c: list[Token]) -> ast.Value:
        """`10%` and `0.1` both mean a tenth of the requests; the raw text is the canonical `10%`."""
        t = str(c[0])
        frac = Decimal(t[:-1]) / 100 if t.endswith("%") else Decimal(t)
        # (a negative budget, an error the checker reports, keeps its fraction form: `-5%` does not lex)
        return ast.Value("num", frac, percent(frac) if frac >= 0 else canonical_decimal(frac), self.sp(c[0]))

    @v_args(meta=True)
    def allow_choice(self, meta: Any, c: list[Any]) -> ast.AllowChoice:
        return ast.AllowChoice(self.names_of(c[:-1]), c[-1], self.sp(meta))

    # ------------------------------------------------------------ standing orders
    def names(self, c: list[Token]) -> tuple[ast.Name, ...]:
        return self.names_of(c)

    def when(self, c: list[Any]) -> Any:
        return c[0]

    def for_scope(self, c: list[Any]) -> tuple[ast.Name, ...]:
        return c[0]

    @v_args(meta=True)
    def shadow_rule(self, meta: Any, c: list[Any]) -> Any:
        return dataclasses.replace(c[0], shadow=True, span=self.sp(meta))

    @v_args(meta=True)
    def authorize_rule(self, meta: Any, c: list[Any]) -> ast.Authorize:
        return ast.Authorize(c[0], c[1], self.sp(meta))

    @v_args(meta=True)
    def approval_rule(self, meta: Any, c: list[Any]) -> ast.RequireApproval:
        return ast.RequireApproval(c[0], c[1], c[2], self.sp(meta))

    @v_args(meta=True)
    def deny_rule(self, meta: Any, c: list[Any]) -> ast.Deny:
        return ast.Deny(c[0], c[1], self.sp(meta))

    def hold_block(self, c: list[Any]) -> tuple[ast.HoldItem, ...]:
        return tuple(c)

    @v_args(meta=True)
    def hold_reviewers(self, meta: Any, c: list[Any]) -> ast.HoldItem:
        return ast.HoldItem("reviewers", group=unescape(c[0]), span=self.sp(meta))

    @v_args(meta=True)
    def hold_notify(self, meta: Any, c: list[Any]) -> ast.HoldItem:
        return ast.HoldItem("notify", channels=tuple(c), span=self.sp(meta))

    @v_args(meta=True)
    def channel(self, meta: Any, c: list[Any]) -> ast.Channel:
        return ast.Channel(str(c[0]), unescape(c[1]), self.sp(meta))

    @v_args(meta=True)
    def hold_remind(self, meta: Any, c: list[Any]) -> ast.HoldItem:
        return ast.HoldItem("remind", seconds=parse_duration(str(c[0])), raw=str(c[0]), span=self.sp(meta))

    @v_args(meta=True)
    def hold_timeout(self, meta: Any, c: list[Any]) -> ast.HoldItem:
        outcome, group = c[1]
        return ast.HoldItem(
            "timeout", seconds=parse_duration(str(c[0])), raw=str(c[0]), outcome=outcome, group=group,
            span=self.sp(meta),
        )

    @v_args(meta=True)
    def hold_chat(self, meta: Any, c: list[Any]) -> ast.HoldItem:
        return ast.HoldItem("chat", mode=c[0], span=self.sp(meta))

    @v_args(meta=True)
    def hold_confirm(self, meta: Any, c: list[Any]) -> ast.HoldItem:
        return ast.HoldItem("confirm", span=self.sp(meta))

    def chat_hold(self, c: list[Any]) -> str:
        return "hold"

    def chat_review(self, c: list[Any]) -> str:
        return "review"

    def chat_block(self, c: list[Any]) -> str:
        return "block"

    def outcome_deny(self, c: list[Any]) -> tuple[str, None]:
        return ("deny", None)

    def outcome_approve(self, c: list[Any]) -> tuple[str, None]:
        return ("approve", None)

    def outcome_escalate(self, c: list[Any]) -> tuple[str, str | None]:
        return ("escalate", unescape(c[0]) if c[0] is not None else None)

    # ------------------------------------------------------------ escalation
    @v_args(meta=True)
    def lexicon_decl(self, meta: Any, c: list[Any]) -> ast.Lexicon:
        phrases = tuple(ast.Str(unescape(t), self.sp(t)) for t in c[1:] if t is not None)
        return ast.Lexicon(self.name(c[0]), phrases, self.sp(meta))

    @v_args(meta=True)
    def escalate_rule(self, meta: Any, c: list[Any]) -> ast.Escalate:
        return ast.Escalate(c[0], c[1], c[2], self.sp(meta))

    @v_args(meta=True)
    def verify_rule(self, meta: Any, c: list[Any]) -> ast.Verify:
        scope, cond, *rest = c
        models = tuple(self.name(t) for t in rest if isinstance(t, Token))
        others = [x for x in rest if not isinstance(x, Token)]
        judge, escalate_expr, tag, *hold = others
        return ast.Verify(scope, cond, models, escalate_expr, tag, tuple(hold), self.sp(meta), judge=judge)

    @v_args(meta=True)
    def judge(self, meta: Any, c: list[Any]) -> ast.Judge:
        model, fb, timeout = c
        fallback = tuple(fb or ())
        if timeout is None:
            return ast.Judge(self.name(model), span=self.sp(meta), fallback=fallback)
        return ast.Judge(self.name(model), parse_duration(str(timeout)), str(timeout), self.sp(meta), self.sp(timeout),
                         fallback=fallback)

    def otherwise(self, c: list[Any]) -> str:
        return unescape(c[0])

    # ------------------------------------------------------------ limits and budgets
    @v_args(meta=True)
    def limit_rule(self, meta: Any, c: list[Any]) -> ast.Limit:
        kind, n, window, scope, models, cond, items = c
        d = Decimal(str(n))
        amount = ast.Value("num", d, canonical_decimal(d), self.sp(n))
        return ast.Limit(str(kind), amount, window, scope or (), models, cond, items,  # type: ignore[arg-type]
                         self.sp(meta))

    @v_args(meta=True)
    def budget_rule(self, meta: Any, c: list[Any]) -> ast.Limit:
        money, window, scope, models, cond, items = c
        return ast.Limit("spend", self.v_money([money]), window, scope or (), models, cond, items, self.sp(meta))

    def window(self, c: list[Token]) -> ast.Name:
        return self.name(c[0])

    def limit_scope(self, c: list[Token]) -> tuple[ast.Name, ...]:
        return self.names_of(c)

    def limit_models(self, c: list[Token]) -> tuple[ast.Name, ...]:
        return self.names_of(c)

    def limit_block(self, c: list[Any]) -> tuple[ast.LimitItem, ...]:
        return tuple(c)

    def _percent(self, tok: Token) -> tuple[Decimal, str]:
        d = Decimal(str(tok)[:-1])
        return d, f"{canonical_decimal(d)}%"

    @v_args(meta=True)
    def at_notify(self, meta: Any, c: list[Any]) -> ast.LimitItem:
        pct, raw = self._percent(c[0])
        return ast.LimitItem("notify", pct, raw, channels=tuple(c[1:]), span=self.sp(meta))

    @v_args(meta=True)
    def at_action(self, meta: Any, c: list[Any]) -> ast.LimitItem:
        pct, raw = self._percent(c[0])
        action, group = c[1]
        return ast.LimitItem("action", pct, raw, action=action, group=group, span=self.sp(meta))

    @v_args(meta=True)
    def on_outage(self, meta: Any, c: list[Any]) -> ast.LimitItem:
        return ast.LimitItem("outage", fail_open=str(c[0]) == "open", span=self.sp(meta))

    def la_deny(self, c: list[Any]) -> tuple[str, None]:
        return ("deny", None)

    def la_prefer(self, c: list[Any]) -> tuple[str, None]:
        return ("prefer_self_hosted", None)

    def la_approval(self, c: list[Any]) -> tuple[str, str | None]:
        return ("require_approval", unescape(c[0]) if c[0] is not None else None)

    # ------------------------------------------------------------ conditions
    @v_args(meta=True)
    def or_(self, meta: Any, c: list[Any]) -> ast.Or:
        items: list[Any] = []
        for x in c:
            items.extend(x.items if isinstance(x, ast.Or) else [x])
        return ast.Or(tuple(items), self.sp(meta))

    @v_args(meta=True)
    def and_(self, meta: Any, c: list[Any]) -> ast.And:
        items: list[Any] = []
        for x in c:
            items.extend(x.items if isinstance(x, ast.And) else [x])
        return ast.And(tuple(items), self.sp(meta))

    @v_args(meta=True)
    def not_(self, meta: Any, c: list[Any]) -> ast.Not:
        return ast.Not(c[0], self.sp(meta))

    def path(self, c: list[Token]) -> ast.Name:
        return self.name(c[0])

    @v_args(meta=True)
    def cmp(self, meta: Any, c: list[Any]) -> ast.Cmp:
        return ast.Cmp(c[0], str(c[1]), c[2], self.sp(meta))

    @v_args(meta=True)
    def in_(self, meta: Any, c: list[Any]) -> ast.In:
        return ast.In(c[0], c[1], False, self.sp(meta))

    @v_args(meta=True)
    def not_in(self, meta: Any, c: list[Any]) -> ast.In:
        return ast.In(c[0], c[1], True, self.sp(meta))

    @v_args(meta=True)
    def mentions(self, meta: Any, c: list[Any]) -> ast.Mentions:
        return ast.Mentions(c[0], self.name(c[1]), self.sp(meta))

    @v_args(meta=True)
    def mentions_by(self, meta: Any, c: list[Any]) -> ast.Mentions:
        return ast.Mentions(c[0], self.name(c[1]), self.sp(meta), self.name(c[2]))

    @v_args(meta=True)
    def truthy(self, meta: Any, c: list[Any]) -> ast.Truthy:
        return ast.Truthy(c[0], self.sp(meta))

    def list(self, c: list[Any]) -> tuple[ast.Value, ...]:
        return tuple(x for x in c if x is not None)

    def v_str(self, c: list[Token]) -> ast.Value:
        s = unescape(c[0])
        return ast.Value("str", s, escape(s), self.sp(c[0]))

    def v_num(self, c: list[Token]) -> ast.Value:
        d = Decimal(str(c[0]))
        return ast.Value("num", d, canonical_decimal(d), self.sp(c[0]))

    def v_money(self, c: list[Token]) -> ast.Value:
        amount, cur = parse_money_token(str(c[0]))
        return ast.Value("money", (amount, cur), f"{canonical_decimal(amount)} {cur}", self.sp(c[0]))

    def v_duration(self, c: list[Token]) -> ast.Value:
        return ast.Value("duration", parse_duration(str(c[0])), str(c[0]), self.sp(c[0]))

    @v_args(meta=True)
    def v_true(self, meta: Any, c: list[Any]) -> ast.Value:
        return ast.Value("bool", True, "true", self.sp(meta))

    @v_args(meta=True)
    def v_false(self, meta: Any, c: list[Any]) -> ast.Value:
        return ast.Value("bool", False, "false", self.sp(meta))


def _expected(exp: set[str] | frozenset[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(e, e.strip('"').lower() if e.isupper() else e) for e in exp})
    if len(names) > 8:
        names = [*names[:8], "..."]
    return ", ".join(f"`{n}`" if " " not in n else n for n in names)


def _keyword_guess(word: str, expected: Any) -> str | None:
    """`modle` -> `model`, `permit` -> `authorize`, when such a keyword fits here."""
    keywords = {t.lower() for t in expected if t.isupper() and t not in _TERMINAL_NAMES}
    w = word.lower()
    syn = _SYNONYMS.get(w)
    if syn and syn.split()[0] in keywords:
        return syn
    close = difflib.get_close_matches(w, sorted(keywords), 1, 0.7)
    return close[0] if close else None


def _end_of_text(text: str) -> tuple[int, int]:
    """Just after the last token (comments and whitespace skipped): where more was expected."""
    last = None
    try:
        for last in _lark().lex(text):  # noqa: B007 - we want the last token
            pass
    except UnexpectedInput:
        last = None
    if last is not None and last.end_line and last.end_column:
        return last.end_line, last.end_column
    return 1, 1


def _syntax_diag(file: str, text: str, e: UnexpectedInput) -> Diagnostic:
    line = getattr(e, "line", None)
    col = getattr(e, "column", None)
    at_end = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
    if at_end or not isinstance(line, int) or line < 1:
        line, col = _end_of_text(text)
    if not isinstance(col, int) or col < 1:
        col = 1
    end_col = col + 1
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else ""
        rest = text[e.pos_in_stream:].split("\n", 1)[0]
        bad_escape = re.match(r'"(?:[^"\\\n]|\\["\\nt])*(\\.)', rest) if ch == '"' else None
        if bad_escape is not None:
            col += bad_escape.start(1)
            end_col = col + 2
            msg, code = f"invalid escape `{bad_escape.group(1)}` in string", "E104"
            hint = 'strings know \\" \\\\ \\n \\t; write a backslash as \\\\'
        elif ch == '"':
            msg, code, hint = "unterminated string", "E102", 'close the string with `"` on the same line'
        elif (word := re.match(r"[A-Za-z_][A-Za-z0-9_]*([.\-/][A-Za-z0-9_]+)*", rest)) is not None:
            # a word where only keywords fit: most often a misspelt or foreign keyword
            w = word.group(0)
            code, msg, end_col = "E100", f"unexpected `{w}`", col + len(w)
            guess = _keyword_guess(w, e.allowed or ())
            hint = f"did you mean `{guess}`?" if guess else (f"expected {_expected(e.allowed)}" if e.allowed else None)
        else:
            msg, code = f"unexpected character {ch!r}", "E101"
            hint = f"expected {_expected(e.allowed)}" if e.allowed else None
    elif isinstance(e, UnexpectedEOF):
        code, msg = "E103", "unexpected end of file"
        hint = f"expected {_expected(e.expected)}" if e.expected else None
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            code, msg = "E103", "unexpected end of file"
        else:
            code, msg = "E100", f"unexpected `{tok}`"
            end_col = (tok.end_column or col + 1) if tok.end_line == tok.line else col + 1
        hint = f"expected {_expected(e.expected)}" if e.expected else None
        if tok.type == "NAME" and (guess := _keyword_guess(str(tok), e.expected or ())):
            hint = f"did you mean `{guess}`?"
        elif str(tok) == "for":
            hint = "the action scope comes first: `escalate for ACTION when ...`, `verify for ACTION when ...`"
    else:  # pragma: no cover - lark has no other subclasses
        code, msg, hint = "E100", str(e).splitlines()[0], None
    return Diagnostic(
        file=file, line=line, col=col, end_line=line, end_col=end_col, code=code, message=msg,
        hint=hint, source_line=source_line(text, line),
    )


def parse(text: str, file: str = "<string>") -> ast.PolicyFile:
    """Parse one file. Raises PolicyError (with one located diagnostic) on a syntax error."""
    comments: list[ast.Comment] = []
    try:
        tree = _lark().parse(text)
        for tok in _lark().lex(text, dont_ignore=True) if ("#" in text or "//" in text) else ():
            if tok.type == "COMMENT":
                before = text[: tok.start_pos].rsplit("\n", 1)[-1]
                comments.append(ast.Comment(str(tok).rstrip(), tok.line or 1, tok.column or 1, not before.strip()))
        items = _Builder(file).transform(tree)
    except UnexpectedInput as e:
        raise PolicyError([_syntax_diag(file, text, e)]) from None
    except VisitError as e:
        orig = e.orig_exc
        meta = getattr(e.obj, "meta", None)
        line = getattr(meta, "line", 1) or 1
        col = getattr(meta, "column", 1) or 1
        msg = str(orig) if isinstance(orig, ValueError | InvalidOperation) else f"invalid value: {orig}"
        raise PolicyError([
            Diagnostic(file=file, line=line, col=col, code="E109", message=msg, source_line=source_line(text, line))
        ]) from None
    except RecursionError:
        # no position survives a RecursionError: point at the line with the most nesting
        lines = text.split("\n")
        depth = [len(re.findall(r"\bnot\b|\(", ln)) for ln in lines]
        line = max(range(len(lines)), key=depth.__getitem__) + 1
        m = re.search(r"\bnot\b|\(", lines[line - 1])
        col = m.start() + 1 if m else 1
        raise PolicyError([
            Diagnostic(file=file, line=line, col=col, code="E105", message="condition nested too deeply",
                       hint="split it into several rules, or remove redundant `not` / parentheses",
                       source_line=source_line(text, line))
        ]) from None
    return ast.PolicyFile(path=file, text=text, items=list(items), comments=comments)
