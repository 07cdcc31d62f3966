"""The learned divergence model that was tried in round 7 and not shipped (benchmarks/signals.md).

A logistic regression over the words the two answers do not share (hashed; numbers folded to
one token), trained on the labelled pairs of the `--train` splits, is scored on the `--check`
split alone and blended with the shipped rules' score (`0.3 * min(1, divergence / 0.5) + 0.7 *
p > 0.55`, the blend chosen leave-one-split-out on tune..holdout5). The rules are whatever
`policyengine` imports, so the recorded figure (holdout6: rules 0.772, model 0.695, blend
0.709) is reproduced with the round-6 rules, which had not read holdout6:

    git worktree add /tmp/r6 8d5fde7
    HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/r6 .venv/bin/python benchmarks/divergence_learned.py --check holdout6

Run in the checkout itself, the rules have read every tuned-on split, so their figure there is
in-sample (the script says which splits the rules were tuned on when it can tell).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import LogisticRegression

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
OLDER = ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:[.,:]\d+)*|[£$€%]")
_STOP = frozenset((
    "the", "a", "an", "to", "of", "and", "or", "for", "in", "on", "at", "is", "are", "be", "was", "it",
    "this", "that", "your", "you", "we", "our", "us", "i", "me", "my", "will", "can", "with", "by", "from",
    "as", "has", "have", "had", "please",
))


def _pairs(split: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"signals_{split}" / "pairs.jsonl").open() if line.strip()]


def _features(a: str, b: str, cosine: float) -> dict[str, float]:
    """Cosine, length ratio, word overlap and the count of each word only one answer has."""
    ta, tb = _TOKEN.findall(a.lower()), _TOKEN.findall(b.lower())
    sa, sb = set(ta), set(tb)
    f = {"cos": cosine, "lenratio": min(len(ta), len(tb)) / max(1, len(ta), len(tb)),
         "jacc": len(sa & sb) / max(1, len(sa | sb)), "ndiff_num": float(sum(w[0].isdigit() for w in sa ^ sb))}
    for w in sa ^ sb:
        if w not in _STOP:
            key = "d=<N>" if w[0].isdigit() else f"d={w}"
            f[key] = f.get(key, 0.0) + 1.0
    return f


def _balanced(y: list[bool], p: list[bool]) -> float:
    ya, pa = np.array(y), np.array(p)
    return float(((pa & ya).sum() / max(1, ya.sum()) + (~pa & ~ya).sum() / max(1, (~ya).sum())) / 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", default="holdout6", help="the split scored (not trained on)")
    ap.add_argument("--train", default=",".join(OLDER), help="comma-separated splits the model trains on")
    args = ap.parse_args()
    import policyengine
    from policyengine.signals.divergence import DivergenceScorer
    from policyengine.signals.formats import canonical

    scorer = DivergenceScorer()
    print(f"rules from {Path(policyengine.__file__).parent}", file=sys.stderr)

    def rows(split: str) -> list[tuple[dict[str, float], float, bool]]:
        out = []
        for r in _pairs(split):
            d = scorer.score(r["a"], r["b"])
            out.append((_features(canonical(r["a"]), canonical(r["b"]), d.cosine), d.divergence, bool(r["divergent"])))
        return out

    hasher = FeatureHasher(n_features=2 ** 14, alternate_sign=False)
    train = [x for s in args.train.split(",") for x in rows(s)]
    clf = LogisticRegression(C=0.5, max_iter=5000, class_weight="balanced")
    clf.fit(hasher.transform([f for f, _, _ in train]), [y for _, _, y in train])
    check = rows(args.check)
    y = [lab for _, _, lab in check]
    p = clf.predict_proba(hasher.transform([f for f, _, _ in check]))[:, 1]
    rules = [d > 0.25 for _, d, _ in check]
    blend = [(0.3 * min(1.0, d / 0.5) + 0.7 * q) > 0.55 for (_, d, _), q in zip(check, p, strict=True)]
    print(f"{args.check}: {len(check)} pairs; model trained on {args.train} ({len(train)} pairs)")
    print(f"  rules alone (divergence > 0.25)   {_balanced(y, rules):.3f}")
    print(f"  learned model alone (p > 0.5)     {_balanced(y, list(p > 0.5)):.3f}")
    print(f"  blend                             {_balanced(y, blend):.3f}")


if __name__ == "__main__":
    main()
