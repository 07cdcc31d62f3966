"""Round-3 invariants of the signals, on texts written for these tests (none is in a labelled split)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from policyengine.signals.intent import (
    RESPELL_WORDS,
    _skeleton_targets,
    negated_without_resolve,
    respell,
)

ROOT = Path(__file__).resolve().parents[2]


def test_vowel_misspellings_of_topic_words_are_respelt_and_others_kept():
    t = _skeleton_targets(RESPELL_WORDS["litigation"])
    assert respell("my lawyar and my atturney", t) == "my lawyer and my attorney"
    assert respell("Ill sew you for it", t) == "Ill sue you for it"
    for text in ("my counsellor", "the sewing class", "Please cancel", "proceedings"):
        assert respell(text, t) == text


def test_negated_topic_words_without_resolve_are_a_negated_threat():
    s = "I'm not taking you to court over a lamp, but please refund it."
    assert negated_without_resolve(s, [s.index("court")])
    s = "No solicitors, and I'm not going to court either. Just refund it."
    assert negated_without_resolve(s, [s.index("solicitors"), s.index("court")])
    s = "I'm not going to court yet, but I will if this carries on."
    assert not negated_without_resolve(s, [s.index("court")])
    s = "If the heater isn't fixed by Friday my solicitor takes over."
    assert not negated_without_resolve(s, [s.index("solicitor")])
    s = "I'm not a lawyer, but I will see you in court."
    assert not negated_without_resolve(s, [s.index("lawyer"), s.index("court")])


def test_negated_and_conditional_threats_end_to_end(provider):
    model = provider.intent_model("litigation")
    assert not model.means("No lawyers needed, I'm not going to court over a £9 toaster, just replace it.")
    assert model.means("If the deposit isn't back by Monday my solicitor will issue a claim.")
    assert model.means("im going to sew you for the damage")


def test_a_customers_calm_legal_notice_is_negative_and_the_reply_is_not(provider):
    assert provider.sentiment("Please note that I have instructed solicitors regarding the unrepaired roof.") < 0.3
    assert provider.sentiment("We note that you have instructed solicitors and will reply to them directly.") >= 0.3


def test_routine_transactional_text_is_neutral_both_ways(provider):
    for text in ("Can you change my billing date to the 20th?",
                 "Your refund of $18.40 has been processed and will reach your card in 3-5 days."):
        assert provider.sentiment(text) >= 0.3, text


def test_the_benchmark_skips_an_absent_untouched_split_and_marks_splits(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("signals_eval_under_test", ROOT / "benchmarks" / "signals_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.TUNED_ON == ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7", "holdout8",
                            "holdout9", "holdout10", "holdout11") and mod.UNTOUCHED == ("holdout12",)
    monkeypatch.setattr(mod, "DATA", tmp_path)
    assert not mod.present("holdout12")
    monkeypatch.setattr(sys, "argv", ["signals_eval.py", "--split", "holdout12", "--no-latency"])
    mod.main()
    out = capsys.readouterr().out
    assert "holdout12: skipped" in out and "not present" in out
