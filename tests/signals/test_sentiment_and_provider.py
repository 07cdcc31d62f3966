"""Sentiment, the default SignalProvider and the async pre-compute helper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policyengine.signals import (
    DefaultSignalProvider,
    MentionMatch,
    SignalProvider,
    precompute,
    vader_sentiment,
)
from policyengine.signals.embedder import Embedder
from policyengine.signals.sentiment import SentimentScorer, training_set
from policyengine.types import Action

DATA = Path(__file__).resolve().parents[1] / "data"
LIT = ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]


def test_provider_implements_the_protocol_and_constructs_cheaply():
    # a fresh embedder: the models of the shared one may already be trained by earlier tests
    p = DefaultSignalProvider(Embedder())
    assert isinstance(p, SignalProvider)
    assert p._sentiment._clf is None and p.intent_model("litigation")._clf is None  # nothing trained yet
    assert p._sentiment._litigation() is p.intent_model("litigation")  # one litigation model, not two


def test_providers_share_their_trained_models():
    e = Embedder()
    a, b = DefaultSignalProvider(e), DefaultSignalProvider(e)
    assert a._sentiment is b._sentiment and a.intent_model("litigation") is b.intent_model("litigation")
    assert DefaultSignalProvider(e, sentiment_method="vader")._sentiment is not a._sentiment
    assert DefaultSignalProvider(Embedder())._sentiment is not a._sentiment


@pytest.mark.parametrize(
    "text",
    ["Oh brilliant, the update deleted all my files. Just what I needed.",  # sarcasm
     "With the greatest respect, I find your handling of this wholly unacceptable.",  # polite fury
     "I HAVE CALLED FIVE TIMES AND NOBODY HELPS",  # shouting
     "not happy at all, nobody anwsers the fone",  # negation + typos
     "The staff were nice but it broke in two days and nobody will refund me."],  # mixed
)
def test_low_sentiment_hard_cases(provider, text):
    assert provider.sentiment(text) < 0.3


@pytest.mark.parametrize(
    "text",
    ["Thank you, the engineer was brilliant and everything works now.",
     "Could you tell me when my order will be dispatched?",
     "I couldn't be happier with the service.",
     "PLEASE CONFIRM MY DELIVERY ADDRESS"],
)
def test_not_low_sentiment(provider, text):
    assert provider.sentiment(text) >= 0.3


# Everyday messages with no sentiment (none of them is in the training set).
EVERYDAY = [
    "Hello, a new conversation.",  # the reported case: ~0.2 before neutral greetings were trained on
    "Hi, I'd like some help please.",
    "Afternoon, quick one.",
    "Hey, are you there?",
    "Order 31415",
    "My order number is 27182 and the postcode is LS1 4AB.",
    "What time do you open on Saturday?",
    "Can I pay in instalments?",
    "I need to update my phone number.",
    "Okay, thanks.",
    "Sure, one sec.",
    "Following up on ticket 9001.",
    "It's the large one in black.",
    "Just checking the status of my return.",
]

HARD_NEGATIVES = [
    "Oh brilliant, the update deleted all my files. Just what I needed.",
    "Great, another week without my refund.",
    "With the greatest respect, I find your handling of this wholly unacceptable.",
    "I am deeply unhappy with how this has been handled. Kind regards.",
    "I HAVE CALLED FIVE TIMES AND NOBODY HELPS",
    "THIS IS RIDICULOUS",
    "Thanks for nothing.",
    "not happy at all, nobody anwsers the fone",
]


def test_everyday_neutral_messages_are_not_escalated_and_hard_negatives_still_are(provider):
    train = {t.lower() for t, _ in training_set()}
    assert not train & {t.lower() for t in EVERYDAY}
    neutral = dict(zip(EVERYDAY, provider._sentiment.scores(EVERYDAY), strict=True))
    # not escalated by `sentiment < 0.3` (issue #16 retrained the classifier: 0.4 was a margin, not the rule)
    assert {t: s for t, s in neutral.items() if s < 0.3} == {}
    negative = dict(zip(HARD_NEGATIVES, provider._sentiment.scores(HARD_NEGATIVES), strict=True))
    assert {t: s for t, s in negative.items() if s >= 0.3} == {}


def test_scores_are_in_unit_interval_and_ordered(provider):
    neg = provider.sentiment("This is the worst service I have ever had.")
    neu = provider.sentiment("What are your opening hours?")
    pos = provider.sentiment("Fantastic service, thank you so much!")
    assert 0.0 <= neg < neu < pos <= 1.0


def test_empty_text_is_neutral_and_bad_input_errors(provider):
    assert provider.sentiment("") == 0.5
    with pytest.raises(TypeError):
        provider.sentiment(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        SentimentScorer(method="magic")  # type: ignore[arg-type]


def test_vader_method_needs_no_model():
    s = SentimentScorer(method="vader")
    assert s.score("I love it") == pytest.approx(vader_sentiment("I love it"), abs=1e-4)
    assert s._clf is None


def test_training_and_evaluation_sets_do_not_overlap():
    train = {t.lower() for t, _ in training_set()}
    rows = [json.loads(x) for x in (DATA / "sentiment.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) >= 150
    assert not train & {r["text"].lower() for r in rows}


def test_labelled_sentiment_set_meets_the_target(provider):
    rows = [json.loads(x) for x in (DATA / "sentiment.jsonl").read_text().splitlines() if x.strip()]
    truth = np.array([r["label"] == "negative" for r in rows])
    pred = np.array(provider._sentiment.scores([r["text"] for r in rows])) < 0.3
    bacc = ((pred & truth).sum() / truth.sum() + (~pred & ~truth).sum() / (~truth).sum()) / 2
    assert bacc >= 0.85


def test_mentions_and_confidence_through_the_provider(provider):
    hit = provider.mentions("My solicitor will be in touch.", "litigation", LIT)
    assert isinstance(hit, MentionMatch) and hit.phrase == "solicitor"
    assert provider.mentions("Sue from your team was great.", "litigation", LIT) is None
    assert provider.confidence("answer", {"confidence": 0.42}) == 0.42
    assert provider.confidence("answer", {}) is None


def test_labelled_litigation_set_meets_the_target(provider):
    lex = [*LIT, "lawyer", "legal proceedings", "small claims", "tribunal"]
    rows = [json.loads(x) for x in (DATA / "litigation.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) >= 150
    truth = np.array([r["litigation"] for r in rows])
    pred = np.array([provider.mentions(r["text"], "litigation", lex) is not None for r in rows])
    tp = (pred & truth).sum()
    assert tp / pred.sum() >= 0.95 and tp / truth.sum() >= 0.95


async def test_precompute_fills_only_what_is_needed(provider):
    action = Action(action="draft_response", text="I will sue you, this is a disgrace.",
                    fields={"confidence": "90%"}, signals={"sentiment": 0.9})
    out = await precompute(provider, action, {"sentiment", "confidence", "mentions:litigation"},
                           lexicons={"litigation": LIT})
    assert "sentiment" not in out  # the caller's value wins
    assert out["confidence"] == 0.9
    assert out["mentions:litigation"].matched_text == "sue"
    with pytest.raises(ValueError, match="lexicon"):
        await precompute(provider, action, {"mentions:pii"})
    with pytest.raises(ValueError, match="unknown signal"):
        await precompute(provider, action, {"mood"})


def test_optional_embedding_second_signal_for_mentions(embedder):
    p = DefaultSignalProvider(embedder, semantic_mentions=0.45)
    hit = p.mentions("Thanks for nothing. I'll be getting my legal representatives involved.", "litigation",
                     ["legal action", "solicitor"])
    assert hit is not None and hit.method == "embedding"
    assert hit.matched_text == "I'll be getting my legal representatives involved."
    assert p.mentions("What time do you open?", "litigation", ["legal action", "solicitor"]) is None
    lexical = p.mentions("My solicitor will call.", "litigation", ["legal action", "solicitor"])
    assert lexical.method == "lexical"
    with pytest.raises(ValueError, match="threshold"):
        DefaultSignalProvider(embedder, semantic_mentions=0)
