"""Negation parity: do two answers say the same thing, one of them with a "not" in it?

Cosine similarity barely moves when an answer gains a negation ("There is no outage in
your area" / "There's a known outage in your area": cosine 0.67), and the word-level
polarity checks in `checks` only see decisions they have a concept for. This check works
on any wording: each sentence gets a *parity*, the number of negations it states modulo
two, counting both grammatical negators ("not", "no", "never", "n't", "without",
"unable") and words that lexicalise a negation ("free" = no charge, "closed" = not open,
"declined" = not approved, "non-returnable" = not returnable, "out of stock" = not in
stock). Two sentences that talk about the same thing (they share most of their content
words, synonyms folded) and differ in parity contradict each other; "We don't open on
Sundays" and "We're closed on Sundays" have the same parity, so the paraphrase passes.

Formulaic negations that assert nothing about the answer ("no problem", "don't
hesitate", "no later than", a leading "No," or "Yes," answer particle) are removed first.

Pure Python, English only, no model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policyengine.signals.alignment import _STOP, _SYNONYMS, tokens

__all__ = ["ParityConflict", "action_conflicts", "aligned_sentences", "parity", "parity_agrees", "parity_conflicts"]

# formulaic phrases whose negation asserts nothing about the facts of the answer
_FORMULAIC = re.compile(
    r"\b(?:no (?:problem|worries|need to worry|hesitation)|not a problem|(?:do not|don'?t|never) hesitate|"
    r"don'?t worry|no later than|no more than|no less than|not only|or not|if not|whether or not|"
    r"feel free|free to|toll[- ]free|hands[- ]free|freephone|free-?phone|nothing else|no doubt|"
    r"(?:don'?t|do not) forget|not sure|if you(?:'re| are) (?:still )?not (?:satisfied|happy)|if not satisfied)\b",
    re.I,
)
_ANSWER_PARTICLE = re.compile(r"^\s*(?:yes|no|yep|nope|yeah)\s*[,.!:;\u2013\u2014-]+\s*", re.I)
# grammatical negators (counted once each)
_NEGATOR = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot|unable|no longer)\b|n['\u2019]t\b", re.I)
# words that lexicalise a negation of a positive counterpart
_NEGATIVE_WORD = re.compile(
    r"\b(?:free(?: of charge)?|closed|shut|turned (?:it |them |this |that )?down|out of stock|sold out|"
    r"declin(?:e|ed|es|ing)|refus(?:e|ed|es|ing)|reject(?:ed|s|ing)?|den(?:y|ied|ies)|"
    r"(?:remov|cancell?|wip)(?:e|ed|es|ing)? (?:it\b|them\b|(?:the |your |any |this |that )?(?:[\w-]+ ){0,2}(?:fees?|charges?|penalty|interest))|"
    r"written off|write off|avoid(?:s|ed|ing)?|outside (?:of )?(?:our|the|your|its)|"
    r"unsuccessful|ineligible|unavailable|invalid|excluded|excludes|exempt|waived?|waives|unpaid|"
    r"non-?[a-z]{4,}|impossible|prohibited|forbidden|absent|missing|delays?|delayed|late|lose|losing|"
    r"overdue|outstanding(?! (?:balance|amount|bill|invoice|sum|payment|debt|charge))|in arrears|fully booked|hold off|prepaid|pre-paid|(?:fixed|frozen|locked) (?:until|till|for))\b",
    re.I,
)
# a point between digits ("7.45pm", "£3.50") does not end a sentence, nor a colon between them a clause
_SENT = re.compile(r"(?:[^.!?;\n]|(?<=\d)\.(?=\d))+[.!?;]*")
# clause boundaries inside a sentence: a detail added in its own clause ("..., with no
# early repayment fee") must not flip the parity of the clause it is attached to
_CLAUSE = re.compile(r"(?<!\d):|:(?!\d)|[,\u2013\u2014()]|\s-\s|\b(?:and|but|with|while|whereas|although|though|so|because|"
                     r"plus|then|or)\b", re.I)
# minimum share of the smaller sentence's content stems the other sentence must have
MIN_OVERLAP = 0.5


def _clean(sentence: str) -> str:
    s = sentence.replace("\u2019", "'")
    s = _ANSWER_PARTICLE.sub("", s)
    return _FORMULAIC.sub(" ", s)


def parity(sentence: str) -> int:
    """Negations the sentence states, modulo 2 (formulaic negations removed first)."""
    s = _clean(sentence)
    n = len(_NEGATOR.findall(s))
    masked = _NEGATOR.sub(" ", s)
    n += len(_NEGATIVE_WORD.findall(masked))
    return n % 2


# content words that name the same thing here (besides alignment's synonyms)
_LOCAL_SYNONYMS = tuple(frozenset(g.split()) for g in (
    "need needs needed require requires required necessary", "allow allows allowed permit permits permitted let",
    "fee fees cost costs charge charges charged price", "include includes included contain contains",
))
_CANON: dict[str, str] = {}
for _group in (*_LOCAL_SYNONYMS, *_SYNONYMS):
    _head = sorted(_group)[0]
    for _w in _group:
        _CANON.setdefault(_w, _head)
def _stem(w: str) -> str:
    for suf in ("ing", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


_NEG_WORDS = {"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "cannot", "unable",
              "free", "closed", "shut", "declined", "refused", "rejected", "denied", "open", "approved", "late", "delay",
              "delays", "delayed", "time", "lose", "losing", "lost", "keep", "overdue", "outstanding", "one"}


def _content(sentence: str) -> set[str]:
    out = set()
    for t in tokens(sentence):
        if t in _STOP or t in _NEG_WORDS or re.fullmatch(r"[£$€%]|\d[\d,./ -]*", t) or len(t) < 3:
            continue
        t = t.removeprefix("non-").removeprefix("non") if t.startswith("non") and len(t) > 6 else t
        out.add(_CANON.get(t, _stem(t)))
    return out


@dataclass(frozen=True)
class ParityConflict:
    """Two aligned sentences, one negated relative to the other."""

    a: str
    b: str
    overlap: float


def _sentences(text: str) -> list[str]:
    """The text's clauses (sentences cut at clause boundaries), stripped."""
    out = []
    for m in _SENT.finditer(text):
        out += [c.strip() for c in _CLAUSE.split(m.group(0)) if c and c.strip(" .!?;")]
    return out


def aligned_sentences(a: str, b: str, *, min_overlap: float = MIN_OVERLAP) -> list[tuple[str, str, float]]:
    """Clause pairs, one from each answer, that are each other's best match by shared
    content stems and share at least `min_overlap` of the smaller one's."""
    sa, sb = _sentences(a), _sentences(b)
    ca, cb = [_content(s) for s in sa], [_content(s) for s in sb]

    def ov(x: set[str], y: set[str]) -> tuple[float, float]:
        # overlap coefficient, ties broken by Jaccard (the closer-sized clause wins)
        if not x or not y:
            return (-1.0, -1.0)
        return (len(x & y) / min(len(x), len(y)), len(x & y) / len(x | y))

    out: list[tuple[str, str, float]] = []
    for i, c in enumerate(ca):
        if not c or not cb:
            continue
        best, j = max((ov(c, d), k) for k, d in enumerate(cb))
        if best[0] < min_overlap or max(range(len(sa)), key=lambda k: ov(ca[k], cb[j])) != i:
            continue
        out.append((sa[i], sb[j], round(best[0], 3)))
    return out


def parity_conflicts(a: str, b: str, *, min_overlap: float = MIN_OVERLAP) -> list[ParityConflict]:
    """Aligned sentence pairs (see `aligned_sentences`) whose parities differ."""
    return [ParityConflict(x, y, o) for x, y, o in aligned_sentences(a, b, min_overlap=min_overlap)
            if _pair_parity(x, y) != _pair_parity(y, x)]


def _pair_parity(x: str, other: str) -> int:
    """parity(x), plus one for each word of x that negates a word of `other` by prefix
    ("unenforceable" against "enforceable")."""
    from policyengine.signals.checks import prefix_stem

    vocab = {w.lower() for w in re.findall(r"[A-Za-z-]+", other)}
    extra = sum(1 for w in re.findall(r"[A-Za-z-]+", x) if prefix_stem(w.lower(), vocab))
    return (parity(x) + extra) % 2


def parity_agrees(a: str, b: str) -> bool:
    """At least one sentence pair aligns, and every aligned pair has the same parity."""
    pairs = aligned_sentences(a, b)
    return bool(pairs) and all(_pair_parity(x, y) == _pair_parity(y, x) for x, y, _ in pairs)


# Action verbs with an opposite (the action undoes or refuses the other). Two aligned
# clauses, one with a verb of one side and none of the other, the other clause the
# reverse, describe opposite actions on the same thing ("We've unlocked your phone" /
# "We've blocked your phone").
_ACTION_PAIRS: tuple[tuple[re.Pattern[str], re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b(?:{x})\b", re.I), re.compile(rf"\b(?:{y})\b", re.I), name) for x, y, name in (
        ("unlock(?:ed|s|ing)?|unblock(?:ed|s|ing)?|unfr[eo]z(?:e|en|es|ing)|reactivat(?:e|ed|es|ing)|"
         "reconnect(?:ed|s|ing)?|restor(?:e|ed|es|ing)|enabl(?:e|ed|es|ing)",
         "lock(?:ed|s|ing)?|block(?:ed|s|ing)?|fr[eo]z(?:e|en|es|ing)|deactivat(?:e|ed|es|ing)|"
         "disconnect(?:ed|s|ing)?|suspend(?:ed|s|ing)?|disabl(?:e|ed|es|ing)", "unblocked vs blocked"),
        ("extend(?:ed|s|ing)?|renew(?:ed|s|ing)?|prolong(?:ed|s)?", "end(?:ed|s|ing)?|terminat(?:e|ed|es|ing)|"
         "expir(?:e|ed|es|ing)", "extended vs ended"),
        ("fit(?:s|ted|ting)?|install(?:ed|s|ing)?|add(?:ed|s|ing)?", "remov(?:e|ed|es|ing)|uninstall(?:ed|s|ing)?|"
         "tak(?:e|en|es|ing) (?:it |them )?(?:out|away|off)", "added vs removed"),
        ("increas(?:e|ed|es|ing)|rais(?:e|ed|es|ing)|(?:go|goes|gone|went) up",
         "decreas(?:e|ed|es|ing)|reduc(?:e|ed|es|ing)|lower(?:ed|s|ing)?|cut|(?:go|goes|gone|went) down",
         "increased vs decreased"),
        ("credit(?:ed|s|ing)?|refund(?:ed|s|ing)?", "debit(?:ed|s|ing)?|charged|charging|charge you|billed|billing",
         "credited vs charged"),
        (r"collect(?:ed|s|ing)? (?:it |them |the [\w -]{1,30} )?from (?:you|your)|pick(?:ed|s|ing)? (?:it |them )?up from",
         r"tak(?:e|es|ing) (?:it |them |the [\w -]{1,30} )?back|bring (?:it |them )?(?:back|in)|drop(?:ped)? (?:it |them )?off",
         "collected from you vs brought back by you"),
        # how money reaches the customer: back to the payment method, or as credit to spend here
        (r"refund(?:ed|s|ing)? (?:the |your |it |them )?(?:[\w-]+ ){0,3}(?:to|back to|onto) (?:your|the) (?:original |same )?"
         r"(?:payment method|card|account|bank)|money back|cash refund",
         r"vouchers?|e-?vouchers?|store credit|credit note|gift card|travel credit|account credit",
         "refund vs voucher"),
        (r"direct deposit|bank transfer|BACS|transfer(?:red)? (?:it |the money )?(?:to|into) your (?:bank|account)",
         r"paper che(?:que|ck)|by che(?:que|ck)|a che(?:que|ck)\b|che(?:que|ck) (?:in the|by) (?:post|mail)",
         "bank transfer vs cheque"),
        (r"repair(?:ed|s|ing)?|fix(?:ed|es|ing)?", r"writ(?:e|ten|ing) (?:it |them |your [\w-]+ )?off|replac(?:e|ed|es|ing)",
         "repaired vs written off or replaced"),
    ))


def action_conflicts(a: str, b: str) -> list[str]:
    """Names of opposite actions (see `_ACTION_PAIRS`) that aligned clauses state."""
    out: list[str] = []
    for x, y, _ in aligned_sentences(a, b, min_overlap=0.3):
        for pos, neg, name in _ACTION_PAIRS:
            xp, xn, yp, yn = bool(pos.search(x)), bool(neg.search(x)), bool(pos.search(y)), bool(neg.search(y))
            if ((xp and not xn and yn and not yp) or (xn and not xp and yp and not yn)) and name not in out:
                out.append(name)
    return out
