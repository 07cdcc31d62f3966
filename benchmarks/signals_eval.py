"""Evaluate the escalation signals on the issue #16 labelled sets and time them, with the shipped policy.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/signals_eval.py [--split tune|holdout|holdout2|holdout3|holdout4|holdout5|holdout6|holdout7|holdout8|holdout9|holdout10|holdout11|holdout12|tuned|all]
        [--rounds 1] [--misses] [--no-latency] [--latency-only] [--quantize 0|1]

Labelled splits (see tests/data/signals_README.md), each a directory tests/data/signals_<split>/
with messages.jsonl and pairs.jsonl:

  tune, holdout, holdout2,  TUNED ON: their misses have been read and their rows are in the
  holdout3, holdout4,       shipped training data.
  holdout5, holdout6,
  holdout7, holdout8,
  holdout9, holdout10,
  holdout11
  holdout12                 UNTOUCHED: written by someone else, added at the end and scored
                            once; in no training data. Skipped, with a message, when absent.

`tuned` = the three tuned-on splits, `all` (the default) = every split present. Each split is
scored with the lexicon and thresholds of policies/support-desk (the shipped policy). Printed,
each beside its naive baseline measured in the same run:

  sentiment balanced accuracy (`sentiment < 0.3`) vs VADER alone
  `text mentions litigation` precision / recall (the default, intent-aware mode, and `by words`)
      vs a plain keyword list (substring match)
  divergence balanced accuracy (`divergence > 0.25`) vs cosine alone at its best threshold on the
      same split (an advantage for the baseline)

Cross-validation. The sentiment and intent classifiers of a tuned-on split are scored
**leave-one-split-out**: retrained on the shipped training data minus every row whose text
is in that split (the sentiment model's threat feature uses an intent model retrained the
same way), so each split is scored by models that never saw it. The hand-written rules
(sentiment idioms, intent cues, divergence checks) are the same in every rotation and were
written reading the tuned-on splits' misses, so LOSO figures are optimistic for them;
divergence has no trained part and its figures are in-sample for the rules. holdout12 is
scored by the models as shipped.

Latency: CPU time (time.process_time) on one core (torch 1 thread), embedding cache cleared per
message / pair, per message (sentiment + the intent-aware mention) and per answer pair (both
embeddings and every check), median and p90.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data"
POLICY = ROOT / "policies" / "support-desk"

TUNED_ON = ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7", "holdout8",
            "holdout9", "holdout10", "holdout11")  # read while tuning; rows in the shipped training data
UNTOUCHED = ("holdout12",)  # never read; scored once at the end
SPLITS = TUNED_ON + UNTOUCHED
SHOW_MISSES: set[str] = set()
SUMMARY: dict[str, dict[str, float]] = defaultdict(dict)


def split_dir(split: str) -> Path:
    return DATA / f"signals_{split}"


def shown(path: Path) -> str:
    """The path relative to the repository when it is inside it, else as it is."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def present(split: str) -> bool:
    d = split_dir(split)
    return (d / "messages.jsonl").is_file() and (d / "pairs.jsonl").is_file()


def load(split: str, name: str) -> list[dict]:
    return [json.loads(x) for x in (split_dir(split) / name).read_text("utf-8").splitlines() if x.strip()]


def norm(text: str) -> str:
    """What a copy with other punctuation or case keeps (as tests/signals/test_holdout_disjoint.py)."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower().replace("\u2019", "'")).split())


def split_texts(split: str) -> set[str]:
    msgs = {norm(r["text"]) for r in load(split, "messages.jsonl")}
    return msgs | {norm(r[k]) for r in load(split, "pairs.jsonl") for k in ("a", "b")}


def ba(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = pred.astype(bool), truth.astype(bool)
    return float(((pred & truth).sum() / max(1, truth.sum()) + (~pred & ~truth).sum() / max(1, (~truth).sum())) / 2)


def pr(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float((pred & truth).sum())
    return tp / max(1.0, float(pred.sum())), tp / max(1.0, float(truth.sum()))


def per_tag(rows: list[dict], correct: np.ndarray) -> str:
    acc: dict[str, list[bool]] = defaultdict(list)
    for r, ok in zip(rows, correct, strict=True):
        for t in r.get("tags", []):
            acc[t].append(bool(ok))
    return ", ".join(f"{t} {sum(v)}/{len(v)}" for t, v in sorted(acc.items()))


def shipped_policy():
    from policyengine.dsl import load_policy_set

    pol = load_policy_set([POLICY])
    return list(pol.lexicons["litigation"])


def training_rows(name: str) -> list[dict]:
    path = ROOT / "policyengine" / "signals" / "data" / name
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def models(emb, split: str):
    """(sentiment scorer, intent model, rows dropped) for scoring `split`: trained on the shipped
    data minus the split's texts (leave-one-split-out); for an untouched split that drops nothing."""
    from policyengine.signals import SentimentScorer
    from policyengine.signals.intent import IntentModel

    held = split_texts(split)
    it = [(r["text"], bool(r["label"])) for r in training_rows("intent_litigation.jsonl") if norm(r["text"]) not in held]
    st = [(r["text"], r["label"]) for r in training_rows("sentiment_train.jsonl") if norm(r["text"]) not in held]
    dropped = (len(training_rows("intent_litigation.jsonl")) - len(it), len(training_rows("sentiment_train.jsonl")) - len(st))
    intent = IntentModel("litigation", emb, training=it)
    return SentimentScorer(emb, training=st, intent=intent), intent, dropped


def classifier_alone(sent):
    """The same sentiment scorer without the adapted model (`model=None`): the classifier and idioms."""
    from policyengine.signals import SentimentScorer

    return SentimentScorer(sent.embedder, training=sent._training, intent=sent._intent, model=None)


def messages(emb, split: str, lexicon: list[str]) -> None:
    from policyengine.signals import LexiconMatcher, vader_sentiment
    from policyengine.signals.sentiment_model import (
        ADAPTERS_TRAINED_ON as SENTIMENT_MODEL_TRAINED_ON,
    )

    rows = load(split, "messages.jsonl")
    sent, intent, dropped = models(emb, split)
    how = (f"TUNED ON; leave-one-split-out: models retrained without its rows ({dropped[1]} sentiment, "
           f"{dropped[0]} intent rows dropped)" if split in TUNED_ON else
           f"UNTOUCHED; models as shipped ({dropped[1]} + {dropped[0]} shared rows dropped: should be 0)")
    print(f"\n== {split}: {len(rows)} messages ({how})")
    truth = np.array([r["sentiment"] == "negative" for r in rows])
    s = np.array(sent.scores([r["text"] for r in rows]))
    c = np.array(classifier_alone(sent).scores([r["text"] for r in rows]))
    v = np.array([vader_sentiment(r["text"]) for r in rows])
    SUMMARY[split]["sentiment"] = ba(s < 0.3, truth)
    SUMMARY[split]["sentiment_classifier"] = ba(c < 0.3, truth)
    SUMMARY[split]["sentiment_vader"] = ba(v < 0.3, truth)
    seen = ("the sentiment model trained on it" if split in SENTIMENT_MODEL_TRAINED_ON else
            "the sentiment model never trained on it")
    print(f"sentiment balanced accuracy (sentiment < 0.3; {seen}): ours {ba(s < 0.3, truth):.3f}  "
          f"classifier alone (model=None) {ba(c < 0.3, truth):.3f}  "
          f"VADER alone {ba(v < 0.3, truth):.3f}   target >= 0.92   ({int(truth.sum())} negative)")
    print("  per tag: " + per_tag(rows, (s < 0.3) == truth))
    if split in SHOW_MISSES:
        for r, x, t in zip(rows, s, truth, strict=True):
            if (x < 0.3) != t:
                print(f"    miss ({x:.3f}, labelled {r['sentiment']}): {r['text'][:120]}")
    lt = np.array([r["mentions"]["litigation"] for r in rows])
    p = np.array([x.probability for x in intent.results([r["text"] for r in rows])])
    ours = p >= intent.threshold
    m = LexiconMatcher()
    words = np.array([m.first(r["text"], "litigation", lexicon) is not None for r in rows])
    kw = np.array([any(w in r["text"].lower() for w in lexicon) for r in rows])
    SUMMARY[split]["lit_p"], SUMMARY[split]["lit_r"] = pr(ours, lt)
    SUMMARY[split]["kw_p"], SUMMARY[split]["kw_r"] = pr(kw, lt)
    for name, pred in (("text mentions litigation (default, intent-aware)", ours),
                       ("text mentions litigation by words", words), ("keyword list (substring)", kw)):
        pp, rr = pr(pred, lt)
        print(f"{name}: precision {pp:.3f} recall {rr:.3f}")
    print(f"  targets: precision >= 0.92, recall >= 0.92   ({int(lt.sum())} positive); per tag (intent-aware): "
          + per_tag(rows, ours == lt))
    if split in SHOW_MISSES:
        for r, x, t in zip(rows, p, lt, strict=True):
            if (x >= intent.threshold) != t:
                print(f"    {'false alarm' if x >= intent.threshold else 'miss'} ({x:.3f}): {r['text'][:120]}")


def pairs(emb, split: str) -> None:
    from policyengine.signals import DivergenceScorer
    from policyengine.signals.pair_model import ADAPTERS_TRAINED_ON

    rows = load(split, "pairs.jsonl")
    truth = np.array([r["divergent"] for r in rows])
    sc = DivergenceScorer(emb)
    res = [sc.score(r["a"], r["b"]) for r in rows]
    d = np.array([x.divergence for x in res])
    rules = np.array([x.rules for x in res])
    cos = np.array([x.cosine for x in res])
    best = max((ba(cos < t, truth), t) for t in np.arange(0.30, 0.99, 0.005))
    how = "TUNED ON; in-sample: rules written reading its misses" if split in TUNED_ON else "UNTOUCHED"
    seen = "the pair model trained on it" if split in ADAPTERS_TRAINED_ON else "the pair model never trained on it"
    SUMMARY[split]["divergence"] = ba(d > 0.25, truth)
    SUMMARY[split]["divergence_rules"] = ba(rules > 0.25, truth)
    SUMMARY[split]["divergence_cos"] = best[0]
    print(f"\n== {split}: {len(rows)} answer pairs ({int(truth.sum())} divergent; {how}; {seen})")
    print(f"divergence balanced accuracy (divergence > 0.25): ours {ba(d > 0.25, truth):.3f}  "
          f"rules and cosine alone (pair_model=None) {ba(rules > 0.25, truth):.3f}  "
          f"cosine alone at its best threshold ({best[1]:.3f}, chosen on this split) {best[0]:.3f}   target >= 0.90")
    print("  per tag: " + per_tag(rows, (d > 0.25) == truth))
    if split in SHOW_MISSES:
        for r, x, t in zip(rows, res, truth, strict=True):
            if (x.divergence > 0.25) != t:
                print(f"    {'false alarm' if x.divergence > 0.25 else 'miss'} ({x.divergence}, {x.reasons[:1]}): "
                      f"{r['a'][:70]} || {r['b'][:70]}")


def latency(rounds: int, quantize: bool | None, splits: list[str]) -> None:
    import torch

    from policyengine.signals import (
        DefaultSignalProvider,
        DivergenceScorer,
        Embedder,
        vader_sentiment,
    )
    from policyengine.signals.checks import extract_facts

    torch.set_num_threads(1)
    lexicon = shipped_policy()
    # Each message (each pair) pays for its own embeddings: the cache is cleared before it,
    # so only what one message's detectors share (its text, its sentences) is reused.
    emb = Embedder(quantize=quantize)
    prov = DefaultSignalProvider(emb)
    prov.warm_up()
    msgs = [r["text"] for s in splits for r in load(s, "messages.jsonl")]
    prs = [(r["a"], r["b"]) for s in splits for r in load(s, "pairs.jsonl")]
    sc = DivergenceScorer(emb)
    rules_only = DivergenceScorer(emb, pair_model=None)
    if sc.pair_model is not None:
        sc.pair_model.load()
    per_msg, per_pair, naive_msg, naive_pair, emb_msg, own_msg, rules_pair = [], [], [], [], [], [], []
    for _ in range(rounds):
        for t in msgs:
            emb.cache_clear()
            c = time.process_time()
            emb.embed([t])
            emb_msg.append(time.process_time() - c)
            emb.cache_clear()
            c = time.process_time()
            prov.sentiment(t)
            prov.mention_intent(t, "litigation", lexicon, "both")
            per_msg.append(time.process_time() - c)
            c = time.process_time()  # again, its embeddings now cached: the detectors' own work
            prov.sentiment(t)
            prov.mention_intent(t, "litigation", lexicon, "both")
            own_msg.append(time.process_time() - c)
            c = time.process_time()
            vader_sentiment(t)
            any(w in t.lower() for w in lexicon)
            naive_msg.append(time.process_time() - c)
        for a, b in prs:
            emb.cache_clear()
            c = time.process_time()
            sc.score(a, b)
            per_pair.append(time.process_time() - c)
            emb.cache_clear()
            c = time.process_time()
            rules_only.score(a, b)
            rules_pair.append(time.process_time() - c)
            emb.cache_clear()
            c = time.process_time()
            emb.embed([a, b])
            naive_pair.append(time.process_time() - c)
    checks = []
    for a, b in prs:
        c = time.process_time()
        extract_facts(a), extract_facts(b)
        checks.append(time.process_time() - c)

    def ms(x: list[float], q: float = 0.5) -> str:
        return f"{1000 * float(np.quantile(x, q)):.2f} ms"

    print(f"\n== latency (CPU time, one core, embedding int8={emb.quantize}, max_length {emb.max_length}, cache "
          f"cleared per message / pair, {rounds} round(s), {len(msgs)} messages, {len(prs)} pairs; load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"per message, sentiment + intent-aware mention: median {ms(per_msg)}, p90 {ms(per_msg, 0.9)}   "
          f"(naive: VADER + keyword list {ms(naive_msg)}; one embedding of the text alone {ms(emb_msg)})   "
          "target <= 10 ms")
    print(f"  of which the detectors' own work (the same calls with the embeddings cached): median {ms(own_msg)}, "
          f"p90 {ms(own_msg, 0.9)}")
    print(f"per answer pair, divergence: median {ms(per_pair)}, p90 {ms(per_pair, 0.9)}   "
          f"(naive: the two embeddings alone {ms(naive_pair)}; fact extraction alone {ms(checks)})   target <= 25 ms")
    print(f"  without the answer-pair model (rules and cosine alone): median {ms(rules_pair)}, p90 {ms(rules_pair, 0.9)}"
          f"; pair model backend: {sc.pair_model.backend if sc.pair_model else 'none'}")
    print(f"mean per message {1000 * statistics.fmean(per_msg):.2f} ms, per pair {1000 * statistics.fmean(per_pair):.2f} ms")


def summary() -> None:
    if not SUMMARY:
        return
    print("\n== summary (target: sentiment >= 0.92, litigation P/R >= 0.92/0.92, divergence >= 0.90)")
    print(f"{'split':10} {'status':40} {'sentiment':>9} {'lit P':>6} {'lit R':>6} {'diverg.':>7} {'rules':>6}")
    for split, f in SUMMARY.items():
        status = ("tuned on (sentiment/intent leave-one-split-out)" if split in TUNED_ON else "UNTOUCHED (scored once)")
        print(f"{split:10} {status:40} {f.get('sentiment', float('nan')):9.3f} {f.get('lit_p', float('nan')):6.3f} "
              f"{f.get('lit_r', float('nan')):6.3f} {f.get('divergence', float('nan')):7.3f} "
              f"{f.get('divergence_rules', float('nan')):6.3f}")
    # a figure printed as 0.920 may be 0.9196: the targets are judged on these, to four places
    for split, f in SUMMARY.items():
        print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in f.items() if k in
                                        ("sentiment", "lit_p", "lit_r", "divergence")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=[*SPLITS, "tuned", "all"], default="all")
    ap.add_argument("--misses", action="store_true", help="print the misses of the tuned-on splits (never holdout12's)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--latency-only", action="store_true")
    ap.add_argument("--quantize", choices=["0", "1"], default=None,
                    help="override the embedder's int8 setting (default: the shipped default)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from policyengine.signals import Embedder

    quantize = None if args.quantize is None else args.quantize == "1"
    emb = Embedder(quantize=quantize, cache_size=50_000)  # the rotations retrain on the same rows
    emb.load()
    lexicon = shipped_policy()
    print(f"policy {POLICY.relative_to(ROOT)}: lexicon litigation {lexicon}; torch {torch.__version__}, 1 thread, "
          f"embedding int8={emb.quantize}")
    if args.misses:
        SHOW_MISSES.update(TUNED_ON)
    chosen = {"tuned": list(TUNED_ON), "all": list(SPLITS)}.get(args.split, [args.split])
    scored = []
    for split in chosen:
        if not present(split):
            print(f"\n== {split}: skipped: {shown(split_dir(split))}/ (messages.jsonl + pairs.jsonl) "
                  "is not present" + (" (the untouched split is added at the end by the coordinator)"
                                      if split in UNTOUCHED else ""))
            continue
        scored.append(split)
        if not args.latency_only:
            messages(emb, split, lexicon)
            pairs(emb, split)
    summary()
    if not args.no_latency:
        latency(args.rounds, quantize, [s for s in (scored or [s for s in TUNED_ON if present(s)])])


if __name__ == "__main__":
    main()
