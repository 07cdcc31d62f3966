"""The adapted sentiment model: adapter loading, scale, backends, and its place in the sentiment score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policyengine.signals import SentimentScorer
from policyengine.signals.adapted import merge_adapters
from policyengine.signals.intent import IntentModel
from policyengine.signals.sentiment import MODEL_WEIGHT
from policyengine.signals.sentiment_model import (
    ADAPTERS_TRAINED_ON,
    SentimentModel,
    SentimentModelError,
    adapters_path,
    shared_sentiment_model,
)

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def shipped() -> dict[str, np.ndarray]:
    with np.load(adapters_path()) as f:
        return {k: f[k] for k in f.files}


def test_the_adapter_file_ships_inside_the_package(shipped):
    assert adapters_path().is_file()
    assert shipped["head.weight"].shape == (3, 384) and shipped["head.bias"].shape == (3,)
    assert sum(k.endswith(".A") for k in shipped) == sum(k.endswith(".B") for k in shipped) > 0


def test_a_one_class_head_is_refused_for_three_classes(shipped):
    from transformers import AutoModel

    from policyengine.signals import default_model_path

    model = AutoModel.from_pretrained(default_model_path()).eval()
    arrays = dict(shipped, **{"head.weight": np.zeros((1, 384), np.float32), "head.bias": np.zeros(1, np.float32)})
    before = model.encoder.layer[0].attention.self.query.weight.detach().clone()
    with pytest.raises(SentimentModelError, match="the head must map 384 to 3"):
        merge_adapters(model, arrays, 3, SentimentModelError)
    assert model.encoder.layer[0].attention.self.query.weight.equal(before)


def test_a_missing_adapter_file_is_a_clear_error(tmp_path):
    model = SentimentModel(adapters=tmp_path / "absent.npz", backend="torch")
    with pytest.raises(SentimentModelError, match=r"absent\.npz"):
        model.scores(["hello"])


def test_scores_are_on_the_scorer_scale_and_blank_is_neutral():
    m = shared_sentiment_model()
    texts = ["This is the third time you have charged me twice. I want my money back today.",
             "Thank you so much, the engineer was brilliant and fixed it in ten minutes!",
             "Dear customer, your refund is on its way.", "   "]
    s = m.scores(texts)
    assert all(0.0 <= x <= 1.0 for x in s)
    assert s[3] == 0.5
    assert s[0] < 0.3 < s[2] and s[1] > 0.7
    p = m.probabilities(texts[:3])
    assert all(sum(r) == pytest.approx(1.0, abs=1e-5) for r in p)
    assert s[:3] == pytest.approx([pos + 0.5 * neu for _, neu, pos in p], abs=1e-6)


def test_onnx_and_torch_agree_at_fp32():
    pytest.importorskip("onnxruntime", reason="the ONNX path needs onnxruntime (the embeddings extra)")
    texts = ["Wow, a third missed delivery. Amazing service, truly.", "Can you post the missing screws? No rush.",
             "word " * 400]  # longer than the window: truncated the same way on both
    onnx, torch_ = SentimentModel(backend="onnx"), SentimentModel(backend="torch")
    assert onnx.scores(texts) == pytest.approx(torch_.scores(texts), abs=1e-4)
    assert (onnx.backend, torch_.backend) == ("onnx", "torch")


def test_int8_stays_close_to_fp32_on_both_backends():
    """int8 (the service's default) moves the reading little from fp32, never across 0.3 on clear text."""
    pytest.importorskip("onnxruntime", reason="the ONNX path needs onnxruntime (the embeddings extra)")
    texts = ["I have been without heating for nine days and nobody has called me back.",
             "Your parcel was delivered at 10:42 and signed for by J. Okafor.",
             "Brilliant service, thank you, the new card arrived the next morning."]
    ref = SentimentModel(backend="onnx").scores(texts)
    for backend in ("onnx", "torch"):
        got = SentimentModel(backend=backend, int8=True).scores(texts)
        assert got == pytest.approx(ref, abs=0.1)
        assert [x < 0.3 for x in got] == [x < 0.3 for x in ref] == [True, False, False]


def test_the_model_argument_is_checked(embedder):
    with pytest.raises(ValueError, match="sentiment model"):
        SentimentScorer(embedder, model="yes")
    assert SentimentScorer(embedder, method="vader").model is None


def test_the_score_mixes_the_classifier_and_the_model(embedder):
    """The score is the weighted mean of the classifier's reading (after its idioms) and the model's."""
    text = "The invoice shows a charge for a router I sent back in March."
    mixed = SentimentScorer(embedder).score(text)
    alone = SentimentScorer(embedder, model=None).score(text)
    read = shared_sentiment_model().scores([text])[0]
    assert mixed == pytest.approx((1 - MODEL_WEIGHT) * alone + MODEL_WEIGHT * read, abs=1e-3)


def test_the_mix_beats_the_classifier_on_a_split_the_model_never_saw(embedder):
    """holdout9 was held out of the model's training and chose only the mix's weight."""
    assert "holdout9" not in ADAPTERS_TRAINED_ON
    rows = [json.loads(x) for x in (DATA / "signals_holdout9" / "messages.jsonl").read_text("utf-8").splitlines() if x]
    truth = np.array([r["sentiment"] == "negative" for r in rows], dtype=bool)
    texts = [r["text"] for r in rows]

    def ba(pred: np.ndarray) -> float:
        return float((pred[truth].mean() + (~pred[~truth]).mean()) / 2)

    held = set(texts)
    intent = IntentModel("litigation", embedder, training=[
        (r["text"], bool(r["label"])) for r in _rows("intent_litigation.jsonl") if r["text"] not in held])
    training = [(r["text"], r["label"]) for r in _rows("sentiment_train.jsonl") if r["text"] not in held]
    mixed = SentimentScorer(embedder, training=training, intent=intent)
    alone = SentimentScorer(embedder, training=training, intent=intent, model=None)
    assert ba(np.array(mixed.scores(texts)) < 0.3) > ba(np.array(alone.scores(texts)) < 0.3)


def _rows(name: str) -> list[dict]:
    path = Path(adapters_path()).parent / name
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def test_the_service_mode_comes_from_the_environment(monkeypatch, embedder):
    from policyengine.signals import sentiment_model

    monkeypatch.delenv(sentiment_model.ENV_MODE, raising=False)
    assert sentiment_model.configured_mode() == "int8" and shared_sentiment_model().int8
    monkeypatch.setenv(sentiment_model.ENV_MODE, " FP32 ")
    assert not shared_sentiment_model().int8 and not SentimentScorer(embedder).model.int8
    monkeypatch.setenv(sentiment_model.ENV_MODE, "off")
    assert SentimentScorer(embedder).model is None
    monkeypatch.setenv(sentiment_model.ENV_MODE, "fast")
    with pytest.raises(ValueError, match="POLICYENGINE_SENTIMENT_MODEL must be one of fp32, int8, off"):
        SentimentScorer(embedder)


def test_int8_is_deterministic_per_text():
    """At int8 each text runs alone: its score never depends on what it was scored with."""
    m = SentimentModel(int8=True)
    texts = ["Third time asking. Where is my refund?", "Thanks, all sorted now!", "Order 58213 " * 40]
    assert m.scores(texts) == [m.scores([t])[0] for t in texts]
