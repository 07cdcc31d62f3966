"""Every checker diagnostic: one bad policy each, asserting the exact code, line and column."""

from __future__ import annotations

import pytest

from policyengine.dsl import PolicyError, compile_sources

from .helpers import diags

M = """policy "t" version 1
model qwen-72b { provider vllm base_url env("Q") cost 0 context 32768 }
model gemma-27b { provider ollama base_url env("G") cost 0 }
"""
J = 'model llama-70b { provider vllm base_url env("L") cost 0 }\n'  # a judge of another family
HELD = ' { reviewers group "r" notify slack "#r" timeout 1h -> deny }'  # a complete approval block (no W270-W272)

# code -> (policy text, line, col)
CASES: dict[str, tuple[str, int, int]] = {
    "E100": ('policy "t" version 1\nauthorize refund when amount > > 3\n', 2, 32),
    "E101": ('policy "t" version 1\nauthorize refund @\n', 2, 18),
    "E102": ('policy "t" version 1\nlexicon l ["abc\n', 2, 12),
    "E103": ('policy "t" version 1\nmodel a {\n', 2, 10),
    "E104": ('policy "t" version 1\nlexicon l ["a\\qb"]\n', 2, 14),
    "W110": ("authorize refund\n", 1, 1),
    "E111": (M + 'policy "other" version 2\n', 4, 1),
    "W112": (M + 'policy "t" version 1\n', 4, 1),
    "E201": (M + 'model qwen-72b { provider vllm base_url env("Q2") }\n', 4, 7),
    "E202": ('policy "t" version 1\nmodel a { provider vllm base_url env("A") cost 0 cost 1 }\n', 2, 50),
    "E203": ('policy "t" version 1\nmodel a { provider olama base_url env("A") }\n', 2, 20),
    "E204": ('policy "t" version 1\nmodel a { provider openai base_url env("A") keys ["sk-abcdef1234567890"] }\n', 2, 51),
    "E205": ('policy "t" version 1\nmodel a { provider vllm cost 0 }\n', 2, 7),
    "E206": ('policy "t" version 1\nmodel a { provider vllm base_url env("A") context 0 }\n', 2, 43),
    "E207": ('policy "t" version 1\nlexicon l ["a"]\nlexicon l ["b"]\n', 3, 9),
    "E208": ('policy "t" version 1\nlexicon l []\n', 2, 1),
    "W209": ('policy "t" version 1\nlexicon l ["a", "A"]\n', 2, 17),
    "E210": (M + "route default -> qwen-72b fallback [gema-27b]\n", 4, 37),
    "E211": (M + 'lexicon litigation ["sue"]\nescalate when text mentions litigaton\n', 5, 29),
    "E212": (M + "route default -> qwen-72b\nroute default -> gemma-27b\n", 5, 1),
    "E213": (M + "route default -> qwen-72b fallback [gemma-27b, qwen-72b]\n", 4, 48),
    "W214": (M + 'route default -> qwen-72b\nroute when use_case == "code" -> qwen-72b\n'
             'route when use_case == "code" and tenant == "acme" -> gemma-27b\n', 6, 1),
    "W215": (M + 'route when use_case == "code" -> qwen-72b\n', 4, 1),
    "E220": (M + "authorize refund when tenant.tier > 3\n", 4, 37),
    "E221": (M + "escalate when sentiment < 1.5\n", 4, 27),
    "E222": (M + 'authorize refund when tenant.teir == "gold"\n', 4, 23),
    "W223": (M + "require approval for refund when amount > 100 GBP" + HELD + "\ndeny refund when amount > 5000 USD\n", 5, 27),
    "E224": (M + "require approval for refund when amount > 100 GBP and amount < 500 USD" + HELD + "\n", 4, 64),
    "E230": (M + "authorize refund\ndeny refund\n", 5, 6),
    "W231": (M + "authorize refund\nauthorize refund\n", 5, 11),
    "W232": (M + "authorize classify_ticket\nrequire approval for classify_ticket when amount > 5 GBP" + HELD + "\n"
             'deny clasify_ticket when tenant == "x"\n', 6, 6),
    "W238": (M + "require approval for refund when amount > 5 GBP" + HELD + "\ndeny refund\n", 4, 22),
    "E233": (M + 'require approval for refund {\n  reviewers group "a"\n  reviewers group "b"\n'
             '  notify slack "#r"\n  timeout 1h -> deny\n}\n', 6, 3),
    "W234": (M + 'require approval for refund {\n  remind every 8h\n  timeout 1h -> deny\n  reviewers group "r"\n'
             '  notify slack "#r"\n}\n', 5, 3),
    "E235": (M + 'require approval for refund {\n  timeout 0s -> deny\n  reviewers group "r"\n  notify slack "#r"\n}\n',
             5, 3),
    "E236": (M + 'require approval for refund {\n  reviewers group ""\n  notify slack "#r"\n  timeout 1h -> deny\n}\n',
             5, 3),
    "E237": (M + 'require approval for refund {\n  notify email "not-an-address"\n  reviewers group "r"\n'
             '  timeout 1h -> deny\n}\n', 5, 10),
    "E240": (M + 'verify when use_case == "legal" with qwen-72b, qwen-72b {\n  escalate when divergence > 0.2\n}\n', 4, 38),
    "E241": (M + 'verify when use_case == "legal" with qwen-72b, gemma-27b {\n  escalate when sentiment < 0.2\n}\n', 5, 17),
    "E242": (M + "allow model choice []\n", 4, 1),
    # a judge model for verification (E252-E255)
    "E252": (M + J + 'verify when use_case == "legal" with qwen-72b, gemma-27b judge lama-70b {\n'
             '  escalate when divergence > 0.2\n}\n', 5, 64),
    "E253": (M + J + 'verify when use_case == "legal" with qwen-72b, gemma-27b judge gemma-27b {\n'
             '  escalate when divergence > 0.2\n}\n', 5, 64),
    "W254": (M + 'model qwen-7b { provider vllm base_url env("Q7") cost 0 }\n'
             'verify when use_case == "legal" with qwen-72b, gemma-27b judge qwen-7b {\n'
             '  escalate when divergence > 0.2\n}\n', 5, 64),
    "E255": (M + J + 'verify when use_case == "legal" with qwen-72b, gemma-27b judge llama-70b timeout 0s {\n'
             '  escalate when divergence > 0.2\n}\n', 5, 82),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_code_exactly_once_at_its_place(code: str) -> None:
    text, line, col = CASES[code]
    ds = diags(text)
    assert [d.code for d in ds] == [code], [d.format() for d in ds]
    [d] = ds
    assert (d.file, d.line, d.col) == ("t.policy", line, col), d.format()
    assert d.severity == ("warning" if code.startswith("W") else "error")
    assert d.source_line == text.splitlines()[line - 1]
    formatted = d.format().splitlines()
    assert formatted[0] == f"t.policy:{line}:{col}: {code} {d.message}"
    assert formatted[2].index("^") == col + 1  # two spaces of indent
    if code.startswith("E"):
        with pytest.raises(PolicyError) as ei:
            compile_sources({"t.policy": text})
        assert ei.value.diagnostics[0].code == code
    else:
        compile_sources({"t.policy": text})  # warnings never block loading


def test_docs_list_every_code() -> None:
    from .helpers import ROOT

    doc = (ROOT / "docs" / "language.md").read_text()
    for code in CASES:
        assert f"`{code}`" in doc, f"{code} is not documented in docs/language.md"


def test_too_deep_nesting_is_located() -> None:
    ds = diags('policy "t"\nauthorize a\nauthorize b when ' + "not " * 3000 + "x\n")
    assert [(d.code, d.line, d.col) for d in ds] == [("E105", 3, 18)]


def test_misspelt_and_foreign_keywords() -> None:
    cases = {
        'policy "t"\nmodle a { provider vllm }\n': (2, 1, "did you mean `model`?"),
        "permit refund\n": (1, 1, "did you mean `authorize`?"),
        "authorize a\nforbid b\n": (2, 1, "did you mean `deny`?"),
        "model a { provder vllm }\n": (1, 11, "did you mean `provider`?"),
        'require approval for a { reviewer group "x" }\n': (1, 26, "did you mean `reviewers`?"),
        "escalate when sentiment < 0.3 for refund\n": (1, 31, "the action scope comes first"),
    }
    for text, (line, col, hint) in cases.items():
        [d] = [d for d in diags(text) if d.is_error]
        assert (d.code, d.line, d.col) == ("E100", line, col), d.format()
        assert (d.hint or "").startswith(hint), d.format()


def test_did_you_mean_hints() -> None:
    [d] = diags(CASES["E210"][0])
    assert d.hint == "did you mean `gemma-27b`?"
    [d] = diags(CASES["E211"][0])
    assert d.hint == "did you mean `litigation`?"
    [d] = diags(CASES["E203"][0])
    assert d.hint == "did you mean `ollama`?"
    [d] = diags(CASES["W232"][0])
    assert d.hint == "did you mean `classify_ticket`?"


def test_unknown_model_used_three_times_is_one_error() -> None:
    text = M + "route default -> qwen-72b fallback [gema-27b]\nroute when use_case == \"x\" -> gema-27b\nallow model choice [gema-27b]\n"
    ds = diags(text)
    assert [d.code for d in ds] == ["E210"]
    assert "also used at t.policy:5, t.policy:6" in ds[0].message


def test_syntax_error_does_not_cascade_into_name_errors() -> None:
    # the model declared after the broken line must not be reported as unknown
    text = 'policy "t" version 1\nroute default -> a\nauthorize x when amount >> 3\nmodel a { provider vllm base_url env("A") }\n'
    ds = diags(text)
    assert [d.code for d in ds] == ["E100"]


def test_unknown_provider_does_not_also_demand_base_url() -> None:
    ds = diags('policy "t" version 1\nmodel a { provider olama }\n')
    assert [d.code for d in ds] == ["E203"]


def test_literal_secrets_anywhere() -> None:
    text = ('policy "t" version 1\nmodel a { provider openai base_url "https://x/v1?key=sk-abcdefghijklmnop" '
            'header "Authorization" "Bearer abcdefghijkl" }\n')
    ds = diags(text)
    assert [d.code for d in ds] == ["E204", "E204"]
    assert all('env("NAME")' in (d.hint or "") for d in ds)


def test_conditional_authorize_of_an_always_denied_action() -> None:
    ds = diags(M + "deny refund\nauthorize refund when amount < 5 GBP\n")
    assert [(d.code, d.line, d.col) for d in ds] == [("E230", 5, 11)]
    assert "always denied at t.policy:4" in ds[0].message


def test_conditional_deny_and_authorize_is_fine() -> None:
    ds = diags(M + 'authorize refund\ndeny refund when tenant == "blocked"\n')
    assert ds == []


def test_more_type_errors() -> None:
    cases = {
        'authorize refund when use_case < "b"\n': "`<` compares numbers",
        "escalate when sentiment < 30 GBP\n": "signal `sentiment` is a number",
        'authorize refund when prompt_tokens == "x"\n': "`prompt_tokens` is a number",
        "authorize refund when sentiment\n": "is a number, not a condition",
        'authorize refund when use_case in ["a", 3]\n': "list mixes",
        "authorize refund when amount > 100 GBP\ndeny refund when amount > 3\n": "compared with a number here but with money",
    }
    for rule, expected in cases.items():
        ds = diags(M + rule)
        assert [d.code for d in ds] == ["E220"], (rule, [d.format() for d in ds])
        assert expected in ds[0].message, ds[0].message


def test_field_types_are_per_action() -> None:
    # (every approval names its reviewers, channels and timeout: W270-W272 are not what this tests)
    # `amount` is money for refunds and a row count for exports: different actions, no clash
    assert diags(M + "require approval for refund when amount > 100 GBP" + HELD + "\n"
                 "require approval for bulk_export when amount > 10000" + HELD + "\n") == []
    # ... but a global rule reads the field of every action
    ds = diags(M + "require approval for refund when amount > 100 GBP" + HELD + "\nescalate when amount > 5\n")
    assert [(d.code, d.line) for d in ds] == [("E220", 5)]
    # currencies per action too
    ds = diags(M + "require approval for refund when amount > 100 GBP" + HELD + "\ndeny refund, payout when amount > 900 USD\n")
    assert [d.code for d in ds] == ["W223"]
    assert diags(M + "require approval for refund_uk when amount > 100 GBP" + HELD + "\n"
                 "require approval for refund_us when amount > 120 USD" + HELD + "\n") == []


def test_negative_cost_and_bad_timeouts() -> None:
    ds = diags('policy "t" version 1\nmodel a { provider vllm base_url env("A") cost -1 timeout connect 0s connect 2s }\n')
    assert sorted(d.code for d in ds) == ["E202", "E206", "E206"]


def test_missing_bedrock_region_and_vertex_project() -> None:
    ds = diags('policy "t" version 1\nmodel b { provider bedrock model_id "x" }\nmodel v { provider vertex region "eu" }\n')
    assert [(d.code, d.line) for d in ds] == [("E205", 2), ("E205", 3)]


def test_shadowing_through_membership() -> None:
    text = M + 'route default -> qwen-72b\nroute when use_case in ["code", "sql"] -> qwen-72b\nroute when use_case == "sql" -> gemma-27b\n'
    assert [d.code for d in diags(text)] == ["W214"]
    text = M + 'route default -> qwen-72b\nroute when use_case == "sql" -> gemma-27b\nroute when use_case in ["code", "sql"] -> qwen-72b\n'
    assert diags(text) == []


def test_shadowing_check_handles_every_atom_kind() -> None:
    # found by hypothesis: a `not` atom has no path
    text = M + 'route default -> qwen-72b\nroute when (vip or region in ["x"]) -> qwen-72b\n' \
        'route when not region == "" -> gemma-27b\nroute when text mentions l -> gemma-27b\nlexicon l ["a"]\n'
    assert diags(text) == []


def test_github_annotation_format() -> None:
    [d] = diags(CASES["E210"][0])
    assert d.github() == (
        "::error file=t.policy,line=4,col=37,endLine=4,endColumn=45,title=E210::unknown model `gema-27b` "
        "(hint: did you mean `gemma-27b`?)"
    )


def test_multi_file_set_locates_each_file() -> None:
    from policyengine.dsl import check_sources

    ds = check_sources({"a.policy": M, "b.policy": "route default -> qwen-72b fallback [gema-27b]\n"})
    assert [(d.file, d.line, d.col, d.code) for d in ds] == [("b.policy", 1, 37, "E210")]


def test_secret_looking_strings_in_conditions_and_lexicons() -> None:
    ds = diags(M + 'authorize a when token == "sk-live-abcdefghijklmnop"\nlexicon l ["ghp_abcdefghijklmnopqrstuv"]\n')
    assert [(d.code, d.line) for d in ds] == [("E204", 4), ("E204", 5)]
