"""`fitted.predict_proba` gives scikit-learn's probabilities: the shipped sentiment and intent
classifiers on their real features, and synthetic two- and three-class fits at the extremes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from policyengine.signals.fitted import predict_proba

TEXTS = [
    "I've been waiting three weeks for my order and nobody has bothered to reply.",
    "Dear customer, your refund is on its way.",
    "My solicitor will be in touch about the damaged sofa.",
    "I'm not going to sue, I just want the charge reversed.",
    "Brilliant service, thank you so much!",
    "",
]


def test_the_shipped_sentiment_classifier_scores_as_scikit_learn_does(provider):
    scorer = provider._sentiment
    clf = scorer._ensure()
    texts = [t for t in TEXTS if t]
    threat = scorer._threats(texts) if scorer.method == "combined" else None
    x = scorer._features(texts, threat)
    np.testing.assert_allclose(predict_proba(clf, x), clf.predict_proba(x), rtol=0, atol=0)
    assert scorer.scores(TEXTS)[-1] == 0.5  # blank text is neutral, never scored


def test_the_shipped_intent_classifier_scores_as_scikit_learn_does(provider):
    model = provider.intent_model("litigation")
    clf = model._ensure()
    texts = [t for t in TEXTS if t]
    x = model._features(texts, [0] * len(texts))
    np.testing.assert_allclose(predict_proba(clf, x), clf.predict_proba(x), rtol=0, atol=0)


@pytest.mark.parametrize("classes", [2, 3])
def test_synthetic_fits_agree_including_saturated_decisions(classes):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(int) + ((x[:, 1] > 0.5).astype(int) if classes == 3 else 0)
    clf = LogisticRegression(C=100.0, max_iter=2000).fit(x, y)
    probe = np.vstack([rng.normal(size=(50, 5)), 1e4 * rng.normal(size=(10, 5))]).astype(np.float32)
    got = predict_proba(clf, probe)
    np.testing.assert_allclose(got, clf.predict_proba(probe), rtol=0, atol=0)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
