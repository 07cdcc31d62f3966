"""Property tests (hypothesis).

* fmt: the formatted text parses to the same tree, and formatting it again changes nothing;
* robustness: random and mutated input never raises anything but a PolicyError whose
  diagnostics carry a location;
* the route index picks exactly what a first-match scan would;
* evaluation never raises on arbitrary actions.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policyengine.dsl import PolicyError, check_sources, compile_sources, format_source, parse
from policyengine.dsl.parser import canonical_decimal, escape
from policyengine.types import Action

from .helpers import MODELS, POLICIES

KEYWORDS = set(re.findall(r'"([a-z_]+)"', (POLICIES.parent / "policyengine/dsl/grammar.lark").read_text()))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- source generators

ident = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
model_name = st.from_regex(r"[a-z][a-z0-9]{0,5}([-./][a-z0-9]{1,4}){0,2}", fullmatch=True).filter(
    lambda s: s not in KEYWORDS)
path = st.one_of(
    st.sampled_from(["tenant", "tenant.tier", "channel", "user.role", "use_case", "text", "prompt_tokens",
                     "sentiment", "confidence", "divergence", "signals.toxicity"]),
    ident, st.builds(lambda a, b: f"{a}.{b}", ident, ident), ident.map(lambda s: f"fields.{s}"),
)
string = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10).map(escape)
number = st.decimals(min_value=-10**6, max_value=10**6, places=3, allow_nan=False).map(canonical_decimal)
money = st.builds(lambda n, c: f"{n} {c}", st.decimals(0, 10**6, places=2).map(canonical_decimal),
                  st.sampled_from(["GBP", "USD", "EUR", "JPY"])) | st.sampled_from(["£100", "$5.50", "€0"])
duration = st.builds(lambda n, u: f"{n}{u}", st.integers(0, 999), st.sampled_from(["ms", "s", "m", "h", "d"]))
value = st.one_of(string, number, money, duration, st.sampled_from(["true", "false"]))
gap = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " # note\n", " // c\n"])


def listing(elems: st.SearchStrategy[str], min_size: int = 0) -> st.SearchStrategy[str]:
    return st.lists(elems, min_size=min_size, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")


leaf = st.one_of(
    st.builds(lambda p, op, v: f"{p} {op} {v}", path, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), value),
    st.builds(lambda p, neg, vs: f"{p} {'not in' if neg else 'in'} {vs}", path, st.booleans(), listing(value)),
    st.builds(lambda p, lx: f"{p} mentions {lx}", path, ident),
    path,
)
expr = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(lambda a, b: f"{a} and {b}", inner, inner),
    st.builds(lambda a, b: f"{a} or {b}", inner, inner),
    inner.map(lambda a: f"not {a}"),
    inner.map(lambda a: f"({a})"),
), max_leaves=6)
names = st.lists(ident, min_size=1, max_size=3).map(", ".join)
when = st.one_of(st.just(""), expr.map(lambda e: f" when {e}"))
env = ident.map(lambda s: f'env("{s.upper()}")')
strval = st.one_of(string, env)
hold_item = st.one_of(
    string.map(lambda s: f"reviewers group {s}"),
    st.lists(st.builds(lambda k, t: f"{k} {t}", st.sampled_from(["slack", "teams", "email", "webhook"]), string),
             min_size=1, max_size=2).map(lambda cs: "notify " + ", ".join(cs)),
    duration.map(lambda d: f"remind every {d}"),
    st.builds(lambda d, o: f"timeout {d} -> {o}", duration,
              st.one_of(st.sampled_from(["deny", "approve", "escalate"]), string.map(lambda g: f"escalate to group {g}"))),
)
inner_gap = st.sampled_from([" ", "\n  ", " # why\n  ", "\n  // own line\n  "])


@st.composite
def joined(draw: Any, parts: st.SearchStrategy[list[str]]) -> str:
    """Items separated by random whitespace and comments (inside blocks)."""
    return "".join(draw(inner_gap) + x for x in draw(parts)) + draw(inner_gap)


block = joined(st.lists(hold_item, max_size=4)).map(lambda body: "{" + body + "}")
prop = st.one_of(
    ident.map(lambda s: f"provider {s}"), strval.map(lambda s: f"base_url {s}"), string.map(lambda s: f"model_id {s}"),
    listing(strval).map(lambda s: f"keys {s}"), number.map(lambda n: f"cost {n}"),
    st.builds(lambda n, u: f"cost {n} per {u} tokens", number, st.sampled_from(["1k", "1m", "2k"])),
    st.integers(0, 10**7).map(lambda n: f"context {n}"),
    st.lists(st.builds(lambda k, d: f"{k} {d}", st.sampled_from(["connect", "first_token", "idle", "total"]), duration),
             min_size=1, max_size=4).map(lambda ps: "timeout " + " ".join(ps)),
    st.lists(st.sampled_from(["streaming", "tools", "prefill"]), max_size=3).map(lambda cs: "supports " + ", ".join(cs)),
    string.map(lambda s: f"region {s}"), strval.map(lambda s: f"project {s}"),
    st.builds(lambda h, v: f"header {h} {v}", string, strval),
    st.builds(lambda n, body: f"deployment {n} {{{body}}}", model_name, joined(st.lists(st.one_of(
        strval.map(lambda s: f"base_url {s}"), listing(strval).map(lambda s: f"keys {s}"),
        number.map(lambda n: f"weight {n}"), number.map(lambda n: f"max_concurrency {n}"),
        string.map(lambda s: f"region {s}")), max_size=4))),
    ident.map(lambda s: f"balance {s}"),
    st.builds(lambda p, e: f"health{p}{e}", st.one_of(st.just(""), string.map(lambda s: f" {s}")),
              st.one_of(st.just(""), duration.map(lambda d: f" every {d}"))),
)
hedge = st.builds(lambda d, b: f"hedge after {d}{b}", duration, st.one_of(
    st.just(""), number.map(lambda n: f" budget {n}"), number.map(lambda n: f" budget {n.lstrip('-')}%")))
route_opts = st.lists(st.one_of(st.sampled_from(["sticky session", "sticky session return on recovery",
                                                 "prefer self_hosted", "on rate_limit wait up to 2s"]), hedge),
                      max_size=2).map(" ".join)
item = st.one_of(
    st.builds(lambda s, v: f"policy {s}{v}", string, st.one_of(st.just(""), st.integers(0, 99).map(lambda n: f" version {n}"),
                                                                string.map(lambda s: f" version {s}"))),
    st.builds(lambda n, body: f"model {n} {{{body}}}", model_name, joined(st.lists(prop, max_size=5))),
    st.builds(lambda c, m, fb, o: f"route {c} -> {m}{fb} {o}", st.one_of(st.just("default"), expr.map(lambda e: f"when {e}")),
              model_name, st.one_of(st.just(""), listing(model_name).map(lambda s: f" fallback {s}")), route_opts),
    st.builds(lambda ms, w: f"allow model choice {ms}{w}", listing(model_name), when),
    st.builds(lambda ns, w: f"authorize {ns}{w}", names, when),
    st.builds(lambda ns, w, b: f"require approval for {ns}{w} {b}", names, when, st.one_of(st.just(""), block)),
    st.builds(lambda ns, w: f"deny {ns}{w}", names, when),
    st.builds(lambda n, ps: f"lexicon {n} {ps}", ident, listing(string)),
    st.builds(lambda s, e, b: f"escalate{s} when {e} {b}", st.one_of(st.just(""), names.map(lambda n: f" for {n}")),
              expr, st.one_of(st.just(""), block)),
    st.builds(lambda s, e, ms, g, d, t, hs: f"verify{s} when {e} with {ms} {{{g}escalate when {d}{t}{hs}}}",
              st.one_of(st.just(""), names.map(lambda n: f" for {n}")), expr,
              st.lists(model_name, min_size=1, max_size=3).map(", ".join), inner_gap, expr,
              st.one_of(st.just(""), string.map(lambda s: f" otherwise tag {s}")), joined(st.lists(hold_item, max_size=2))),
)


@st.composite
def source(draw: Any) -> str:
    parts = draw(st.lists(item, max_size=8))
    out = ""
    for p in parts:
        out += draw(gap) + p
    return out + draw(st.sampled_from(["", "\n", "\n# end\n"]))


# --------------------------------------------------------------------------- fmt round trip


@SETTINGS
@given(source())
def test_fmt_reparses_to_the_same_tree_and_is_a_fixed_point(src: str) -> None:
    tree = parse(src, "p.policy")
    out = format_source(src, "p.policy")
    again = parse(out, "p.policy")
    assert again.items == tree.items
    assert sorted(c.text for c in again.comments) == sorted(c.text for c in tree.comments)
    assert format_source(out, "p.policy") == out


def test_example_policies_are_canonical() -> None:
    for f in sorted(POLICIES.rglob("*.policy")):
        text = f.read_text()
        assert format_source(text, str(f)) == text, f"{f} is not formatted (run policyengine fmt)"


# --------------------------------------------------------------------------- robustness


def located(e: PolicyError, sources: dict[str, str]) -> None:
    assert e.diagnostics
    for d in e.diagnostics:
        assert d.file in sources
        nlines = sources[d.file].count("\n") + 1
        assert 1 <= d.line <= nlines, d
        assert d.col >= 1 and d.code and d.message
        assert d.format().startswith(f"{d.file}:{d.line}:{d.col}: {d.code}")


def must_not_crash(sources: dict[str, str]) -> None:
    for d in check_sources(sources):
        assert d.file in sources and d.line >= 1 and d.col >= 1
    try:
        policy = compile_sources(sources)
    except PolicyError as e:
        located(e, sources)
        return
    # whatever compiled must evaluate
    policy.evaluate(Action(action="chat", text="hello", prompt_tokens=10))
    policy.evaluate(Action(action="refund", fields={"amount": "5 GBP"}))


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_only_ever_raises_located_policy_errors(text: str) -> None:
    must_not_crash({"r.policy": text})


SEEDS = [p.read_text() for p in sorted(POLICIES.rglob("*.policy"))]
TOKENS = ["{", "}", "[", "]", "(", ")", ",", "->", '"', "==", "<", "when", "and", "not", "model", "route", "deny",
          "100 GBP", "1h", "0.3", "env(", "#", "\n", "\\", "£", "escalate", "verify", "with", "fallback"]


@st.composite
def mutated(draw: Any) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        ins = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=5)))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + ins + text[i:]
        elif op == "replace":
            text = text[:i] + ins + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


@SETTINGS
@given(mutated())
def test_mutated_policies_only_ever_raise_located_policy_errors(text: str) -> None:
    must_not_crash({"m.policy": text})


@settings(max_examples=60, deadline=None)
@given(source())
def test_generated_policies_check_without_crashing(src: str) -> None:
    must_not_crash({"g.policy": src})


def test_deep_parentheses_compile_and_evaluate_without_recursion() -> None:
    # Redundant parentheses are flattened by the parser: 3,000 of them are harmless
    # (deep `not` chains are E105, tested in test_diagnostics).
    text = 'policy "t"\nauthorize a when ' + "(" * 3000 + "x" + ")" * 3000 + "\n"
    policy = compile_sources({"d.policy": text})
    assert policy.evaluate(Action(action="a", fields={"x": True})).effect == "allow"
    assert policy.evaluate(Action(action="a")).effect == "deny"


# --------------------------------------------------------------------------- route index == scan

route_field = st.sampled_from(["tenant", "use_case", "channel", "tenant.tier", "fields.region"])
route_value = st.sampled_from(["a", "b", "c", "2", "true"])
route_cond = st.one_of(
    st.builds(lambda f, v: f'{f} == "{v}"', route_field, route_value),
    st.builds(lambda f, vs: f"{f} in [" + ", ".join(f'"{v}"' for v in vs) + "]", route_field,
              st.lists(route_value, min_size=1, max_size=2)),
    st.builds(lambda f, v, g, w: f'{f} == "{v}" and {g} != "{w}"', route_field, route_value, route_field, route_value),
    st.builds(lambda f, v, g, w: f'{f} == "{v}" or {g} == "{w}"', route_field, route_value, route_field, route_value),
    st.integers(0, 3000).map(lambda n: f"prompt_tokens > {n}"),
)
attrs = st.fixed_dictionaries({}, optional={
    "tenant": route_value, "use_case": route_value, "channel": route_value, "tenant_tier": route_value,
    "prompt_tokens": st.integers(0, 4000)})


@settings(max_examples=200, deadline=None)
@given(st.lists(route_cond, min_size=1, max_size=12), st.lists(attrs, min_size=1, max_size=8),
       st.lists(st.sampled_from(["a", "b", "2", 2, 2.0, True, "true", False]), max_size=1))
def test_route_index_agrees_with_a_first_match_scan(conds: list[str], actions: list[dict], region: list[Any]) -> None:
    text = MODELS + "route default -> qwen-72b\n" + "".join(
        f"route when {c} -> {['gemma-27b', 'kimi-large', 'bedrock-llama'][i % 3]}\n" for i, c in enumerate(conds))
    sources = {"r.policy": text}
    ds = check_sources(sources)
    assume(not any(d.is_error for d in ds))
    policy = compile_sources(sources)
    from policyengine.evaluator import EvalContext

    for kw in actions:
        a = Action(action="chat", fields={"region": region[0]} if region else {}, **kw)
        ctx = EvalContext(a, None, policy)
        expected = next((r.rule_id for r in policy.routes if r.cond is not None and r.cond(ctx, []) is True),
                        policy.default_route.rule_id if policy.default_route else None)
        assert policy.route(a).rule_id == expected


# --------------------------------------------------------------------------- evaluation never raises

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
              st.sampled_from(["150 GBP", "GBP 5", "1h", "abc", "1e400"]), st.decimals(allow_nan=False).map(Decimal)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["refund", "classify_ticket", "chat", "send_email", "delete_account", "unknown", "draft_response"]),
    st.dictionaries(st.sampled_from(["amount", "vip", "region", "environment"]), json_value, max_size=3),
    st.dictionaries(st.sampled_from(["sentiment", "confidence", "divergence", "mentions:litigation", "mentions"]),
                    json_value, max_size=3),
    st.one_of(st.none(), st.text(st.characters(exclude_characters="\x00"), max_size=40)),  # Action refuses NUL
    st.one_of(st.none(), st.sampled_from(["qwen-72b", "kimi-large", "nope"])),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_evaluate_never_raises(name: str, fields: dict, signals: dict, text: str | None, model: str | None,
                               tokens: int | None) -> None:
    from policyengine.dsl import load_policy_set

    policy = _SD.get("p") or _SD.setdefault("p", load_policy_set([POLICIES / "support-desk"]))
    a = Action(action=name, fields=fields, signals=signals, text=text, requested_model=model, prompt_tokens=tokens,
               actor_role="power", use_case="legal")
    d = policy.evaluate(a)
    assert d.effect in ("allow", "deny", "require_approval", "escalate")
    d.model_dump_json()


_SD: dict[str, Any] = {}
