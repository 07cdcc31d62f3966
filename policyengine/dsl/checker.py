"""Semantic checks over a parsed policy set: every problem, located, before anything runs.

One root cause gives one diagnostic: an unknown name is reported once (where it is
first used, listing the other uses); a model with an unknown provider is not also
told it lacks a base_url; a comparison with a type error is not also range-checked.
Codes are documented in docs/language.md.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qsl, urlsplit

from policyengine.ir import (
    BUILTIN,
    BUILTIN_TYPES,
    INTENT_LEXICONS,
    LIMIT_SCOPES,
    MENTION_MODES,
    WINDOWS,
    classify,
    unknown_builtin,
)
from policyengine.netcheck import ALWAYS_REFUSED, AddressClass, OutboundRefused, literal_class
from policyengine.types import (
    MAX_JUDGE_TIMEOUT_S,
    NATIVE_API_PROVIDERS,
    SERVED_KINDS,
    ApiKind,
    BalanceStrategy,
    Provider,
)

from . import ast
from . import formatter as fmt
from .contradictions import contradictions, witness
from .diagnostics import Diagnostic, source_line
from .families import model_family
from .parser import parse_duration

SECRET_RE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AKIA[0-9A-Z]{12,}|xox[abposr]-[A-Za-z0-9\-]{6,}|gh[pousr]_[A-Za-z0-9]{16,}"
    r"|AIza[0-9A-Za-z_\-]{20,}|hf_[A-Za-z0-9]{16,}|Bearer\s+\S{8,})"
)
PROVIDERS = [p.value for p in Provider]
API_KINDS = list(get_args(ApiKind))
BALANCE_STRATEGIES = list(get_args(BalanceStrategy))
KEY_PROPS_ONCE = ("provider", "api", "base_url", "model_id", "keys", "cost", "context", "supports", "serves",
                  "region", "project", "balance", "health")
DEPLOYMENT_PROPS_ONCE = ("base_url", "keys", "weight", "max_concurrency", "region")
# Query parameters that carry credentials (`?api_key=...`, `?token=...`, Azure SAS `sig=`), and header
# names whose value is a credential (`X-Api-Key`, `X-Auth-Token`, `Ocp-Apim-Subscription-Key`, `Cookie`).
SECRET_PARAMS = frozenset({
    "api_key", "apikey", "api-key", "key", "token", "access_token", "auth_token", "refresh_token", "id_token",
    "secret", "client_secret", "password", "passwd", "pwd", "sig", "signature", "x-api-key", "auth",
})
SECRET_HEADER_RE = re.compile(
    r"(^|[-_])(authorization|auth|apikey|api[-_]?key|key|token|secret|password|passwd|cookie|credentials?"
    r"|signature|session)($|[-_])", re.IGNORECASE)


def url_secret(value: str) -> str | None:
    """What in URL `value` is a credential written literally (a password in the userinfo, a long token as
    the user, a credential query parameter), or None."""
    if "://" not in value:
        return None
    try:
        p = urlsplit(value.strip())
        password, user = p.password, p.username
    except ValueError:
        return None
    if password:
        return "the password in the URL (`user:password@`)"
    if user and len(user) >= 16:
        return "the token in the URL's user part (`token@`)"
    for k, v in parse_qsl(p.query):
        if k.lower() in SECRET_PARAMS and v.strip():
            return f"the query parameter `{k}=`"
    return None


def _close(name: str, candidates: Any) -> str | None:
    m = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return m[0] if m else None


def _where(s: ast.Span) -> str:
    return f"{Path(s.file).name}:{s.line}"


# Above this many rules of one action, the pairwise analyses (I243, W244, W246) skip it: they
# compare every pair, and a set that long is generated, not written.
PAIRWISE_MAX = 200


class Checker:
    def __init__(self, files: list[ast.PolicyFile], *, analyze: bool = False) -> None:
        self.analyze = analyze  # also report the informational findings (I codes: overlaps)
        self.files = files
        self.text = {f.path: f.text for f in files}
        self.diags: list[Diagnostic] = []
        self.items: list[ast.Item] = [it for f in files for it in f.items]
        self.models: dict[str, ast.ModelDecl] = {}
        self.lexicons: dict[str, ast.Lexicon] = {}
        # field path -> (literal kind, span) first seen; currency -> span
        # field path -> [(literal kind or currency, where, the actions the rule applies to (None: all))]
        self.field_kinds: dict[str, FieldUses] = defaultdict(FieldUses)
        self.field_currencies: dict[str, FieldUses] = defaultdict(FieldUses)
        self.scope: frozenset[str] | None = None  # actions of the rule being checked
        self.unknown_refs: dict[tuple[str, str], list[ast.Span]] = defaultdict(list)

    # ------------------------------------------------------------------ helpers
    def add(self, code: str, span: ast.Span, message: str, hint: str | None = None, *, warning: bool = False,
            info: bool = False) -> None:
        self.diags.append(Diagnostic(
            file=span.file, line=span.line, col=span.col, end_line=span.end_line, end_col=span.end_col, code=code,
            severity="info" if info else "warning" if warning else "error", message=message, hint=hint,
            source_line=source_line(self.text.get(span.file, ""), span.line),
        ))

    def run(self) -> list[Diagnostic]:
        self.check_headers()
        self.collect_definitions()
        for it in self.items:
            self.check_item(it)
        self.check_routes()
        self.check_limits()
        self.check_actions()
        self.check_urls()
        self.check_unattended()
        self.report_unknown()
        self.diags.sort(key=lambda d: (d.file, d.line, d.col, d.code))
        return self.diags

    # ------------------------------------------------------------------ header
    def check_headers(self) -> None:
        headers = [it for it in self.items if isinstance(it, ast.PolicyDecl)]
        if not headers and self.files:
            f = self.files[0]
            self.add("W110", ast.Span(f.path, 1, 1, 1, 2), "the policy set has no `policy` header",
                     f'start one file with `policy "{Path(f.path).stem}" version 1`; decisions carry its name and version',
                     warning=True)
        for h in headers[1:]:
            first = headers[0]
            if (h.name, h.version) != (first.name, first.version):
                self.add("E111", h.span, f"conflicting policy header: {h.name!r} version {h.version} "
                         f"(already {first.name!r} version {first.version} at {_where(first.span)})",
                         "a policy set has exactly one `policy \"name\" version N`; remove this one")
            else:
                self.add("W112", h.span, f"duplicate policy header (already at {_where(first.span)})",
                         "remove the repeated header", warning=True)

    # ------------------------------------------------------------------ definitions
    def collect_definitions(self) -> None:
        for it in self.items:
            if isinstance(it, ast.ModelDecl):
                prev = self.models.get(it.name.value)
                if prev is not None:
                    self.add("E201", it.name.span, f"model `{it.name.value}` is already declared at {_where(prev.span)}",
                             "rename one of them or delete the duplicate")
                else:
                    self.models[it.name.value] = it
            elif isinstance(it, ast.Lexicon):
                prev_l = self.lexicons.get(it.name.value)
                if prev_l is not None:
                    self.add("E207", it.name.span,
                             f"lexicon `{it.name.value}` is already declared at {_where(prev_l.span)}",
                             "merge the phrases into one lexicon")
                else:
                    self.lexicons[it.name.value] = it

    # ------------------------------------------------------------------ items
    def check_contradictions(self, it: ast.Item) -> None:
        """W239: a condition (or a conjunction inside it) that no value satisfies."""
        cond = getattr(it, "cond", None)
        for c in contradictions(cond):
            others = " and ".join(f"`{fmt.expr(x)}`" + (f" (line {x.span.line})" if x.span.line != c.atom.span.line else "")
                               for x in c.earlier)
            if not c.whole:
                what = "this part of the condition is never true"
            elif isinstance(it, ast.Authorize | ast.Route | ast.AllowChoice):
                what = "this rule never applies"
            else:  # restrictive rules fire on an undecidable condition
                what = f"this rule fires only when `{c.path}` is missing or undecidable (fail-safe)"
            example = (f"e.g. {c.path} = {c.example} satisfies {others} but not `{fmt.expr(c.atom)}`"
                       if c.example is not None else f"no value of `{c.path}` satisfies {others} either")
            self.add("W239", c.atom.span, f"no value of `{c.path}` satisfies `{fmt.expr(c.atom)}` and {others}: {what}",
                     f"{example}; fix the comparison, or join them with `or`", warning=True)

    def check_item(self, it: ast.Item) -> None:
        if getattr(it, "cond", None) is not None:
            self.check_contradictions(it)
        acts = getattr(it, "actions", None)
        if isinstance(it, ast.Route | ast.AllowChoice | ast.Limit):
            self.scope = frozenset({"chat"})
        else:
            self.scope = frozenset(n.value for n in acts) if acts is not None else None
        if isinstance(it, ast.ModelDecl):
            self.check_model(it)
        elif isinstance(it, ast.Lexicon):
            if not it.phrases:
                self.add("E208", it.span, f"lexicon `{it.name.value}` is empty", "list at least one phrase")
            seen: set[str] = set()
            for p in it.phrases:
                self.secret(p)
                if not p.value.strip():
                    self.add("E208", p.span, "empty phrase in lexicon", "remove the empty string")
                elif p.value.lower() in seen:
                    self.add("W209", p.span, f"phrase {p.value!r} is listed twice", "remove the repeat", warning=True)
                seen.add(p.value.lower())
        elif isinstance(it, ast.Route):
            self.ref_model(it.primary)
            for m in it.fallback or ():
                self.ref_model(m)
            if it.cond is not None:
                self.check_expr(it.cond)
        elif isinstance(it, ast.AllowChoice):
            if not it.models:
                self.add("E242", it.span, "empty model allowlist", "list the models users may choose")
            self.dupes(it.models, "model")
            for m in it.models:
                self.ref_model(m)
            if it.cond is not None:
                self.check_expr(it.cond)
        elif isinstance(it, ast.Authorize | ast.Deny | ast.RequireApproval):
            self.dupes(it.actions, "action")
            if it.cond is not None:
                self.check_expr(it.cond)
            if isinstance(it, ast.RequireApproval):
                self.check_hold(it.hold or ())
                self.check_chat_mode(it.actions, it.hold or (), it.span, implicit_review=False)
        elif isinstance(it, ast.Escalate):
            if it.actions:
                self.dupes(it.actions, "action")
            self.check_expr(it.cond)
            self.check_hold(it.hold or ())
            self.check_chat_mode(it.actions, it.hold or (), it.span, implicit_review=it.actions is None)
        elif isinstance(it, ast.Verify):
            self.check_verify(it)
        elif isinstance(it, ast.Limit):
            self.check_limit(it)

    # ------------------------------------------------------------------ limits and budgets
    def check_limit(self, lm: ast.Limit) -> None:
        what = "budget" if lm.kind == "spend" else f"{lm.kind} limit"
        amount = lm.amount.value[0] if lm.kind == "spend" else lm.amount.value  # type: ignore[index]
        if amount <= 0:  # type: ignore[operator]
            self.add("E280", lm.amount.span, f"this {what} of {lm.amount.raw} never admits a request",
                     "a limit is a positive amount; to refuse outright write `deny chat when ...`")
        w = lm.window.value
        if w not in WINDOWS:
            try:
                secs = parse_duration(w)
            except ValueError:
                close = _close(w.rstrip("s"), WINDOWS)
                self.add("E281", lm.window.span, f"unknown window `{w}`",
                         f"did you mean `{close}`?" if close else
                         f"one of: {', '.join(WINDOWS)}, or a duration such as 10s, 5m")
                secs = None
            if secs is not None and (secs < 1 or secs != secs.to_integral_value()):
                self.add("E281", lm.window.span, f"window {w} is not a whole number of seconds (at least 1s)",
                         "counters count whole seconds: write 1s or longer")
        elif lm.kind == "spend" and w in ("second", "minute"):
            self.add("W288", lm.window.span, f"a budget per {w}: money is usually budgeted per day, week or month",
                     "for a rate, write `limit requests N per minute` or `limit tokens N per minute`", warning=True)
        seen: set[str] = set()
        for n in lm.scope:
            if n.value not in LIMIT_SCOPES:
                close = _close(n.value, LIMIT_SCOPES)
                self.add("E282", n.span, f"a limit cannot be counted per `{n.value}`",
                         f"did you mean `{close}`?" if close else f"one of: {', '.join(LIMIT_SCOPES)}")
            elif n.value in seen:
                self.add("W231", n.span, f"scope `{n.value}` is listed twice in this limit", "remove the repeat",
                         warning=True)
            seen.add(n.value)
        for m in lm.models or ():
            self.ref_model(m)
        if lm.models is not None:
            self.dupes(lm.models, "model")
        if lm.cond is not None:
            self.check_expr(lm.cond)
        actions = [li for li in lm.items or () if li.kind == "action"]
        for extra in actions[1:]:
            self.add("E285", extra.span, f"a second action at the limit (first at line {actions[0].span.line})",
                     "a limit has one action: `at N% deny`, `at N% prefer self_hosted` or `at N% require approval`")
        outages = [li for li in lm.items or () if li.kind == "outage"]
        for extra in outages[1:]:
            self.add("E233", extra.span, "`on outage` is given twice in this block", "keep one")
        for li in lm.items or ():
            if li.percent is not None and li.percent <= 0:
                self.add("E285", li.span, f"threshold {li.raw} must be above 0%", "e.g. at 80% notify ...")
            for c in li.channels:
                self.check_channel(c)
            cap = actions[0] if actions else ast.LimitItem("action", Decimal(100), "100%", action="deny")
            if li.kind == "notify" and li.percent is not None and cap.percent is not None \
                    and li.percent > cap.percent and cap.action == "deny":
                self.add("W286", li.span, f"notice at {li.raw} never sent: requests are refused from {cap.raw}",
                         "notify below the limit, e.g. at 80%", warning=True)

    def check_limits(self) -> None:
        """Set-wide: one currency for every budget and priced model it counts; budgets that can be charged;
        a cost-0 model to reroute to."""
        budgets = [it for it in self.items if isinstance(it, ast.Limit) and it.kind == "spend"]
        limits = [it for it in self.items if isinstance(it, ast.Limit)]
        currencies: dict[str, ast.Limit] = {}
        for b in budgets:
            cur = b.amount.value[1]  # type: ignore[index]
            first = next(iter(currencies.values()), None)
            if currencies and cur not in currencies and first is not None:
                self.add("E284", b.amount.span, f"mixed currencies: this budget is in {cur}, the budget at "
                         f"{_where(first.span)} in {first.amount.value[1]}",  # type: ignore[index]
                         "money is never converted: budget every model in one currency")
            currencies.setdefault(cur, b)
            priced = [m for m in (b.models or ()) if m.value in self.models] if b.models is not None else None
            for m in priced or ():
                spec = self.models[m.value]
                amount, _per, mcur = self._cost(spec)
                if amount == 0:
                    self.add("E283", m.span, f"budget on model `{m.value}`, which has no cost: nothing is ever "
                             "charged to it", f"give `{m.value}` a price (`cost 0.5 {cur} per 1k tokens`), or "
                             "limit its requests or tokens instead")
                elif mcur is not None and mcur != cur:
                    self.add("E284", m.span, f"mixed currencies: model `{m.value}` costs {mcur}, this budget is "
                             f"in {cur}", "money is never converted: price the model in the budget's currency")
            if b.models is None:
                models = list(self.models.values())
                if models and all(self._cost(md)[0] == 0 for md in models):
                    self.add("W287", b.span, "budget in a policy set where every model costs 0: nothing is ever "
                             "charged", "give the managed models a `cost`", warning=True)
                for md in models:
                    amount, _per, mcur = self._cost(md)
                    if amount and mcur is not None and mcur != cur:
                        self.add("E284", b.amount.span, f"mixed currencies: model `{md.name.value}` costs {mcur}, "
                                 f"this budget counts every model in {cur}",
                                 f"price `{md.name.value}` in {cur}, or add `on model ...` to the budget")
                        break
        free = [m for m in self.models.values() if self._cost(m)[0] == 0]
        for lm in limits:
            for li in lm.items or ():
                if li.kind == "action" and li.action == "prefer_self_hosted" and not free:
                    self.add("E289", li.span, "`prefer self_hosted` at the limit, but no model costs 0",
                             "declare a self-hosted model (`cost 0`) to reroute to, or `at 100% deny`")

    @staticmethod
    def _cost(m: ast.ModelDecl) -> tuple[Decimal, int, str | None]:
        for p in m.props:
            if p.key == "cost":
                return p.value  # type: ignore[return-value]
        return Decimal(0), 1000, None

    def dupes(self, names: tuple[ast.Name, ...], what: str) -> None:
        seen: set[str] = set()
        for n in names:
            if n.value in seen:
                self.add("W231", n.span, f"{what} `{n.value}` is listed twice in this rule", "remove the repeat",
                         warning=True)
            seen.add(n.value)

    def ref_model(self, n: ast.Name) -> None:
        if n.value not in self.models:
            self.unknown_refs[("model", n.value)].append(n.span)

    def report_unknown(self) -> None:
        for (kind, name), spans in self.unknown_refs.items():
            first, rest = spans[0], spans[1:]
            also = f" (also used at {', '.join(_where(s) for s in rest)})" if rest else ""
            if kind == "model":
                close = _close(name, self.models)
                hint = f"did you mean `{close}`?" if close else (
                    f"declare it: model {name} {{ provider openai base_url env(\"...\") }}")
                self.add("E210", first, f"unknown model `{name}`{also}", hint)
            else:
                close = _close(name, self.lexicons)
                hint = f"did you mean `{close}`?" if close else f'declare it: lexicon {name} ["...", "..."]'
                self.add("E211", first, f"unknown lexicon `{name}`{also}", hint)

    # ------------------------------------------------------------------ models
    def check_model(self, m: ast.ModelDecl) -> None:
        seen: dict[str, ast.Prop] = {}
        deployments: dict[str, ast.DeploymentDecl] = {}
        provider: str | None = None
        bad_provider = False
        for p in m.props:
            if p.key in KEY_PROPS_ONCE and p.key in seen:
                self.add("E202", p.span, f"`{p.key}` is set twice for model `{m.name.value}` "
                         f"(first at line {seen[p.key].span.line})", "keep one")
            seen.setdefault(p.key, p)
            if p.key == "provider":
                provider = p.value.value  # type: ignore[union-attr]
                if provider not in PROVIDERS:
                    bad_provider = True
                    close = _close(provider, PROVIDERS)
                    self.add("E203", p.value.span, f"unknown provider `{provider}`",  # type: ignore[union-attr]
                             f"did you mean `{close}`?" if close else f"one of: {', '.join(PROVIDERS)}")
            elif p.key == "api":
                api = p.value.value  # type: ignore[union-attr]
                if api not in API_KINDS:
                    close = _close(api, API_KINDS)
                    self.add("E203", p.value.span, f"unknown api `{api}`",  # type: ignore[union-attr]
                             f"did you mean `{close}`?" if close else f"one of: {', '.join(API_KINDS)}")
            elif p.key == "keys":
                for k in p.value:  # type: ignore[union-attr]
                    if isinstance(k, ast.Str):
                        self.add("E204", k.span, "API key written as a literal string",
                                 'secrets are never written in a policy: use env("NAME") and set NAME in the environment')
                if not p.value:
                    self.add("E206", p.span, "empty key list", "list env(\"NAME\") references or remove `keys`")
            elif p.key in ("base_url", "project", "model_id", "region"):
                v = p.value
                if isinstance(v, ast.Str):
                    self.secret(v)
            elif p.key == "header":
                hname, hval = p.value  # type: ignore[misc]
                secret_name = SECRET_HEADER_RE.search(hname) is not None
                if isinstance(hval, ast.Str) and (secret_name or SECRET_RE.search(hval.value)):
                    self.add("E204", hval.span, f"secret header `{hname}` written as a literal string",
                             'use env("NAME") for the value')
            elif p.key == "cost":
                amount, per, _currency = p.value  # type: ignore[misc]
                if amount < 0:
                    self.add("E206", p.span, f"cost {amount} is negative", "cost is >= 0 (0 = self-hosted)")
                if per <= 0:
                    self.add("E206", p.span, "cost unit must be positive", "write `per 1k tokens`")
            elif p.key == "serves":
                if not p.value:
                    self.add("E216", p.span, "empty `serves` list", "write serves [chat], serves [embeddings] or both")
                for n in p.value:  # type: ignore[union-attr]
                    if n.value not in SERVED_KINDS:
                        close = _close(n.value, SERVED_KINDS)
                        self.add("E216", n.span, f"unknown kind `{n.value}` in serves",
                                 f"did you mean `{close}`?" if close else f"one of: {', '.join(SERVED_KINDS)}")
            elif p.key == "context":
                if p.value <= 0:  # type: ignore[operator]
                    self.add("E206", p.span, "context window must be a positive number of tokens",
                             "e.g. context 32768")
            elif p.key == "deployment":
                self.check_deployment(m, p.value, deployments)  # type: ignore[arg-type]
            elif p.key == "balance":
                strategy = p.value.value  # type: ignore[union-attr]
                if strategy not in BALANCE_STRATEGIES:
                    close = _close(strategy, BALANCE_STRATEGIES)
                    self.add("E293", p.value.span, f"unknown balance strategy `{strategy}`",  # type: ignore[union-attr]
                             (f"did you mean `{close}`? " if close else "")
                             + "strategies: " + ", ".join(BALANCE_STRATEGIES))
            elif p.key == "health":
                self.check_health(p.value)  # type: ignore[arg-type]
            elif p.key == "timeout":
                kinds: set[str] = set()
                for t in p.value:  # type: ignore[union-attr]
                    if t.kind in kinds:
                        self.add("E202", t.span, f"timeout `{t.kind}` is set twice", "keep one")
                    kinds.add(t.kind)
                    if t.seconds <= 0:
                        self.add("E206", t.span, f"timeout {t.kind} {t.raw} must be longer than zero", "e.g. 10s")
        if "balance" in seen and len(deployments) < 2:
            self.add("W298", seen["balance"].span, f"`balance` has no effect: model `{m.name.value}` has "
                     f"{'one deployment' if deployments else 'no deployments'}",
                     "declare two or more `deployment NAME { base_url ... }` blocks, or remove `balance`", warning=True)
        if provider is None:
            self.add("E205", m.name.span, f"model `{m.name.value}` has no provider",
                     f"add `provider openai` (or one of: {', '.join(PROVIDERS)})")
        elif not bad_provider:
            prov = Provider(provider)
            # with deployments, a base_url (region) may be given by every deployment instead of the model
            lacking = [d for d in deployments.values() if not any(q.key == "base_url" for q in d.props)]
            if (prov.openai_compatible or prov is Provider.anthropic) and "base_url" not in seen \
                    and (not deployments or lacking):
                where = lacking[0].name.span if deployments else m.name.span
                self.add("E205", where, f"model `{m.name.value}` ({provider}) has no base_url"
                         + (f" for deployment `{lacking[0].name.value}`" if deployments else ""),
                         f'add base_url env("{_env_name(m.name.value)}_URL")'
                         + (" to the model or to the deployment" if deployments else ""))
            api_prop = seen.get("api")
            if api_prop is not None and api_prop.value.value == "native" \
                    and provider not in NATIVE_API_PROVIDERS:  # type: ignore[union-attr]
                self.add("E206", api_prop.span, f"`api native` is not available for provider {provider}",
                         f"only {', '.join(sorted(NATIVE_API_PROVIDERS))} has a native API here; remove `api native`")
            no_region = [d for d in deployments.values() if not any(q.key == "region" for q in d.props)]
            if prov is Provider.bedrock and "region" not in seen and (not deployments or no_region):
                self.add("E205", no_region[0].name.span if deployments else m.name.span,
                         f"bedrock model `{m.name.value}` has no region", 'add region "eu-west-2" (or your region)')
            if prov is Provider.vertex and "project" not in seen:
                self.add("E205", m.name.span, f"vertex model `{m.name.value}` has no project",
                         'add project env("GCP_PROJECT")')

    def check_deployment(self, m: ast.ModelDecl, d: ast.DeploymentDecl, seen: dict[str, ast.DeploymentDecl]) -> None:
        """One `deployment` block: a unique name in its model, each property once, weight > 0,
        max_concurrency a positive integer, secrets only by env()."""
        prev = seen.get(d.name.value)
        if prev is not None:
            self.add("E290", d.name.span, f"deployment `{d.name.value}` is already declared in model "
                     f"`{m.name.value}` (line {prev.span.line})", "give each deployment of a model its own name")
        else:
            seen[d.name.value] = d
        props: dict[str, ast.Prop] = {}
        for p in d.props:
            if p.key in DEPLOYMENT_PROPS_ONCE and p.key in props:
                self.add("E202", p.span, f"`{p.key}` is set twice for deployment `{d.name.value}` "
                         f"(first at line {props[p.key].span.line})", "keep one")
            props.setdefault(p.key, p)
            v = p.value
            if p.key == "weight":
                if v.value <= 0:  # type: ignore[union-attr, operator]
                    self.add("E291", v.span, f"deployment weight {v.raw} must be greater than zero",  # type: ignore[union-attr]
                             "a weight is a share of traffic, e.g. weight 3; to take a deployment out, remove it")
            elif p.key == "max_concurrency":
                n = v.value  # type: ignore[union-attr]
                if n <= 0 or n != n.to_integral_value():  # type: ignore[union-attr, operator]
                    self.add("E292", v.span, f"max_concurrency {v.raw} must be a whole number of at least 1",  # type: ignore[union-attr]
                             "e.g. max_concurrency 16 (requests in flight per gateway replica); omit it for no limit")
            elif p.key == "keys":
                for k in v:  # type: ignore[union-attr]
                    if isinstance(k, ast.Str):
                        self.add("E204", k.span, "API key written as a literal string",
                                 'secrets are never written in a policy: use env("NAME") and set NAME in the environment')
                if not v:
                    self.add("E206", p.span, "empty key list", "list env(\"NAME\") references or remove `keys`")
            elif p.key in ("base_url", "region") and isinstance(v, ast.Str):
                self.secret(v)

    def check_health(self, h: ast.HealthDecl) -> None:
        """`health "PATH" every D`: a path (not a URL: the probe goes to the model's own server), D > 0."""
        if h.path is not None:
            path = h.path.value
            if "://" in path or not path.strip() or any(c.isspace() for c in path) or "?" in path:
                self.add("E294", h.path.span, f"health path {path!r} is not a path",
                         'write a path: "/health" (from the server root) or "models" (after the base_url)')
            elif SECRET_RE.search(path):
                self.secret(h.path)
        if h.every is not None and h.every.value <= 0:  # type: ignore[operator]
            self.add("E294", h.every.span, f"health check every {h.every.raw} must be longer than zero", "e.g. every 10s")

    def secret(self, s: ast.Str) -> None:
        if SECRET_RE.search(s.value):
            self.add("E204", s.span, "this string looks like a secret (API key or token)",
                     'never write secrets in a policy: use env("NAME")')
        elif (what := url_secret(s.value)) is not None:
            self.add("E204", s.span, f"{what} is a secret written literally in this URL",
                     'never write secrets in a policy: give the whole URL as env("NAME") '
                     '(e.g. base_url env("QWEN_URL")) and set NAME in the environment')

    # ------------------------------------------------------------------ holds
    def check_hold(self, hold: tuple[ast.HoldItem, ...]) -> None:
        seen: dict[str, ast.HoldItem] = {}
        for h in hold:
            if h.kind in seen and h.kind != "notify":
                self.add("E233", h.span, f"`{h.kind}` is given twice in this block (first at line "
                         f"{seen[h.kind].span.line})", "keep one")
            seen.setdefault(h.kind, h)
            if h.kind in ("remind", "timeout") and (h.seconds or 0) <= 0:
                self.add("E235", h.span, f"{h.kind} {h.raw} must be longer than zero", "e.g. 1h")
            if h.group and SECRET_RE.search(h.group):
                self.secret(ast.Str(h.group, h.span))
            if h.kind == "reviewers" and not (h.group or "").strip():
                self.add("E236", h.span, "empty reviewer group", 'e.g. reviewers group "refunds"')
            if h.kind == "notify":
                for c in h.channels:
                    self.check_channel(c)
        r, t = seen.get("remind"), seen.get("timeout")
        if r and t and r.seconds and t.seconds and 0 < t.seconds <= r.seconds:
            self.add("W234", r.span, f"reminder every {r.raw} never fires before the {t.raw} timeout",
                     "remind more often than the timeout", warning=True)

    def check_chat_mode(self, actions: tuple[ast.Name, ...] | None, hold: tuple[ast.HoldItem, ...], span: ast.Span,
                        *, implicit_review: bool) -> None:
        """`on chat ...` only means something where the rule applies to chat; an escalation that
        names no action applies to chat too, and should say what a hold means there."""
        mode = next((h for h in hold if h.kind == "chat"), None)
        if mode is not None and actions is not None and "chat" not in {a.value for a in actions}:
            self.add("W251", mode.span, "`on chat` has no effect: this rule does not apply to chat requests",
                     "remove it, or add chat to the rule's actions", warning=True)
        # a policy set with no route serves no chat: its escalations only ever see actions
        if implicit_review and mode is None and any(isinstance(it, ast.Route) for it in self.items):
            self.add("W250", span, "this escalation names no action, so it also applies to chat requests: a "
                     "matching chat is answered and sent for review (the default)",
                     "say so with `{ on chat review }`, hold the chat before the model is called with "
                     "`{ on chat hold }`, refuse it with `{ on chat block }`, or scope the rule with `for ...`",
                     warning=True)

    def check_channel(self, c: ast.Channel) -> None:
        t = c.target
        ok = {
            "slack": lambda: t.startswith(("#", "@")) or re.fullmatch(r"[CDGU][A-Z0-9]{6,}", t) is not None
            or t.startswith(("https://hooks.slack.com/", "env:")),
            "teams": lambda: t.startswith(("https://", "env:")) or bool(t),
            "email": lambda: re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", t) is not None,
            "webhook": lambda: t.startswith(("https://", "http://", "env:")),
        }[c.kind]()
        if not ok:
            hint = {"slack": 'a channel "#name", a user "@name" or a channel id',
                    "email": 'an address like "refunds@example.com"',
                    "webhook": 'an URL "https://..."', "teams": "a Teams incoming-webhook URL"}[c.kind]
            self.add("E237", c.span, f"invalid {c.kind} target {t!r}", hint)
        if SECRET_RE.search(t) or "hooks.slack.com/services/" in t or url_secret(t) is not None:
            self.add("E204", c.span, f"{c.kind} target contains a secret URL or token",
                     'configure the secret webhook in the notifier settings (env) and name the channel here')

    # ------------------------------------------------------------------ verify
    def check_verify(self, v: ast.Verify) -> None:
        if v.actions:
            self.dupes(v.actions, "action")
        self.check_expr(v.cond)
        for m in v.models:
            self.ref_model(m)
            if m.value in self.models and "chat" not in self.served(m.value):
                self.add("E217", m.span, f"verification asks `{m.value}` for an answer, but it serves only "
                         "embeddings", "verify with two models that serve chat")
        names = [m.value for m in v.models]
        if len(set(names)) < 2:
            self.add("E240", v.models[0].span, "dual-model verification needs two different models",
                     "e.g. with qwen-72b, gemma-27b")
        e = v.escalate
        if not (isinstance(e, ast.Cmp) and e.path.value in ("divergence", "signals.divergence")
                and e.op in (">", ">=") and e.value.kind == "num"):
            self.add("E241", e.span, f"verification escalates on `divergence > N`, not `{fmt.expr(e)}`",
                     "write: escalate when divergence > 0.25")
        else:
            self.check_expr(e)
        if v.judge is not None:
            self.check_judge(v)
        self.check_hold(v.hold)

    def check_judge(self, v: ast.Verify) -> None:
        """`judge M [fallback [N, ...]] [timeout D]`, for the judge and each fallback: E252 an
        unknown model (did you mean), E253 one of the models it compares, E213 a model twice in
        the judge's chain, E217 an embeddings-only model, W254 a model of the same family as a
        compared one; E255 a timeout outside (0, 5m]."""
        j = v.judge
        assert j is not None
        compared = [m.value for m in v.models]
        seen: set[str] = set()
        for n in (j.model, *j.fallback):
            name, what = n.value, ("judge" if n is j.model else "judge's fallback")
            if name in seen:
                self.add("E213", n.span, f"`{name}` appears twice in the judge's chain", "remove the repeat")
                continue
            seen.add(name)
            if name not in self.models:
                close = _close(name, [m for m in self.models if m not in compared])
                self.add("E252", n.span, f"unknown {what} model `{name}`",
                         f"did you mean `{close}`?" if close else
                         f"declare it: model {name} {{ provider openai base_url env(\"...\") }}")
            elif name in compared:
                other = self._judge_candidate(compared)
                self.add("E253", n.span, f"the {what} `{name}` is one of the models it compares: a model cannot "
                         "referee its own answer (it tends to agree with itself), so the verdict would not be "
                         "independent", f"judge with a third model, e.g. `judge {other}`" if other else
                         "declare a third model to judge")
            elif "chat" not in self.served(name):
                self.add("E217", n.span, f"the {what} `{name}` serves only embeddings; it must answer in chat",
                         "judge with a model that serves chat")
            else:
                fam = self._family(name)
                same = [m for m in compared if fam is not None and self._family(m) == fam]
                if same:
                    other = self._judge_candidate(compared)
                    self.add("W254", n.span, f"the {what} `{name}` and `{same[0]}` are both {fam} models: models "
                             "of one lineage share blind spots, so the judge may miss what that model gets wrong",
                             f"judge with a model of another family, e.g. `judge {other}`" if other else
                             "judge with a model of another family", warning=True)
        if j.seconds is not None and not 0 < float(j.seconds) <= MAX_JUDGE_TIMEOUT_S:
            self.add("E255", j.timeout_span, f"judge timeout {j.raw} is outside (0, {MAX_JUDGE_TIMEOUT_S:g}s]: the answer "
                     "waits for the verdict, so the wait must be bounded and above zero",
                     f"e.g. judge {j.model.value} timeout 20s")

    def _family(self, model: str) -> str | None:
        decl = self.models.get(model)
        mid = next((getattr(p.value, "value", None) for p in decl.props if p.key == "model_id"), None) \
            if decl is not None else None
        return model_family(model, mid if isinstance(mid, str) else None)

    def _judge_candidate(self, compared: list[str]) -> str | None:
        """A declared chat model of a family none of `compared` is from (for hints), if any."""
        fams = {self._family(m) for m in compared}
        for m in sorted(self.models):
            if m not in compared and "chat" in self.served(m) and (self._family(m) not in fams
                                                                 or self._family(m) is None):
                return m
        return None

    # ------------------------------------------------------------------ conditions
    def atoms(self, e: ast.Expr) -> Iterator[ast.Expr]:
        if isinstance(e, ast.And | ast.Or):
            for x in e.items:
                yield from self.atoms(x)
        elif isinstance(e, ast.Not):
            yield from self.atoms(e.item)
        else:
            yield e

    def check_expr(self, e: ast.Expr) -> None:
        currencies: dict[str, tuple[str, ast.Span]] = {}
        for a in self.atoms(e):
            path = a.path.value  # type: ignore[union-attr]
            if unknown_builtin(path):
                head = path.split(".", 1)[0]
                close = _close(path, [k for k in BUILTIN if k.startswith(head + ".")])
                self.add("E222", a.path.span, f"unknown field `{path}`",  # type: ignore[union-attr]
                         f"did you mean `{close}`?" if close else f"fields of `{head}`: "
                         + ", ".join(k for k in BUILTIN if k.startswith(head + ".")))
                continue
            kind, _key = classify(path)
            if isinstance(a, ast.Mentions):
                if a.lexicon.value not in self.lexicons:
                    self.unknown_refs[("lexicon", a.lexicon.value)].append(a.lexicon.span)
                if a.mode is not None and a.mode.value not in MENTION_MODES:
                    close = _close(a.mode.value, list(MENTION_MODES))
                    self.add("E225", a.mode.span, f"unknown mention mode `{a.mode.value}`",
                             (f"did you mean `{close}`? " if close else "")
                             + "modes: `by words`, `by intent`, `by both` (the default)")
                elif a.mode is not None and a.mode.value != "words" and a.lexicon.value not in INTENT_LEXICONS:
                    self.add("E226", a.mode.span, f"lexicon `{a.lexicon.value}` has no intent model: "
                             f"`by {a.mode.value}` cannot be decided",
                             "write `by words`, or name the lexicon after a topic with an intent model: "
                             + ", ".join(sorted(INTENT_LEXICONS)))
                if kind == "signal" or BUILTIN_TYPES.get(path) == "num":
                    self.add("E220", a.path.span, f"`{path}` is a number: `mentions` looks in text",
                             "write `text mentions LEXICON`")
                continue
            if isinstance(a, ast.Truthy):
                if kind == "signal":
                    self.add("E220", a.path.span, f"signal `{path}` is a number, not a condition",
                             f"compare it: {path} < 0.5")
                elif kind == "builtin" and path != "text":
                    self.add("E220", a.path.span, f"`{path}` is not a boolean",
                             f'compare it: {path} == "..."')
                continue
            vals = (a.value,) if isinstance(a, ast.Cmp) else a.values  # type: ignore[union-attr]
            for v in vals:
                if v.kind == "str" and SECRET_RE.search(str(v.value)):
                    self.secret(ast.Str(str(v.value), v.span))
            op = a.op if isinstance(a, ast.Cmp) else ("not in" if a.negated else "in")  # type: ignore[union-attr]
            if not self.check_types(a, kind, path, op, vals):
                continue
            for v in vals:
                if v.kind == "money":
                    cur = v.value[1]  # type: ignore[index]
                    prev = currencies.get(path)
                    if prev and prev[0] != cur:
                        self.add("E224", v.span, f"currency mismatch: `{path}` compared with {cur} here and "
                                 f"{prev[0]} at column {prev[1].col}",
                                 "one condition compares one currency; amounts are never converted "
                                 "(a value in the other currency makes the condition undecidable)")
                        continue  # one root cause: no W223 on top of E224
                    currencies.setdefault(path, (cur, v.span))
                    clash = self.clash(self.field_currencies[path], cur)
                    if clash is not None:
                        other, osp = clash
                        self.add("W223", v.span, f"`{path}` is compared in {cur} here but in {other} at "
                                 f"{_where(osp)}", f"amounts are never converted: a value in {other} is undecidable "
                                 f"here (and one in {cur} there), and undecidable means held (fail-safe). "
                                 "Use one currency, or accept that other currencies are always held",
                                 warning=True)
                    self.field_currencies[path].append((cur, v.span, self.scope))

    def check_types(self, a: ast.Expr, kind: str, path: str, op: str, vals: tuple[ast.Value, ...]) -> bool:
        kinds = {v.kind for v in vals}
        if not vals:
            self.add("E220", a.span, "empty list", "list at least one value")
            return False
        if len(kinds) > 1:
            self.add("E220", vals[1].span, f"list mixes {' and '.join(sorted(kinds))} values", "use one type")
            return False
        lk = vals[0].kind
        v0 = vals[0]
        ordering = op in ("<", "<=", ">", ">=")
        if ordering and lk in ("str", "bool"):
            self.add("E220", v0.span, f"`{op}` compares numbers, money or durations, not {_kind_name(lk)}",
                     "use == / != / in for text and booleans")
            return False
        if kind == "signal":
            if lk != "num":
                self.add("E220", v0.span, f"signal `{path}` is a number in [0, 1]; compared with {_kind_name(lk)}",
                         f"e.g. {path} < 0.3")
                return False
            for v in vals:
                if not (Decimal(0) <= v.value <= Decimal(1)):  # type: ignore[operator]
                    self.add("E221", v.span, f"threshold {v.raw} is out of range for `{path}`",
                             f"{path} is between 0 and 1")
            return True
        if kind == "builtin":
            want = BUILTIN_TYPES[path]
            have = "num" if lk == "num" else lk
            if have != want:
                self.add("E220", v0.span, f"`{path}` is {_kind_name(want)}; compared with {_kind_name(lk)}",
                         f'e.g. {path} == "enterprise"' if want == "str" else f"e.g. {path} > 30000")
                return False
            if path == "requested_model":
                for v in vals:
                    if v.value not in self.models:
                        self.unknown_refs[("model", str(v.value))].append(v.span)
            return True
        clash = self.clash(self.field_kinds[path], lk, compatible={"num", "duration"})
        if clash is not None:
            self.add("E220", v0.span, f"`{path}` is compared with {_kind_name(lk)} here but with "
                     f"{_kind_name(clash[0])} at {_where(clash[1])}",
                     "a field has one type for an action; rename one of them if they are different things")
            return False
        self.field_kinds[path].append((lk, v0.span, self.scope))
        return True

    def clash(self, seen: FieldUses, kind: str, compatible: set[str] | None = None) -> tuple[str, ast.Span] | None:
        """The first earlier use of the field with another kind, by a rule that can apply to the same action."""
        return seen.first_clash(kind, self.scope, compatible)

    # ------------------------------------------------------------------ routes
    def served(self, name: str) -> frozenset[str]:
        """What model `name` serves as declared (`serves [...]`; chat when it says nothing or is
        not declared: an unknown model is reported once, as E210)."""
        m = self.models.get(name)
        for p in m.props if m is not None else ():
            if p.key == "serves":
                return frozenset(n.value for n in p.value if n.value in SERVED_KINDS)  # type: ignore[union-attr]
        return frozenset({"chat"})

    def check_serves(self, primary: ast.Name, others: tuple[ast.Name, ...], what: str) -> None:
        """E217: a chain that sends a request to a model that does not serve its kind (chat to an
        embeddings-only model, or embeddings to a chat-only one)."""
        kinds = self.served(primary.value)
        for n in others:
            theirs = self.served(n.value)
            if kinds and theirs and not kinds & theirs:
                self.add("E217", n.span, f"{what} sends {' and '.join(sorted(kinds))} requests to `{n.value}`, "
                         f"which serves only {' and '.join(sorted(theirs))}",
                         f"use a model that serves {' or '.join(sorted(kinds))} here, or declare "
                         f"`serves [{', '.join(sorted(kinds | theirs))}]` on `{n.value}` if it answers both")

    def check_routes(self) -> None:
        routes = [it for it in self.items if isinstance(it, ast.Route)]
        defaults = [r for r in routes if r.cond is None]
        first_default: dict[str, ast.Route] = {}
        for d in defaults:
            kinds = self.served(d.primary.value)
            taken = [k for k in sorted(kinds) if k in first_default]
            if taken:
                first = first_default[taken[0]]
                self.add("E212", d.span, f"second `route default` for {' and '.join(taken)} requests "
                         f"(first at {_where(first.span)})",
                         "a policy set has one default route per kind of request (chat, embeddings); make this "
                         "one conditional with `route when ...`")
            for k in kinds:
                first_default.setdefault(k, d)
        for r in routes:
            self.check_serves(r.primary, tuple(r.fallback or ()), "this route")
        # what a conditional route without `fallback` inherits: the chat default's chain
        chat_default = next((d for d in defaults if "chat" in self.served(d.primary.value)), None)
        default_chain = (chat_default.primary, *(chat_default.fallback or ())) if chat_default else ()
        for r in routes:
            if r.hedge is not None:
                eff = r.fallback if r.fallback is not None else (default_chain if r.cond is not None else ())
                self.check_hedge(r, [n.value for n in (r.primary, *eff)])
            chain = [r.primary, *(r.fallback or ())]
            seen: dict[str, ast.Name] = {}
            for n in chain:
                if n.value in seen:
                    self.add("E213", n.span, f"fallback cycle: `{n.value}` falls back to itself",
                             f"remove `{n.value}` from the fallback list")
                seen.setdefault(n.value, n)
        conditional = [r for r in routes if r.cond is not None]
        # An earlier route can only shadow a later one if every test of the earlier one is
        # implied by the later one; index earlier routes by one `path == value` test so that
        # only plausible pairs are compared (thousands of tenant routes stay linear).
        by_key: dict[tuple[str, Any], list[int]] = defaultdict(list)
        unkeyed: list[int] = []
        for j, rj in enumerate(conditional):
            cands = set(unkeyed)
            for path, vals in _equalities(rj.cond).items():  # type: ignore[arg-type]
                for v in vals:
                    cands.update(by_key.get((path, v), ()))
            for i in sorted(cands):
                ri = conditional[i]
                if _implies(rj.cond, ri.cond):  # type: ignore[arg-type]
                    self.add("W214", rj.span, f"route never applies: the route at {_where(ri.span)} "
                             f"(`{fmt.expr(ri.cond)}`) matches first", "routes are first-match in file order: "  # type: ignore[arg-type]
                             "move this more specific route above it", warning=True)
                    break
            # index it under its least crowded equality (any one will do: a later route it shadows
            # implies all of them), so routes sharing a test (`tenant.tier == "enterprise" and
            # tenant.id == ...`) are not all compared with each other
            keys = _equality_conjuncts(rj.cond)  # type: ignore[arg-type]
            if not keys:
                unkeyed.append(j)
            elif any(vs for _p, vs in keys):  # (`x in []` is E220, and never true)
                path, vals = min(((p, vs) for p, vs in keys if vs),
                                 key=lambda k: sum(len(by_key.get((k[0], v), ())) for v in k[1]))
                for v in vals:
                    by_key[(path, v)].append(j)
        if conditional and not defaults:
            self.add("W215", conditional[0].span, "no `route default`: chat requests that match no route are denied",
                     "add: route default -> MODEL fallback [...]", warning=True)

    def check_hedge(self, r: ast.Route, chain: list[str]) -> None:
        """`hedge after D budget B`: D > 0, 0 < B <= 1, and something to hedge to (a second model in
        the chain, or a primary with more than one deployment)."""
        h = r.hedge
        assert h is not None
        if h.after.value <= 0:  # type: ignore[operator]
            self.add("E296", h.after.span, f"hedge after {h.after.raw} must be longer than zero",
                     "e.g. hedge after 300ms: about the p95 of the primary's time to first token")
        if h.budget is not None and not (0 < h.budget.value <= 1):  # type: ignore[operator]
            self.add("E295", h.budget.span, f"hedge budget {h.budget.raw} is outside (0%, 100%]",
                     "the budget is the most extra load hedging may add, e.g. budget 10% (or 0.1)")
        others = list(dict.fromkeys(chain))
        m = self.models.get(r.primary.value)
        if m is None:
            return  # E210 already
        n_deps = sum(1 for p in m.props if p.key == "deployment")
        if len(others) < 2 and n_deps < 2:
            self.add("W297", h.span, f"nothing to hedge to: the route has no fallback and `{r.primary.value}` has "
                     f"{'one deployment' if n_deps else 'no deployments'}",
                     "add a fallback [...] to the route or a second `deployment` to the model, or remove the hedge",
                     warning=True)

    # ------------------------------------------------------------------ actions
    def check_actions(self) -> None:
        uses: dict[str, list[tuple[str, ast.Name, Any]]] = defaultdict(list)
        for it in self.items:
            if isinstance(it, ast.Authorize):
                kind = "authorize"
            elif isinstance(it, ast.Deny):
                kind = "deny"
            elif isinstance(it, ast.RequireApproval):
                kind = "approval"
            elif isinstance(it, ast.Escalate | ast.Verify):
                kind = "escalate"
                if it.actions is None:
                    continue
            else:
                continue
            if getattr(it, "shadow", False):
                # a shadow rule enforces nothing: it conflicts with no rule and hides none (E230,
                # W238, W231 do not see it), but it does count as a use of its action names (W232)
                kind = f"shadow {kind}"
            for n in it.actions:  # type: ignore[union-attr]
                uses[n.value].append((kind, n, it))
        def pos(u: tuple[str, ast.Name, Any]) -> tuple[str, int, int]:
            return (u[1].span.file, u[1].span.line, u[1].span.col)

        for name, us in uses.items():
            auth = [u for u in us if u[0] == "authorize" and u[2].cond is None]
            deny = [u for u in us if u[0] == "deny" and u[2].cond is None]
            if deny:
                # an unconditional deny makes every other rule for the action dead
                for u in us:
                    if u[0] == "authorize":
                        if u[2].cond is None and pos(u) < pos(deny[0]):
                            self.add("E230", deny[0][1].span, f"`{name}` is both authorized and denied (other rule "
                                     f"at {_where(u[1].span)})", "deny always wins: remove one of the two rules")
                        else:
                            self.add("E230", u[1].span, f"`{name}` is authorized here but always denied at "
                                     f"{_where(deny[0][1].span)}", "deny always wins: remove one of the two rules")
                        break
                for u in us:
                    if u[0] in ("approval", "escalate"):
                        self.add("W238", u[1].span, f"this rule never applies: `{name}` is always denied at "
                                 f"{_where(deny[0][1].span)}", "remove it, or make the deny conditional",
                                 warning=True)
            for dup in auth[1:]:
                self.add("W231", dup[1].span, f"`{name}` is already authorized at {_where(auth[0][1].span)}",
                         "remove the repeat", warning=True)
            if not deny:
                self.check_redundant(name, [u for u in us if u[0] == "authorize"])
                self.check_redundant_denies(name, [u for u in us if u[0] == "deny"])
                self.check_overlaps(name, us)
            elif len(deny) > 1:
                for dup in deny[1:]:
                    self.add("W244", dup[1].span, f"this deny is redundant: `{name}` is already always denied at "
                             f"{_where(deny[0][1].span)}", "remove the repeat", warning=True)
        # A name used exactly once that is one or two edits from an action used elsewhere is
        # almost certainly a typo (`clasify_ticket`); distinct actions that merely share words
        # (`read_database` / `modify_database`) are many edits apart and are left alone.
        established = {k for k, us in uses.items() if len(us) > 1} | {"chat"}
        near = _NearNames(established)
        for name, us in uses.items():
            if len(us) != 1:
                continue
            # only names within two edits can be reported: the deletion index finds all of them
            best = min(((edit_distance(name, k), k) for k in near.within2(name) if k != name), default=None)
            if best is None:
                continue
            dist, close = best
            if dist <= max(1, min(2, len(close) // 5)):
                self.add("W232", us[0][1].span, f"action `{name}` is named only here",
                         f"did you mean `{close}`?", warning=True)

    def check_redundant(self, name: str, auths: list[tuple[str, ast.Name, Any]]) -> None:
        """W233: an `authorize` for `name` that can only fire when an earlier one already does (the
        first authorize that fires decides, so the later one is never the reason for an allow).
        Two unconditional ones are W231's."""
        for i, (_, n, later) in enumerate(auths):
            if later.cond is None:
                continue
            for _, _, earlier in auths[:i]:
                if earlier.cond is not None and not _implies(later.cond, earlier.cond):
                    continue
                ex = witness(later.cond)
                shown = ", ".join(f"{k} = {v}" for k, v in ex.items()) if ex else None
                self.add("W233", n.span, f"this rule is redundant for `{name}`: whenever it holds, the "
                         f"authorize at {_where(earlier.span)} already allows `{name}`",
                         (f"e.g. {name} with {shown}: both hold, the earlier one decides; " if shown else "")
                         + "remove it, or narrow the earlier rule", warning=True)
                break

    def check_redundant_denies(self, name: str, denies: list[tuple[str, ast.Name, Any]]) -> None:
        """W244: a `deny` of `name` whose condition implies another deny's: every action it refuses,
        the other refuses too, so deleting it changes no decision. Of two with equivalent conditions
        the later is reported. (With an unconditional deny, the caller reports the others.)"""
        if len(denies) < 2 or len(denies) > PAIRWISE_MAX:
            return
        for i, (_, n, d) in enumerate(denies):
            for j, (_, _, other) in enumerate(denies):
                if i == j or not _implies(d.cond, other.cond):
                    continue
                if _implies(other.cond, d.cond) and j > i:
                    continue  # equivalent: the later one is the redundant one
                ex = _example(d.cond)
                self.add("W244", n.span, f"this deny is redundant for `{name}`: whenever it holds, the deny at "
                         f"{_where(other.span)} already refuses `{name}`",
                         (f"e.g. {name} with {ex}: both deny; " if ex else "") + "remove it, or narrow the other deny",
                         warning=True)
                break

    def check_overlaps(self, name: str, us: list[tuple[str, ast.Name, Any]]) -> None:
        """Where an authorize, a deny and a `require approval` of `name` meet: inputs on which two
        of them hold at once, so the higher one decides (deny over approval over authorize).
        W246 when the lower rule can never decide (its condition implies the higher one's: it is
        dead); else, only with `analyze`, I243 with an example input both hold on (an overlap is
        often the intended exception, so it informs rather than warns). Only conditions made of
        comparisons with literals are decided (see `contradictions.witness`)."""
        rank = {"deny": 0, "approval": 1, "authorize": 2}
        rules = [u for u in us if u[0] in rank]
        if len(rules) > PAIRWISE_MAX:
            return
        what = {"deny": "denied", "approval": "held for approval", "authorize": "authorized"}
        met: set[tuple[int, str]] = set()  # (lower rule, higher kind): one overlap each, the first found
        for low in rules:
            for high in rules:
                if rank[high[0]] >= rank[low[0]] or (id(low[2]), high[0]) in met:
                    continue
                lo, hi = low[2], high[2]
                if _implies(lo.cond, hi.cond):
                    ex = _example(lo.cond)
                    verb = "denies" if high[0] == "deny" else "holds"
                    self.add("W246", low[1].span, f"this rule never decides `{name}`: whenever it holds, the "
                             f"{_kind_label(high[0])} at {_where(hi.span)} {verb} it first",
                             (f"e.g. {name} with {ex}; " if ex else "") + f"remove it, or narrow the "
                             f"{_kind_label(high[0])}", warning=True)
                    continue
                if not self.analyze:
                    continue
                meet = _meet(lo.cond, hi.cond)
                if meet is None:
                    continue
                met.add((id(lo), high[0]))
                ex = ", ".join(f"{k} = {v}" for k, v in meet.items()) or "any input"
                second = max((low, high), key=lambda u: (u[1].span.file, u[1].span.line, u[1].span.col))
                self.add("I243", second[1].span,
                         f"`{name}` is both {what[low[0]]} (line {lo.span.line}) and {what[high[0]]} (line "
                         f"{hi.span.line}) on some inputs: there the {_kind_label(high[0])} decides",
                         f"e.g. {name} with {ex}; if that is not the intended exception, make the conditions exclusive",
                         info=True)

    # ------------------------------------------------------------------ outbound URLs (SSRF)
    def check_urls(self) -> None:
        """Literal URLs the service would send requests to: model base_urls, webhook and Teams targets.
        env() values are checked when the dispatcher is built and at delivery (policyengine.netcheck)."""
        for it in self.items:
            if isinstance(it, ast.ModelDecl):
                for p in it.props:
                    if p.key == "base_url" and isinstance(p.value, ast.Str):
                        self.check_url(p.value.value, p.value.span, "model")
                    elif p.key == "deployment":
                        for q in p.value.props:  # type: ignore[union-attr]
                            if q.key == "base_url" and isinstance(q.value, ast.Str):
                                self.check_url(q.value.value, q.value.span, "model")
            hold = getattr(it, "hold", None) or ()
            for h in hold:
                for c in h.channels if h.kind == "notify" else ():
                    if c.kind in ("webhook", "teams") and "://" in c.target:
                        self.check_url(c.target, c.span, "webhook", f"{c.kind} target")

    def check_url(self, url: str, span: ast.Span, purpose: str, what: str = "base_url") -> None:
        try:
            cls = literal_class(url)
        except OutboundRefused as e:
            if what == "webhook target" and e.reason == "scheme":
                return  # E237 already says the webhook target is not an http(s) URL
            self.add("E260", span, f"{what} {e.message.split(' URL ', 1)[-1]}",
                     "the service only sends http:// or https:// requests" if e.reason == "scheme"
                     else "write a plain http(s) URL: scheme, host, optional port and path")
            return
        if cls is None or cls is AddressClass.public:
            return
        if cls in ALWAYS_REFUSED:
            why = {AddressClass.metadata: "a cloud metadata service", AddressClass.link_local: "a link-local address",
                   AddressClass.multicast: "a multicast address", AddressClass.unspecified: "the unspecified address",
                   AddressClass.reserved: "a reserved address"}[cls]
            self.add("E261", span, f"{what} points at {why}: the service always refuses to send requests there",
                     "metadata and link-local addresses (169.254.0.0/16, fd00:ec2::254, metadata.google.internal) "
                     "hand out cloud credentials; point it at the real endpoint")
            return
        if purpose == "model":
            if cls is AddressClass.private:
                self.add("W262", span, f"{what} points at a private address ({urlsplit(url).hostname})",
                         "allowed while POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE is true (the default, for self-hosted "
                         "models); a deployment that sets it false must list the address in "
                         "POLICYENGINE_MODEL_HOSTS_ALLOW. Or give the URL as env(\"NAME\")", warning=True)
            return
        self.add("W262", span, f"{what} points at a {cls.value} address ({urlsplit(url).hostname}): "
                 "it is refused at delivery by default", "webhooks go to public addresses unless the deployment lists "
                 "the host or CIDR in POLICYENGINE_WEBHOOK_HOSTS_ALLOW", warning=True)

    # ------------------------------------------------------------------ approvals nobody sees
    def check_unattended(self) -> None:
        """`require approval` rules that name no reviewers, notify nobody or never time out (what the
        approvals service does then: docs/approvals.md); the hint names an action the rule holds
        (`e.g. refund with amount = 101 GBP is held this way`) when its condition is decided here."""
        for it in self.items:
            if not isinstance(it, ast.RequireApproval):
                continue
            kinds = {h.kind for h in it.hold or ()}
            ex = _example(it.cond) if it.cond is not None else ""
            held = (f"e.g. {it.actions[0].value}" + (f" with {ex}" if ex else "") + " is held this way; "
                    if ex is not None else "")
            if "reviewers" not in kinds:
                self.add("W270", it.span, "this approval names no reviewers: any reviewer of the tenant may approve it",
                         held + 'add `reviewers group "NAME"` to the block (or set POLICYENGINE_APPROVALS_DEFAULT_GROUP)',
                         warning=True)
            if "notify" not in kinds:
                self.add("W271", it.span, "this approval notifies nobody: it waits unseen until someone looks",
                         held + 'add `notify slack "#channel"` (or email, teams, webhook) to the block, or set '
                         "POLICYENGINE_APPROVALS_DEFAULT_CHANNELS", warning=True)
            if "timeout" not in kinds:
                self.add("W272", it.span, "this approval has no timeout: it waits for a decision forever",
                         held + "add `timeout 8h -> deny` (or -> approve, -> escalate to group \"...\") to the block, "
                         "or set POLICYENGINE_APPROVALS_DEFAULT_TIMEOUT_S", warning=True)


class FieldUses:
    """The uses of one field (or of its currencies) so far: `entries` in order, each (kind, span,
    the actions of the rule, None: all), indexed by kind and action so that `first_clash` looks
    at one position per kind and action of the asking rule instead of every earlier use (a set
    of 50k rules testing `amount` stays linear)."""

    __slots__ = ("_kinds", "entries")

    def __init__(self) -> None:
        self.entries: list[tuple[str, ast.Span, frozenset[str] | None]] = []
        # kind -> [first position, first position with no action list, {action: first position}]
        self._kinds: dict[str, list[Any]] = {}

    def append(self, entry: tuple[str, ast.Span, frozenset[str] | None]) -> None:
        pos = len(self.entries)
        self.entries.append(entry)
        kind, _span, scope = entry
        ix = self._kinds.get(kind)
        if ix is None:
            ix = self._kinds[kind] = [pos, None, {}]
        if scope is None:
            if ix[1] is None:
                ix[1] = pos
        else:
            for a in scope:
                ix[2].setdefault(a, pos)

    def first_clash(self, kind: str, scope: frozenset[str] | None,
                    compatible: set[str] | None = None) -> tuple[str, ast.Span] | None:
        """The earliest entry of another kind (not both in `compatible`) whose rule can apply to an
        action of `scope` (None: every action); what scanning `entries` in order would find."""
        best: int | None = None
        for k, (first, first_all, by_action) in self._kinds.items():
            if k == kind or (compatible and {k, kind} <= compatible):
                continue
            if scope is None:
                pos = first
            else:
                pos = first_all
                for a in scope:
                    p = by_action.get(a)
                    if p is not None and (pos is None or p < pos):
                        pos = p
            if pos is not None and (best is None or pos < best):
                best = pos
        if best is None:
            return None
        k, sp, _scope = self.entries[best]
        return k, sp


def _deletions(s: str, n: int = 2) -> set[str]:
    """`s` with up to `n` characters deleted (itself included)."""
    out = {s}
    frontier = {s}
    for _ in range(n):
        frontier = {w[:i] + w[i + 1:] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


class _NearNames:
    """Names indexed by their two-deletion neighbourhoods (symmetric delete): every name within
    edit distance 2 of a query (insertions, deletions, substitutions and swaps of neighbours each
    cost one deletion on at most each side) shares a neighbour with it, so `within2` returns a
    superset of them without comparing the query with every name."""

    def __init__(self, names: Any) -> None:
        self._names = list(names)
        self._by_del: dict[str, list[str]] = defaultdict(list)
        for k in self._names:
            for d in _deletions(k):
                self._by_del[d].append(k)

    def within2(self, name: str) -> set[str]:
        out: set[str] = set()
        for d in _deletions(name):
            out.update(self._by_del.get(d, ()))
        return out


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap neighbours)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _kind_name(k: str) -> str:
    return {"str": "text", "num": "a number", "money": "money", "duration": "a duration", "bool": "a boolean"}.get(k, k)


def _env_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", model).upper()


def _equality_conjuncts(e: ast.Expr) -> list[tuple[str, list[Any]]]:
    """Every `path == v` / `path in [...]` conjunct of `e`, as (path, values), in order."""
    out: list[tuple[str, list[Any]]] = []
    for c in _conj(e):
        if isinstance(c, ast.Cmp) and c.op == "==":
            out.append((c.path.value, [c.value]))
        elif isinstance(c, ast.In) and not c.negated:
            out.append((c.path.value, list(c.values)))
    return out


def _first_equality(e: ast.Expr) -> tuple[str, list[Any]] | None:
    for c in _conj(e):
        if isinstance(c, ast.Cmp) and c.op == "==":
            return c.path.value, [c.value]
        if isinstance(c, ast.In) and not c.negated:
            return c.path.value, list(c.values)
    return None


def _equalities(e: ast.Expr) -> dict[str, list[Any]]:
    """path -> values for every `==` / `in` conjunct (of every disjunct)."""
    out: dict[str, list[Any]] = defaultdict(list)
    for d in (e.items if isinstance(e, ast.Or) else (e,)):
        for c in _conj(d):
            if isinstance(c, ast.Cmp) and c.op == "==":
                out[c.path.value].append(c.value)
            elif isinstance(c, ast.In) and not c.negated:
                out[c.path.value].extend(c.values)
    return out


def _conj(e: ast.Expr) -> tuple[ast.Expr, ...]:
    return e.items if isinstance(e, ast.And) else (e,)


def _atom_implies(b: ast.Expr, a: ast.Expr) -> bool:
    """Does atom b (true) make atom a true?"""
    if b == a:
        return True
    if isinstance(a, ast.In) and not a.negated and a.path == getattr(b, "path", None):
        if isinstance(b, ast.Cmp) and b.op == "==":
            return b.value in a.values
        if isinstance(b, ast.In) and not b.negated:
            return set(b.values) <= set(a.values)
    if isinstance(a, ast.Or):
        return any(_atom_implies(b, x) for x in a.items)
    return False


def _kind_label(kind: str) -> str:
    return {"approval": "require approval"}.get(kind, kind)


def _example(cond: ast.Expr | None) -> str | None:
    """Field values that make `cond` true, as `amount = 150 GBP, tier = "gold"` (None: not decided)."""
    ex = witness(cond)
    return ", ".join(f"{k} = {v}" for k, v in ex.items()) if ex else None


def _disjuncts(e: ast.Expr | None) -> tuple[tuple[ast.Expr, ...], ...]:
    if e is None:
        return ((),)
    return tuple(_conj(x) for x in e.items) if isinstance(e, ast.Or) else (_conj(e),)


def _meet(a: ast.Expr | None, b: ast.Expr | None) -> dict[str, str] | None:
    """Field values on which both `a` and `b` hold (None: none found, or not decidable here)."""
    for da in _disjuncts(a):
        for db in _disjuncts(b):
            items = (*da, *db)
            w = witness(None if not items else items[0] if len(items) == 1 else ast.And(items))
            if w is not None:
                return w
    return None


def _implies(later: ast.Expr | None, earlier: ast.Expr | None) -> bool:
    """Whenever `later` holds, `earlier` holds too (so the earlier route always wins); a missing
    condition (None) always holds."""
    if earlier is None:
        return True
    if later is None:
        return False
    if isinstance(later, ast.Or):
        return all(_implies(x, earlier) for x in later.items)
    lc = _conj(later)
    return all(any(_atom_implies(b, a) for b in lc) for a in _conj(earlier))


def check_files(files: list[ast.PolicyFile], *, analyze: bool = False) -> list[Diagnostic]:
    """Every error and warning of a parsed policy set; with `analyze` also the informational
    findings (severity info, I codes)."""
    return Checker(files, analyze=analyze).run()
