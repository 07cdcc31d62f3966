"""The fitted-classifier cache: a second process loads what its fit would produce, and
anything the fit read that changed (rows, parameters, embeddings) fits again."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from policyengine.signals import fitted as cache
from policyengine.signals.intent import IntentModel

ROWS = [("I will see you in court", 1), ("court of appeal ruled on tax", 0), ("my lawyer will write", 1),
        ("the tennis court is open", 0), ("we are suing you", 1), ("food court opening hours", 0)]
PARAMS = {"C": 1.0, "max_iter": 500, "class_weight": "balanced"}


class HashEmbedder:
    """Deterministic 16-d vectors from a text's hash (a narrow unit test: no model)."""

    def __init__(self, salt: str = "") -> None:
        self.salt = salt

    def embed(self, texts):
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256((self.salt + t).encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "fits"))
    return tmp_path / "fits"


def _fit(embedder, rows, calls):
    def fit():
        calls.append(1)
        x = embedder.embed([t for t, _ in rows])
        return LogisticRegression(**PARAMS).fit(x, np.array([y for _, y in rows]))
    return fit


def test_a_second_fit_of_the_same_inputs_loads_the_same_classifier(where):
    e, calls = HashEmbedder(), []
    first = cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    second = cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    assert calls == [1] and len(list(where.glob("t-*.npz"))) == 1
    x = e.embed(["see you in court", "a court date for the match"])
    assert np.array_equal(first.predict_proba(x), second.predict_proba(x))
    assert second.get_params()["class_weight"] == "balanced" and second.n_features_in_ == 16


@pytest.mark.parametrize("change", ["rows", "params", "key", "embedder"])
def test_anything_the_fit_read_that_changed_fits_again(where, change):
    e, calls = HashEmbedder(), []
    cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls), key={"w": 1})
    rows, params, key, e2 = ROWS, PARAMS, {"w": 1}, e
    if change == "rows":
        rows = [*ROWS[:-1], ("food court opening times", 0)]
    elif change == "params":
        params = {**PARAMS, "C": 2.0}
    elif change == "key":
        key = {"w": 2}
    else:
        e2 = HashEmbedder("another model")
    cache.fitted("t", params, rows, e2, _fit(e2, rows, calls), key=key)
    assert calls == [1, 1] and len(list(where.glob("t-*.npz"))) == 2


def test_an_unreadable_or_pickled_file_is_ignored_and_rewritten(where):
    e, calls = HashEmbedder(), []
    cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    (path,) = where.glob("t-*.npz")
    path.write_bytes(b"not an npz")
    cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    # an object array needs pickle to load: refused (a writable cache can never run code)
    with open(path, "wb") as f:
        np.savez(f, coef_=np.array([object()], dtype=object), intercept_=np.zeros(1), classes_=np.arange(2),
                 n_iter_=np.ones(1))
    clf = cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    assert calls == [1, 1, 1] and clf.coef_.dtype.kind == "f"
    # numbers, but not a logistic regression's (three intercepts for one row of weights)
    with open(path, "wb") as f:
        np.savez(f, coef_=np.zeros((1, 16)), intercept_=np.zeros(3), classes_=np.arange(2), n_iter_=np.ones(1))
    cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    assert calls == [1, 1, 1, 1]


def test_off_never_reads_or_writes(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_CACHE, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    e, calls = HashEmbedder(), []
    cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    assert calls == [1, 1] and not any(tmp_path.rglob("*.npz"))


def test_an_unwritable_directory_costs_a_fit_not_an_answer(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    monkeypatch.setenv(cache.ENV_CACHE, str(blocker / "fits"))
    e, calls = HashEmbedder(), []
    clf = cache.fitted("t", PARAMS, ROWS, e, _fit(e, ROWS, calls))
    assert calls == [1] and clf.predict(e.embed(["we are suing you"])).shape == (1,)


def test_an_intent_model_loads_its_cached_fit_with_identical_probabilities(where):
    e = HashEmbedder()
    rows = [(t, bool(y)) for t, y in ROWS]
    a = IntentModel("litigation", e, training=rows)
    texts = ["I will see you in court.", "The court is booked for Saturday."]
    pa = [r.probability for r in a.results(texts)]
    b = IntentModel("litigation", e, training=rows)
    b.fit()
    assert len(list(where.glob("intent-litigation-*.npz"))) == 1
    assert [r.probability for r in b.results(texts)] == pa and b.fingerprint() == a.fingerprint()
