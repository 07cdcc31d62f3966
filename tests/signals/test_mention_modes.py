"""`text mentions LEX [by words|intent|both]`: the language, the checker, the evaluator and the provider."""

from __future__ import annotations

import re

import pytest

from policyengine.dsl import PolicyError, load_policy_set
from policyengine.signals import precompute
from policyengine.types import Action

HEAD = 'policy "m" version 1\nlexicon litigation ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]\n'


def _policy(tmp_path, rule: str):
    p = tmp_path / "m.policy"
    p.write_text(HEAD + rule + "\n")
    return load_policy_set([p])


def _errors(tmp_path, rule: str) -> list:
    with pytest.raises(PolicyError) as exc:
        _policy(tmp_path, rule)
    return exc.value.diagnostics


def test_unknown_mode_is_a_located_error_with_a_hint(tmp_path):
    (d,) = _errors(tmp_path, "escalate when text mentions litigation by intnt")
    assert d.code == "E225" and d.line == 3 and d.col == 43
    assert "did you mean `intent`" in d.hint


def test_intent_on_a_lexicon_without_an_intent_model_is_an_error(tmp_path):
    (d,) = _errors(tmp_path, 'lexicon refunds ["refund"]\nescalate when text mentions refunds by intent')
    assert d.code == "E226" and d.line == 4
    assert "by words" in d.hint


def test_modes_format_and_name_their_signals(tmp_path):
    from policyengine.dsl.formatter import format_source

    src = HEAD + ("escalate when text mentions litigation by intent\nescalate when text mentions litigation by words\n"
                  "escalate when text mentions litigation\n")
    assert "mentions litigation by intent" in format_source(src)
    pol = _policy(tmp_path, "escalate when text mentions litigation by intent or text mentions litigation by words"
                  " or text mentions litigation")
    needed = pol.signals_needed(Action(action="draft_response", text="x"))
    assert {"mentions:litigation", "mentions:litigation:intent", "mentions:litigation:words"} <= needed


@pytest.mark.parametrize(("text", "words", "intent"), [
    ("I'm not going to sue anyone, I just want the lamp replaced.", True, False),   # negated
    ("My neighbour is suing her builder, nothing to do with you.", True, False),  # a third party
    ("Is the tennis court set still on sale?", False, False),                      # another sense
    ("I've instructed Harrow & Finch LLP to act for me in this matter.", False, True),  # indirect
    ("Please treat this as a letter before claim.", False, True),
    ("I'm going to sue you.", True, True),
])
def test_words_and_intent_decide_differently(tmp_path, provider, text, words, intent):
    by_words = _policy(tmp_path, "escalate when text mentions litigation by words")
    default = _policy(tmp_path, "escalate when text mentions litigation")
    by_intent = _policy(tmp_path, "escalate when text mentions litigation by intent")
    act = Action(action="draft_response", text=text)
    assert (by_words.evaluate(act, provider).effect == "escalate") is words
    assert (by_intent.evaluate(act, provider).effect == "escalate") is intent
    assert (default.evaluate(act, provider).effect == "escalate") is intent


def test_the_explanation_shows_the_intent_the_sentence_and_the_word(tmp_path, provider):
    pol = _policy(tmp_path, "escalate when text mentions litigation")
    d = pol.evaluate(Action(action="draft_response", text="Thanks for nothing. My solicitor will be in touch."), provider)
    (hit,) = [h for h in d.rules if h.kind == "escalate"]
    because = " ".join(hit.because)
    assert re.search(r"intent [01]\.\d\d", because) and "My solicitor will be in touch." in because and "'solicitor'" in because
    sig = d.signals["mentions:litigation"]
    assert sig["mode"] == "both" and sig["phrase"] == "solicitor" and sig["intent"] >= 0.3


def test_by_words_keeps_the_old_lexical_explanation(tmp_path, provider):
    pol = _policy(tmp_path, "escalate when text mentions litigation by words")
    d = pol.evaluate(Action(action="draft_response", text="Fix this or we are suing you."), provider)
    assert d.signals["mentions:litigation:words"]["matched_text"] == "suing"


def test_a_provider_without_intent_decides_by_words_and_says_so(tmp_path):
    pol = _policy(tmp_path, "escalate when text mentions litigation by intent")
    d = pol.evaluate(Action(action="draft_response", text="I will sue you"))
    assert d.effect == "escalate"
    assert any("no intent model" in n for n in d.notes)


async def test_precompute_fills_each_mode(tmp_path, provider):
    pol = _policy(tmp_path, "escalate when text mentions litigation by intent or text mentions litigation by words")
    act = Action(action="draft_response", text="You will be hearing from my legal team.")
    got = await precompute(provider, act, pol.signals_needed(act), lexicons=pol.lexicons)
    assert got["mentions:litigation:words"] is None
    assert got["mentions:litigation:intent"].intent >= 0.3
    d = pol.evaluate(act.model_copy(update={"signals": got}))
    assert d.effect == "escalate"


def test_intent_mode_needs_the_embedding_stack():
    from policyengine.signals.requirements import _modules_for

    assert "torch" in _modules_for("mentions:litigation:intent")
    assert _modules_for("mentions:litigation:words") == ()
