"""`verify ... judge M [timeout D]`: parsing, formatting, checking and what the decision carries."""

from __future__ import annotations

import pytest

from policyengine.dsl import format_source, parse
from policyengine.dsl.families import model_family
from policyengine.types import Action

from .helpers import MODELS, diags, with_models

ROUTE = "route default -> qwen-72b\n"
JUDGED = ('verify when use_case == "legal" with qwen-72b, gemma-27b judge bedrock-llama timeout 1.5s {\n'
          '  escalate when divergence > 0.25 otherwise tag "high-confidence"\n}\n')


def test_the_decision_carries_the_judge_and_its_timeout() -> None:
    p = with_models(ROUTE + JUDGED)
    v = p.evaluate(Action(action="chat", use_case="legal")).verification
    assert v is not None and v.models == ["qwen-72b", "gemma-27b"] and v.threshold == 0.25
    assert v.judge == "bedrock-llama" and v.judge_timeout == 1.5
    untimed = with_models(ROUTE + JUDGED.replace(" timeout 1.5s", "")).evaluate(Action(action="chat", use_case="legal"))
    assert untimed.verification.judge == "bedrock-llama" and untimed.verification.judge_timeout is None
    # the second evaluation reads the verdict's 1.0 / 0.0 like any divergence
    assert p.evaluate(Action(action="chat", use_case="legal", signals={"divergence": 1.0})).effect == "escalate"
    same = p.evaluate(Action(action="chat", use_case="legal", signals={"divergence": 0.0}))
    assert same.effect == "allow" and same.tags == ["high-confidence"]


def test_fmt_keeps_the_judge_on_the_verify_line_and_is_idempotent() -> None:
    messy = MODELS + ('verify when use_case=="legal"   with qwen-72b ,gemma-27b   judge   bedrock-llama\n'
                      '   timeout   20s {  # judged\n escalate when divergence > 0.25 }\n')
    out = format_source(messy)
    assert ('verify when use_case == "legal" with qwen-72b, gemma-27b judge bedrock-llama timeout 20s {\n'
            '  # judged\n  escalate when divergence > 0.25\n}\n') in out
    assert format_source(out) == out
    assert parse(out, "t.policy").items == parse(messy, "t.policy").items


def test_a_model_may_be_called_judge() -> None:
    text = ('policy "t" version 1\nmodel judge { provider vllm base_url env("J") }\n'
            'model qwen-72b { provider vllm base_url env("Q") }\nmodel llama-70b { provider vllm base_url env("L") }\n'
            'verify when use_case == "x" with qwen-72b, judge judge llama-70b { escalate when divergence > 0.2 }\n')
    assert diags(text) == []
    [v] = [it for it in parse(text, "t.policy").items if type(it).__name__ == "Verify"]
    assert [m.value for m in v.models] == ["qwen-72b", "judge"] and v.judge.model.value == "llama-70b"


@pytest.mark.parametrize("tail, col, expected", [
    ("judge {", 60, "a name"),
    ("judge bedrock-llama timeout {", 82, "a duration"),
])
def test_a_judge_clause_with_a_missing_part_is_a_located_syntax_error(tail, col, expected) -> None:
    text = MODELS + f'verify when use_case == "x" with qwen-72b, gemma-27b {tail} escalate when divergence > 0.2 }}\n'
    [d] = diags(text)
    assert d.code == "E100" and (d.line, d.col) == (6, col) and f"expected {expected}" in d.hint, d.format()


def test_e246_unknown_judge_suggests_a_declared_model_and_is_its_own_code() -> None:
    text = MODELS + JUDGED.replace("judge bedrock-llama", "judge bedrock-lama")
    [d] = diags(text)
    assert (d.code, d.line, d.col) == ("E252", 6, 64) and d.hint == "did you mean `bedrock-llama`?"
    [d] = diags(MODELS + JUDGED.replace("judge bedrock-llama", "judge zzz"))
    assert d.code == "E252" and d.hint.startswith("declare it: model zzz")


def test_e247_suggests_a_third_model_of_another_family() -> None:
    [d] = diags(MODELS + JUDGED.replace("judge bedrock-llama", "judge qwen-72b"))
    assert (d.code, d.line, d.col) == ("E253", 6, 64) and "cannot referee its own answer" in d.message
    assert d.hint == "judge with a third model, e.g. `judge bedrock-llama`"


def test_w248_reads_the_family_from_model_id_and_name() -> None:
    text = (MODELS + 'model llama-8b { provider vllm base_url env("L8") }\n'
            + JUDGED.replace("qwen-72b, gemma-27b", "bedrock-llama, gemma-27b").replace("judge bedrock-llama",
                                                                                    "judge llama-8b"))
    [d] = diags(text)
    assert d.code == "W254" and d.severity == "warning" and (d.line, d.col) == (7, 69)
    assert "`llama-8b` and `bedrock-llama` are both Llama (Meta) models" in d.message
    # the hint names a declared model of neither compared family
    assert d.hint == "judge with a model of another family, e.g. `judge kimi-large`"
    assert diags(MODELS + JUDGED) == []  # Llama judging Qwen and Gemma: fine


def test_e217_an_embeddings_only_judge() -> None:
    text = (MODELS + 'model embedder { provider vllm base_url env("E") serves [embeddings] }\n'
            + JUDGED.replace("judge bedrock-llama", "judge embedder"))
    [d] = diags(text)
    assert (d.code, d.line, d.col) == ("E217", 7, 64) and "serves only embeddings" in d.message


@pytest.mark.parametrize("timeout", ["0s", "301s", "10m"])
def test_e249_the_timeout_is_bounded(timeout) -> None:
    [d] = diags(MODELS + JUDGED.replace("timeout 1.5s", f"timeout {timeout}"))
    assert (d.code, d.line, d.col) == ("E255", 6, 86) and timeout in d.message
    assert diags(MODELS + JUDGED.replace("timeout 1.5s", "timeout 5m")) == []


@pytest.mark.parametrize("name, model_id, family", [
    ("qwen-72b", None, "Qwen (Alibaba)"),
    ("big", "Qwen/Qwen2.5-72B-Instruct", "Qwen (Alibaba)"),
    ("bedrock-llama", "meta.llama3-70b-instruct-v1:0", "Llama (Meta)"),
    ("gemma-27b", None, "Gemma/Gemini (Google)"),
    ("vertex-gemini", "gemini-1.5-pro", "Gemma/Gemini (Google)"),
    ("claude", "anthropic.claude-3-5-sonnet-20240620-v1:0", "Claude (Anthropic)"),
    ("gpt-4o", None, "GPT (OpenAI)"),
    ("o3-mini", None, "GPT (OpenAI)"),
    ("mixtral-8x7b", None, "Mistral"),
    ("kimi-large", None, "Kimi (Moonshot)"),
    ("my-finetune", "custom-v2", None),
    ("our-model", None, None),
])
def test_model_family(name, model_id, family) -> None:
    assert model_family(name, model_id) == family


def test_eval_shows_the_judge_would_be_asked_without_calling_it(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from policyengine.cli import app

    from .helpers import POLICIES

    a = tmp_path / "a.json"
    a.write_text(json.dumps({"action": "chat", "use_case": "payments"}))
    r = CliRunner().invoke(app, ["eval", str(POLICIES / "dual-verification"), "--input", str(a), "--no-signals"])
    assert r.exit_code == 0, r.output
    assert "Verification required: run qwen-72b and gemma-27b; escalate if divergence > 0.25" in r.output
    assert "Judge: kimi-large would be asked whether the answers diverge (not called here" in r.output
    assert "within 15s" in r.output
    r = CliRunner().invoke(app, ["eval", str(POLICIES / "dual-verification"), "--input", str(a), "--no-signals",
                                 "--format", "json"])
    v = json.loads(r.output)["verification"]
    assert v["judge"] == "kimi-large" and v["judge_timeout"] == 15.0


FALLBACK = JUDGED.replace("judge bedrock-llama timeout 1.5s", "judge bedrock-llama fallback [kimi-large] timeout 1.5s")


def test_the_judge_may_have_a_fallback_chain() -> None:
    p = with_models(ROUTE + FALLBACK)
    v = p.evaluate(Action(action="chat", use_case="legal")).verification
    assert v.judge == "bedrock-llama" and v.judge_fallback == ["kimi-large"] and v.judge_timeout == 1.5
    assert with_models(ROUTE + JUDGED).evaluate(Action(action="chat", use_case="legal")).verification.judge_fallback == []
    out = format_source(MODELS + FALLBACK.replace("fallback [kimi-large]", "fallback [ kimi-large ]"))
    assert "judge bedrock-llama fallback [kimi-large] timeout 1.5s {\n" in out and format_source(out) == out


@pytest.mark.parametrize("chain, code, col, message", [
    ("fallback [kimi-larg]", "E252", 88, "unknown judge's fallback model `kimi-larg`"),
    ("fallback [gemma-27b]", "E253", 88, "the judge's fallback `gemma-27b` is one of the models it compares"),
    ("fallback [kimi-large, kimi-large]", "E213", 100, "`kimi-large` appears twice in the judge's chain"),
    ("fallback [bedrock-llama]", "E213", 88, "`bedrock-llama` appears twice in the judge's chain"),
])
def test_the_judges_fallbacks_are_checked_like_the_judge(chain, code, col, message) -> None:
    [d] = diags(MODELS + FALLBACK.replace("fallback [kimi-large]", chain))
    assert (d.code, d.line, d.col) == (code, 6, col) and message in d.message, d.format()
