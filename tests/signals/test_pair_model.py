"""The answer-pair model: adapter loading, symmetry, backends, and its place in the divergence score."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from policyengine.signals import DivergenceScorer
from policyengine.signals.divergence import PAIR_BLEND_AT_THRESHOLD
from policyengine.signals.pair_model import (
    ADAPTERS_TRAINED_ON,
    PairModel,
    PairModelError,
    adapters_path,
    merge_adapters,
    shared_pair_model,
)

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def base_model():
    from transformers import AutoModel

    from policyengine.signals import default_model_path

    return AutoModel.from_pretrained(default_model_path()).eval()


@pytest.fixture(scope="module")
def shipped() -> dict[str, np.ndarray]:
    with np.load(adapters_path()) as f:
        return {k: f[k] for k in f.files}


def _snapshot(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_the_adapter_file_ships_inside_the_package(shipped):
    assert adapters_path().is_file()
    assert "head.weight" in shipped and "head.bias" in shipped
    assert sum(k.endswith(".A") for k in shipped) == sum(k.endswith(".B") for k in shipped) > 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("head.weight"), "no head.weight"),
        (lambda a: a.pop(next(k for k in sorted(a) if k.endswith(".B"))), "no B factor"),
        (lambda a: a.update({"encoder.nothing.A": np.zeros((16, 384), np.float32),
                             "encoder.nothing.B": np.zeros((384, 16), np.float32)}), "names no linear layer"),
        (lambda a: a.update({k: a[k][:, :-1] for k in sorted(a)[:8] if k.endswith(".A")}), "do not fit"),
        (lambda a: a.update({"head.weight": np.zeros((2, 384), np.float32)}), "the head must map"),
        (lambda a: [a.pop(k) for k in list(a) if k.endswith((".A", ".B"))], "holds no adapters"),
    ],
    ids=["no-head", "no-B", "unknown-module", "bad-shape", "bad-head", "no-adapters"],
)
def test_a_malformed_adapter_file_is_refused_and_changes_nothing(base_model, shipped, mutate, message):
    arrays = dict(shipped)
    mutate(arrays)
    before = _snapshot(base_model)
    with pytest.raises(PairModelError, match=message):
        merge_adapters(base_model, arrays)
    after = _snapshot(base_model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_missing_adapter_file_is_a_clear_error(tmp_path):
    model = PairModel(adapters=tmp_path / "absent.npz", backend="torch")
    with pytest.raises(PairModelError, match=r"absent\.npz"):
        model.probability("a", "b")


def test_the_backend_name_is_checked():
    with pytest.raises(ValueError, match="auto, onnx or torch"):
        PairModel(backend="gpu")


def test_probability_is_symmetric_and_a_probability():
    m = shared_pair_model()
    pairs = [("Your refund of £50 will arrive on Friday.", "Your refund of £500 will arrive on Friday."),
             ("We approved the claim.", "The claim has been approved."),
             ("Send it to 12 High Street.", "Send it to 14 Mill Lane.")]
    forward = m.probabilities(pairs)
    backward = m.probabilities([(b, a) for a, b in pairs])
    assert forward == pytest.approx(backward, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in forward)
    assert m.probability(*pairs[0]) == pytest.approx(forward[0], abs=1e-5)


def test_onnx_and_torch_agree():
    pytest.importorskip("onnxruntime", reason="the ONNX path needs onnxruntime (the embeddings extra)")
    pairs = [("We will refund the fee.", "We will not refund the fee."),
             ("The parcel goes to Leeds.", "The parcel goes to Leeds, by courier, tomorrow morning."),
             ("x " * 400, "y " * 400)]  # longer than the window: truncated the same way on both
    onnx = PairModel(backend="onnx")
    torch_ = PairModel(backend="torch")
    assert onnx.probabilities(pairs) == pytest.approx(torch_.probabilities(pairs), abs=1e-4)
    assert (onnx.backend, torch_.backend) == ("onnx", "torch")


def test_the_divergence_score_blends_rules_and_the_pair_model(embedder):
    with_model = DivergenceScorer(embedder)
    rules_only = DivergenceScorer(embedder, pair_model=None)
    a, b = "We have approved your refund of £40.", "We have refused your refund of £40."
    blended, plain = with_model.score(a, b), rules_only.score(a, b)
    assert plain.pair_probability is None and plain.divergence == plain.rules
    assert blended.pair_probability is not None
    assert blended.rules == plain.rules
    assert blended.divergence == pytest.approx(with_model.blend(blended.rules, blended.pair_probability), abs=1e-3)
    assert any("answer-pair model" in r for r in blended.reasons)


def test_the_blend_is_monotone_and_keeps_its_ends(embedder):
    s = DivergenceScorer(embedder, pair_model=None)
    grid = np.linspace(0, 1, 21)
    assert s.blend(0, 0) == 0 and s.blend(1, 1) == pytest.approx(1)
    for r in grid:
        vals = [s.blend(r, p) for p in grid]
        assert all(x <= y + 1e-12 for x, y in itertools.pairwise(vals))
    assert s.blend(PAIR_BLEND_AT_THRESHOLD, PAIR_BLEND_AT_THRESHOLD) == pytest.approx(s.threshold)


def test_pair_model_argument_is_checked(embedder):
    with pytest.raises(ValueError, match="pair_model"):
        DivergenceScorer(embedder, pair_model="yes")


def test_the_blend_beats_the_rules_on_a_split_the_model_never_saw(embedder):
    """The untouched split (holdout12) was held out of the pair model's training."""
    unseen = [d for d in sorted(DATA.glob("signals_holdout*")) if d.name.removeprefix("signals_") not in ADAPTERS_TRAINED_ON
              and (d / "pairs.jsonl").is_file()]
    if not unseen:
        pytest.skip("every labelled split present is in the pair model's training data; the untouched split "
                    "(tests/data/signals_holdout12/) is added at the end")
    rows = [json.loads(x) for x in (unseen[0] / "pairs.jsonl").read_text("utf-8").splitlines() if x]
    truth = np.array([r["divergent"] for r in rows], dtype=bool)
    res = [DivergenceScorer(embedder).score(r["a"], r["b"]) for r in rows]

    def ba(pred: np.ndarray) -> float:
        return float((pred[truth].mean() + (~pred[~truth]).mean()) / 2)

    blended = ba(np.array([not x.aligned for x in res]))
    rules = ba(np.array([x.rules > x.threshold for x in res]))
    assert blended > rules


def test_answers_on_different_topics_are_left_to_the_rules(embedder):
    """The pair model learned from two answers to one question; unrelated answers are outside it."""
    s = DivergenceScorer(embedder)
    r = s.score("Our office opens at nine and the car park is free for visitors.",
                "No. The refund was refused on 3 March and you owe us 500 GBP.")
    assert r.cosine < 0.40 and r.pair_probability is None
    assert not r.aligned and r.divergence == r.rules


def test_int8_is_deterministic_per_pair():
    """At int8 each pair runs alone: its probability never depends on its batch-mates."""
    m = PairModel(int8=True)
    pairs = [("We will refund the fee.", "We will not refund the fee."),
             ("Your call is booked for 9:30 on Monday.", "Your call is booked for Monday at half past nine, "
              "and the engineer will ring from a withheld number about ten minutes before.")]
    together = m.probabilities(pairs)
    assert together == [m.probability(a, b) for a, b in pairs]
