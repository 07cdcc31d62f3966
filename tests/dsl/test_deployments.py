"""Deployments, balancing, health checks and hedging in the language: parse, check (each code at
its line:col), compile to the runtime types, and the formatter round trip."""

from __future__ import annotations

import pytest

from policyengine.dsl import PolicyError, compile_sources, format_source, parse
from policyengine.types import Action, Deployment, EnvRef, HealthCheck

from .helpers import diags

FLEET = '''policy "fleet" version 1
model qwen {
  provider vllm
  keys [env("QWEN_KEY")]
  deployment gpu-a { base_url env("QWEN_A_URL") weight 3 max_concurrency 16 }
  deployment gpu-b { base_url env("QWEN_B_URL") keys [env("QWEN_B_KEY")] region "eu-west-2" }
  balance latency
  health "/health" every 10s
}
model gemma { provider ollama base_url env("GEMMA_URL") }
route default -> qwen fallback [gemma] hedge after 300ms budget 10%
route when use_case == "code" -> qwen hedge after 1.5s budget 0.25 sticky session
route when use_case == "bulk" -> qwen hedge after 2s
'''


def test_fleet_compiles_to_deployments_balance_health_and_hedging() -> None:
    assert diags(FLEET) == []
    p = compile_sources({"fleet.policy": FLEET})
    m = p.models["qwen"]
    assert m.balance == "latency"
    assert m.health == HealthCheck(path="/health", interval=10.0)
    assert m.base_url is None and m.keys == (EnvRef(name="QWEN_KEY"),)
    assert m.deployments == (
        Deployment(name="gpu-a", base_url=EnvRef(name="QWEN_A_URL"), weight=3, max_concurrency=16, line=5),
        Deployment(name="gpu-b", base_url=EnvRef(name="QWEN_B_URL"), keys=(EnvRef(name="QWEN_B_KEY"),),
                   region="eu-west-2", line=6),
    )
    r = p.evaluate(Action(action="chat")).routing
    assert (r.chain, r.hedge_after, r.hedge_budget) == (["qwen", "gemma"], 0.3, 0.1)
    r = p.evaluate(Action(action="chat", use_case="code")).routing
    assert (r.chain, r.hedge_after, r.hedge_budget, r.sticky) == (["qwen", "gemma"], 1.5, 0.25, True)
    r = p.evaluate(Action(action="chat", use_case="bulk")).routing
    assert (r.hedge_after, r.hedge_budget) == (2.0, 0.1)  # the default budget
    assert p.evaluate(Action(action="chat", use_case="other")).routing.hedge_after == 0.3
    # a model without deployments keeps its one implicit deployment
    assert p.models["gemma"].deployments == () and p.models["gemma"].health is None


def test_percent_and_fraction_budgets_are_one_tree() -> None:
    a = parse("route default -> m hedge after 300ms budget 10%\n").items[0]
    b = parse("route default -> m hedge after 300ms budget 0.1\n").items[0]
    assert a == b and a.hedge.budget.raw == "10%"


def test_fmt_round_trip() -> None:
    messy = FLEET.replace("  deployment gpu-a { base_url env(\"QWEN_A_URL\") weight 3 max_concurrency 16 }",
                          "  deployment gpu-a {  # the big box\n    base_url env(\"QWEN_A_URL\")\n    weight 3.0\n"
                          "    max_concurrency 16\n  }").replace("budget 0.25", "budget 0.250")
    out = format_source(messy)
    assert format_source(out) == out
    assert parse(out).items == parse(messy).items
    assert '  deployment gpu-a { base_url env("QWEN_A_URL") weight 3 max_concurrency 16 }' in out
    assert "# the big box" in out
    assert "route when use_case == \"code\" -> qwen sticky session hedge after 1.5s budget 25%" in out
    canon = format_source(FLEET)
    assert "route default -> qwen fallback [gemma] hedge after 300ms budget 10%\n" in canon
    assert "  balance latency\n  health \"/health\" every 10s\n}" in canon


H = 'policy "t" version 1\n'
ONE = H + 'model m { provider vllm base_url env("M") }\n'
TWO = H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") }\n  deployment b { base_url env("B") }\n}\n'

# code -> (text, line, col)
CASES: dict[str, tuple[str, int, int]] = {
    "E290": (H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") }\n  deployment a { base_url env("B") }\n}\n',
             5, 14),
    "E291": (H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") weight 0 }\n'
             '  deployment b { base_url env("B") }\n}\n', 4, 43),
    "E292": (H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") max_concurrency 0 }\n'
             '  deployment b { base_url env("B") }\n}\n', 4, 52),
    "E293": (TWO.replace("}\n}\n", "}\n  balance least_outstandng\n}\n"), 6, 11),
    "E294": (ONE.replace(' }\n', ' health "/health" every 0s }\n'), 2, 66),
    "E295": (TWO + "route default -> m hedge after 300ms budget 150%\n", 7, 45),
    "E296": (TWO + "route default -> m hedge after 0ms\n", 7, 32),
    "W297": (ONE + "route default -> m hedge after 300ms\n", 3, 20),
    "W298": (ONE.replace(' }\n', ' balance latency }\n'), 2, 43),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_code_once_at_its_place(code: str) -> None:
    text, line, col = CASES[code]
    ds = diags(text)
    assert [d.code for d in ds] == [code], [d.format() for d in ds]
    [d] = ds
    assert (d.line, d.col) == (line, col), d.format()
    assert d.hint, d.format()
    assert d.format().splitlines()[0].startswith(f"t.policy:{line}:{col}: {code} ")
    if code.startswith("E"):
        with pytest.raises(PolicyError):
            compile_sources({"t.policy": text})
    else:
        compile_sources({"t.policy": text})


def test_did_you_mean_strategy_and_messages() -> None:
    [d] = diags(CASES["E293"][0])
    assert d.hint.startswith("did you mean `least_outstanding`?")
    [d] = diags(CASES["E290"][0])
    assert "already declared in model `m` (line 4)" in d.message
    [d] = diags(TWO + "route default -> m hedge after 1s budget -0.5\n")
    assert d.code == "E295"
    [d] = diags(H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") max_concurrency 2.5 }\n}\n')
    assert d.code == "E292"


def test_hedge_has_something_to_hedge_to() -> None:
    # a fallback model, a second deployment, or the default route's fallbacks inherited
    two_models = ONE + 'model n { provider vllm base_url env("N") }\n'
    assert diags(two_models + "route default -> m fallback [n] hedge after 300ms\n") == []
    assert diags(TWO + "route default -> m hedge after 300ms\n") == []
    assert diags(two_models + 'route default -> m fallback [n]\nroute when use_case == "x" -> m hedge after 1s\n') == []
    [d] = diags(two_models + 'route default -> m fallback [n]\nroute when use_case == "x" -> m fallback [] hedge after 1s\n')
    assert d.code == "W297"


def test_deployments_give_the_base_url_secrets_and_urls_are_checked() -> None:
    # every deployment has a base_url: the model needs none; one without is E205 at that deployment
    ds = diags(H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") }\n  deployment b { weight 2 }\n}\n')
    assert [(d.code, d.line, d.col) for d in ds] == [("E205", 5, 14)]
    assert diags(H + 'model m {\n  provider vllm\n  base_url env("M")\n  deployment a { weight 2 }\n'
                 '  deployment b { base_url env("B") }\n}\n') == []
    ds = diags(H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") keys ["sk-abcdefghijklmnop"] }\n'
               '  deployment b { base_url "http://169.254.169.254/v1" }\n}\n')
    assert [(d.code, d.line) for d in ds] == [("E204", 4), ("E261", 5)]
    ds = diags(H + 'model m {\n  provider vllm\n  deployment a { base_url env("A") weight 1 weight 2 }\n'
               '  deployment b { base_url env("B") }\n}\n')
    assert [d.code for d in ds] == ["E202"]
    # Bedrock: the region may come from each deployment
    assert diags(H + 'model b {\n  provider bedrock\n  model_id "x"\n  deployment eu { region "eu-west-2" }\n'
                 '  deployment us { region "us-east-1" }\n}\n') == []


def test_health_forms() -> None:
    p = compile_sources({"t.policy": ONE.replace(' }\n', ' health }\n')})
    assert p.models["m"].health == HealthCheck()
    p = compile_sources({"t.policy": ONE.replace(' }\n', ' health every 5s }\n')})
    assert p.models["m"].health == HealthCheck(interval=5.0)
    [d] = diags(ONE.replace(' }\n', ' health "http://x/health" }\n'))
    assert d.code == "E294"


def test_docs_list_the_codes() -> None:
    from .helpers import ROOT

    doc = (ROOT / "docs" / "language.md").read_text()
    for code in CASES:
        assert f"`{code}`" in doc, f"{code} is not documented in docs/language.md"
