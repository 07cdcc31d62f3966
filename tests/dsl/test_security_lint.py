"""Lint for the security issue (#15): outbound URLs (SSRF, #9), literal secrets in URLs and headers (#12),
and approvals nobody sees. Each diagnostic is asserted with its code, place and severity."""

from __future__ import annotations

import pytest

from policyengine.dsl import PolicyError, check, compile_sources, discover_sets

from .helpers import POLICIES, ROOT, diags

H = 'policy "t" version 1\n'
M = H + 'model q { provider vllm base_url env("Q") cost 0 }\nroute default -> q\n'
HELD = '{\n  reviewers group "r"\n  notify slack "#r"\n  timeout 1h -> deny\n}\n'  # nothing missing


def model(url: str) -> str:
    return H + f'model q {{ provider vllm base_url "{url}" cost 0 }}\nroute default -> q\n'


def notify(target: str, kind: str = "webhook") -> str:
    return M + f'require approval for refund {{\n  reviewers group "r"\n  notify {kind} "{target}"\n  timeout 1h -> deny\n}}\n'


# code -> (policy text, line, col): the only diagnostic of the text
CASES: dict[str, tuple[str, int, int]] = {
    # SSRF: literal URLs
    "E260 base_url file://": (model("file:///etc/passwd"), 2, 34),
    "E260 base_url gopher://": (model("gopher://127.0.0.1:6379/_x"), 2, 34),
    "E260 teams file://": (notify("file:///etc/passwd", "teams"), 6, 10),
    "E261 base_url metadata IPv4": (model("http://169.254.169.254/latest/meta-data/"), 2, 34),
    "E261 base_url metadata IPv6": (model("http://[fd00:ec2::254]/v1"), 2, 34),
    "E261 base_url metadata name": (model("http://metadata.google.internal/v1"), 2, 34),
    "E261 base_url link-local": (model("http://169.254.10.1:8000/v1"), 2, 34),
    "E261 base_url decimal metadata": (model("http://2852039166/v1"), 2, 34),
    "E261 webhook metadata": (notify("http://169.254.169.254/latest"), 6, 10),
    "E261 teams metadata": (notify("http://metadata.google.internal/x", "teams"), 6, 10),
    "W262 base_url private": (model("http://10.0.0.5:8000/v1"), 2, 34),
    "W262 webhook private": (notify("http://192.168.1.20/hook"), 6, 10),
    "W262 webhook loopback": (notify("http://127.0.0.1:9000/hook"), 6, 10),
    # secrets (#12): E204, extended
    "E204 password in base_url": (H + 'model q { provider openai base_url "https://bob:hunter2@llm.example.com/v1" }\n'
                                  "route default -> q\n", 2, 36),
    "E204 token as the user": (H + 'model q { provider openai base_url "https://0123456789abcdef0123@llm.example.com/v1" }\n'
                               "route default -> q\n", 2, 36),
    "E204 ?api_key=": (H + 'model q { provider openai base_url "https://llm.example.com/v1?api_key=abc123" }\n'
                       "route default -> q\n", 2, 36),
    "E204 ?access_token=": (H + 'model q { provider openai base_url "https://llm.example.com/v1?x=1&access_token=t0k" }\n'
                            "route default -> q\n", 2, 36),
    "E204 ?key= (Gemini style)": (H + 'model q { provider vertex project env("P") base_url '
                                  '"https://generativelanguage.googleapis.com/v1beta?key=abc" }\nroute default -> q\n', 2, 53),
    "E204 webhook ?token=": (notify("https://hooks.example.com/pe?token=abc"), 6, 10),
    "E204 webhook user:password": (notify("https://pe:s3cret@hooks.example.com/pe"), 6, 10),
    "E204 header X-Api-Key": (H + 'model q { provider openai base_url env("Q") header "X-Api-Key" "abc123" }\n'
                              "route default -> q\n", 2, 64),
    "E204 header X-Auth-Token": (H + 'model q { provider openai base_url env("Q") header "X-Auth-Token" "abc" }\n'
                                 "route default -> q\n", 2, 67),
    "E204 header Ocp-Apim-Subscription-Key": (H + 'model q { provider openai base_url env("Q") header '
                                              '"Ocp-Apim-Subscription-Key" "abc" }\nroute default -> q\n', 2, 80),
    # approvals nobody sees (#15)
    "W270 no reviewers": (M + 'require approval for refund {\n  notify slack "#r"\n  timeout 1h -> deny\n}\n', 4, 1),
    "W271 no notification": (M + 'require approval for refund {\n  reviewers group "r"\n  timeout 1h -> deny\n}\n', 4, 1),
    "W272 no timeout": (M + 'require approval for refund {\n  reviewers group "r"\n  notify slack "#r"\n}\n', 4, 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_code_once_at_its_place(case: str) -> None:
    code = case.split()[0]
    text, line, col = CASES[case]
    ds = diags(text)
    assert [d.code for d in ds] == [code], [d.format() for d in ds]
    [d] = ds
    assert (d.line, d.col) == (line, col), d.format()
    assert d.severity == ("warning" if code.startswith("W") else "error")
    assert d.hint
    if code.startswith("E"):
        with pytest.raises(PolicyError):
            compile_sources({"t.policy": text})
    else:
        compile_sources({"t.policy": text})  # warnings never block loading


def test_secret_hints_say_env_and_ssrf_hints_name_the_setting() -> None:
    [d] = diags(CASES["E204 ?api_key="][0])
    assert 'env("NAME")' in (d.hint or "") and "abc123" not in d.message
    [d] = diags(CASES["W262 base_url private"][0])
    assert "POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE" in (d.hint or "")
    [d] = diags(CASES["W262 webhook loopback"][0])
    assert "POLICYENGINE_WEBHOOK_HOSTS_ALLOW" in (d.hint or "")
    [d] = diags(CASES["E261 base_url metadata IPv4"][0])
    assert "metadata" in d.message


def test_a_bare_approval_gets_all_three_warnings() -> None:
    ds = diags(M + "require approval for refund when amount > 100 GBP\nauthorize refund\n")
    assert [(d.code, d.line, d.col) for d in ds] == [("W270", 4, 1), ("W271", 4, 1), ("W272", 4, 1)]
    assert "any reviewer of the tenant" in ds[0].message
    assert "forever" in ds[2].message


@pytest.mark.parametrize("text", [
    M + "require approval for refund " + HELD,
    M + 'require approval for refund {\n  reviewers group "r"\n  notify webhook "env:HOOK"\n  timeout 1h -> approve\n}\n',
    model("http://127.0.0.1:8000/v1"),  # loopback models: the simulated fleet, a local vLLM
    model("https://api.example.com/v1?api-version=2024-06-01"),  # a query that is not a credential
    model("http://qwen.internal:8000/v1"),  # names are checked when loaded, not linted
    H + 'model q { provider openai base_url env("Q") header "X-Org" "acme" header "X-Api-Key" env("K") }\n'
        "route default -> q\n",
    notify("https://hooks.example.com/pe"),
    notify("https://example.webhook.office.com/webhookb2/x", "teams"),
])
def test_what_stays_clean(text: str) -> None:
    assert diags(text) == []


def test_env_references_are_not_linted() -> None:
    # env("...") URLs can only be checked when the dispatcher is built and when delivering
    assert diags(H + 'model q { provider vllm base_url env("METADATA") }\nroute default -> q\n') == []


def test_shipped_policies_lint_clean() -> None:
    sets = discover_sets(POLICIES)
    assert sets
    for policy_set in sets:
        assert check(policy_set) == [], policy_set


def test_docs_list_the_new_codes() -> None:
    doc = (ROOT / "docs" / "language.md").read_text()
    for code in sorted({c.split()[0] for c in CASES}):
        assert f"`{code}`" in doc, f"{code} is not documented in docs/language.md"
