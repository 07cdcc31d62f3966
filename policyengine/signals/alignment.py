"""Who, where, which and what: the divergence checks that compare two answers token by token.

`checks` compares facts each answer states on its own (amounts, dates, polarity). The
checks here compare the two answers *with each other*:

* **identifiers**: account and card numbers, references, codes, phone numbers, e-mail
  addresses, postcodes, seat/gate/room numbers and bare counts. Each answer's set is
  normalised (spaces and hyphens inside a number dropped, case folded); they conflict when
  both answers state identifiers and neither set contains the other.
* **substitutions**: when the two answers are largely the same wording (at least half of
  their tokens align), a span one answer has where the other has a *different* span is a
  changed slot: a recipient ("billing address" / "delivery address"), a place ("Leeds" /
  "Manchester"), a person ("Dr Patel" / "Dr Okafor"), a department, an action ("repair" /
  "replace"), a decision or a fact ("in credit" / "in debit"). Function words, the same
  word inflected and known synonyms ("working" / "business", "post" / "mail") never count;
  extra words on one side only (more detail) never count.
* **containment**: how much of the shorter answer's content the longer one repeats, so a
  longer answer that only adds detail is not read as a different answer.

Everything is pure Python over one pair (no model), English only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

__all__ = ["Substitution", "containment", "destinations", "identifier_conflict", "identifiers", "opposites", "substitutions"]

_TOKEN = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\d[\d ,./-]*\d|[A-Za-z]+(?:['\u2019][a-z]+)?|\d|[£$€%]")
_STOP = frozenset(
    ["a", "an", "the", "this", "that", "these", "those", "it", "its", "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "to", "of", "for", "with", "at", "by", "from", "as", "and", "or", "but", "so", "if", "then", "than", "there", "here", "your", "you", "yours", "we", "our", "ours", "us", "i", "me", "my", "mine", "he", "she", "they", "them", "their", "his", "her", "please", "just", "also", "now", "still", "yet", "very", "really", "all", "any", "some", "each", "every", "which", "who", "whom", "what", "when", "where", "how", "s", "ll", "ve", "re", "d", "m", "t", "about", "into", "onto", "over", "again", "once", "further", "only", "own", "same", "such", "too", "can't", "won't", "don't", "isn't", "that's", "it's", "good", "news", "great", "thanks", "thank", "sorry", "unfortunately", "afraid", "happy", "glad", "well", "okay", "ok", "hi", "hello", "dear"]
)
# words that name the same thing (within a group), so swapping them is a paraphrase
_SYNONYMS: tuple[frozenset[str], ...] = tuple(frozenset(g.split()) for g in (
    "working business", "post posted mail mailed send sent dispatched shipped", "ring call phone rang called phoned",
    "shop store", "cancelled canceled", "email e-mail emailed", "mobile cell phone", "cost costs price fee charge",
    "bill invoice statement", "fix fixed resolved repair sorted", "money funds payment", "parcel package",
    "holiday vacation", "booking reservation", "flat apartment", "postcode zip", "lift elevator",
    "queue line", "autumn fall", "fortnight two weeks", "customer client", "agent advisor adviser representative",
    "team department", "quickly soon promptly", "approved accepted granted", "refused declined rejected denied",
    "pay paid payment", "receive get got received", "today now", "arrive arrives delivered reach",
    "help assist", "start begin starts begins", "end finish ends finishes", "buy purchase", "check review",
    "close closes closed shut shuts", "taken collected", "boarding gate", "sold none", "funds money",
    "mailed posted sent", "ready available", "agreed decided", "compatible fits fit", "reimburse refund",
    "respond reply answer", "depart departs leave leaves", "due payable", "covered insured", "update change amend",
    "new replacement", "below under", "mature matures", "get receive", "phone ring", "email e-mail",
    "sent issued goes went out", "payable made out", "contact reach out", "departs leaving departing leave",
))
# Facts stated with numbers, dates, times and money belong to `checks` (which know that
# "12/05/2025" is "12 May 2025" and "53p" is "£0.53"): a substitution touching them is not one.
_FACT_TOKEN = re.compile(
    r"\d|^(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|august|"
    r"september|october|november|december|am|pm|p|pence|pounds?|dollars?|euros?|cents?|gbp|usd|eur|per|a|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|one|two|three|four|five|six|seven|eight|nine|ten|"
    r"eleven|twelve|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|once|twice)$")

_NEGATION_TOKEN = re.compile(r"\b(?:not|no|never|none|nothing|without|cannot)\b|n't\b")
_PREFIXES = ("non-", "non", "un", "in", "im", "il", "ir", "dis")


def _prefix_pair(ca: list[str], cb: list[str]) -> bool:
    """A word on one side is a negating prefix plus a word on the other (enforceable / unenforceable)."""
    return any(x == p + y or y == p + x for x in ca for y in cb for p in _PREFIXES)


# Opposite poles of facts support answers state in words: an answer with one pole and not
# the other contradicts an answer with the other and not the first. Poles that are a
# negation of each other (open / closed, free / charged, in / out of stock, included /
# excluded) are left to `negation` (sentence parity), which sees "we don't open" = "closed".
_OPPOSITES: tuple[tuple[re.Pattern[str], re.Pattern[str], str], ...] = tuple(
    (re.compile(x, re.I), re.compile(y, re.I), name) for x, y, name in (
        (r"\bkeep\b", r"\b(?:return|send (?:it )?back)\b", "keep vs return"),
        (r"\binterest-free\b|\b0% (?:interest|apr)\b|\bno interest\b",
         r"\b(?:[1-9]\d*(?:\.\d+)?|0\.\d+)% (?:interest|apr|a year|p\.a)", "interest-free vs interest"),
        (r"\bkeep\b", r"\b(?:dispose of|throw (?:it |them )?away|discard|bin (?:it|them))\b", "keep vs dispose of"),
        (r"\b(?:may|can|could|have the right to) appeal\b|\bright (?:of|to) appeal\b",
         r"\b(?:decision|outcome|it) is final\b|\bcannot be appealed\b", "appealable vs final"),
        (r"\b(?:open|staffed|available|manned|operates|runs)\s+(?:\w+\s+)?(?:24 hours|24/7|24-7|round the clock|around the clock)",
         r"\b(?:open|staffed|available|manned|operates|runs)\b[^.;]{0,25}?\b(?:until|till|to)\b", "always open vs closing"),
        (r"\b(?:hold|held|reserve[ds]?)\b", r"\b(?:release[ds]?|let go)\b", "held vs released"),
        (r"\b(?:stop|stopped|pause[ds]?|suspend(?:ed)?|put on hold|halt(?:ed)?)\b",
         r"\b(?:go ahead|goes ahead|proceed|continue|as planned)\b", "stopped vs going ahead"),
        (r"\bin credit\b|\b(?:we|i) owe you\b|\b(?:you(?:'re| are) )?(?:due|owed) (?:a |an )?(?:refund|credit|money back)\b",
         r"\b(?:in debit|in arrears|you owe|overdrawn|overdue|outstanding balance|amount outstanding)\b",
         "owed to you vs owed by you"),
        (r"\bdirect\b", r"\b(?:stops?|connection|change planes)\b", "direct vs with a stop"),
        (r"\bone-off\b|\bsingle payment\b", r"\b(?:recurring|every month|monthly|each month)\b",
         "one-off vs recurring"),
        (r"\bjoint(?:ly)?\b", r"\b(?:sole|only)\b", "joint vs sole"),
        (r"\bupfront\b", r"\b(?:spread|instalments?|installments?|over \d+ months)\b", "upfront vs spread"),
        (r"\b(?:assembled|fitted|installed) by\b", r"\b(?:flat-?pack(?:ed)?|self-assembly|yourself)\b",
         "assembled vs self-assembly"),
        (r"\bupgrad\w*", r"\bdowngrad\w*", "upgrade vs downgrade"),
        (r"\b(?:abroad|anywhere|worldwide|any network)\b", r"\bonly (?:works? )?in\b", "anywhere vs only"),
        (r"\b(?:still under|under|within) warranty\b|\bwarranty (?:is )?(?:valid|active)\b",
         r"\bwarranty\b.{0,30}\bexpired\b|\bexpired\b", "under warranty vs expired"),
        (r"\b(?:was|were|has been|have been) delivered\b",
         r"\b(?:not (?:yet )?(?:been )?(?:dispatched|sent|shipped|delivered)|hasn'?t been (?:dispatched|sent|shipped)|"
         r"returned to (?:the )?depot)\b", "delivered vs not delivered"),
        (r"\b(?:already|has|have) (?:been )?complet\w*", r"\bwill complete\b", "completed vs pending"),
        (r"\bin error\b|\bby mistake\b", r"\bbecause\b", "in error vs justified"),
        (r"\bestimated?\b", r"\b(?:actual|real|the reading you (?:sent|gave|submitted))\b", "estimated vs actual"),
        (r"\bincluded\b|\bcomes with\b", r"\badd-?on\b|\bat extra cost\b|\bfor an extra\b", "included vs add-on"),
        (r"\b(?:weekly|every week|each week|once a week)\b",
         r"\b(?:fortnightly|every (?:other|second) (?:week|monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
         r"every two weeks|biweekly|bi-weekly)\b", "weekly vs fortnightly"),
        (r"\b(?:monthly|every month|each month)\b", r"\b(?:quarterly|annually|yearly|every year|each year)\b",
         "monthly vs yearly"),
        (r"\b(?:online|log in|the app|our website|web chat|reply stop|by text|text \w+ to|download)\b",
         r"\b(?:call us|phone us|ring us|by phone|over the phone|in branch|visit (?:a|any|your|the) branch|by post|"
         r"post (?:it |them |the [\w -]{1,20})?to you|in the post)\b",
         "online vs by phone or in person"),
        (r"\bcancell?ed\b", r"\b(?:frozen|unfreeze)\b", "cancelled vs frozen"),
    ))



def _norm(tok: str) -> str:
    t = tok.lower().replace("\u2019", "'")
    if t.endswith("'s"):
        t = t[:-2]
    return t


def _stem(w: str) -> str:
    for suf in ("ing", "ed", "es", "s", "er", "ly"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def _synonyms(a: set[str], b: set[str]) -> bool:
    return any(a <= g and b <= g for g in _SYNONYMS) or (any(
        (x in g and y in g) for g in _SYNONYMS for x in a for y in b) and len(a) == len(b) == 1)


def _content(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in _STOP and not re.fullmatch(r"[£$€%]", t)]


def tokens(text: str) -> list[str]:
    """Lower-cased word, number, e-mail and currency tokens of the text."""
    return [_norm(m.group(0)) for m in _TOKEN.finditer(text)]


# ---------------------------------------------------------------------------- identifiers

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CODE = re.compile(r"(?<![\w£$€.,])(?:[A-Z]{1,6}[- ]?\d[\dA-Z-]*|[a-z]{1,4}-\d{5,}|\d+[A-Z][\dA-Z]*|\d[\d -]{2,}\d|\d{1,3})(?![\w%])")
_NOT_ID_AFTER = re.compile(
    r"^\s*(?:%|percent|per\s*cent|p\b|pence|k\b|gb|mb|kg|g\b|mg|ml|am|pm|a\.m|p\.m|st\b|nd\b|rd\b|th\b|"
    r"minutes?|mins?|hours?|hrs?|days?|working|business|weeks?|months?|years?|nights?|times?|"
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|january|february|march|april|june|july|august|"
    r"september|october|november|december)", re.I)
_MONEY_BEFORE = re.compile(r"[£$€]\s?$|(?:GBP|USD|EUR)\s?$", re.I)


_DATE_LIKE = re.compile(r"\b(\d{1,4})([/.:-])(\d{1,2})(?:[/.-](\d{2,4}))?\b(?!\d)")


def _plausible_date(m: re.Match[str]) -> bool:
    x, sep, y = int(m.group(1)), m.group(2), int(m.group(3))
    if sep == ":":
        return x <= 23 and y <= 59
    if len(m.group(1)) == 4:  # a year first: "2025-06", never an account number such as "7781-2"
        return 1900 <= x <= 2100 and 1 <= y <= 12
    return (1 <= x <= 31 and 1 <= y <= 12) or (1 <= y <= 31 and 1 <= x <= 12)


def identifiers(text: str) -> set[str]:
    """Identifiers and bare numbers the text states (normalised): e-mail addresses, codes,
    account, phone and reference numbers, seat/gate/room numbers, counts. Amounts,
    percentages, durations, dates and times are left to `checks`."""
    out = {m.group(0).lower() for m in _EMAIL.finditer(text)}
    masked = _EMAIL.sub(" ", text)
    # dates like 03/03/2025, 2025-06-30, 4/11 and times like 10:30 belong to checks
    masked = _DATE_LIKE.sub(lambda m: " " if _plausible_date(m) else m.group(0), masked)
    for m in _CODE.finditer(masked):
        raw = m.group(0).strip(" -")
        if _MONEY_BEFORE.search(masked[max(0, m.start() - 4): m.start()]):
            continue
        if _NOT_ID_AFTER.match(masked[m.end(): m.end() + 12]) and not re.search(r"[A-Za-z]", raw):
            continue
        if re.fullmatch(r"\d{4}", raw) and 1900 <= int(raw) <= 2100:
            continue  # a year
        out.add(re.sub(r"[\s-]", "", raw).upper())
    return out


def identifier_conflict(a: str, b: str) -> tuple[set[str], set[str]] | None:
    """(a's identifiers, b's) when both state some and neither set contains the other, or
    when both state the same identifiers bound to different words ("Flat 2, 18 Rose
    Street" / "Flat 18, 2 Rose Street")."""
    ia, ib = identifiers(a), identifiers(b)
    if not ia or not ib:
        return None
    if ia == ib and len(ia) >= 2:
        ba, bb = _bindings(a, ia), _bindings(b, ib)
        if any(ba[w] != bb[w] for w in ba.keys() & bb.keys()):
            return ({f"{w} {ba[w]}" for w in sorted(ba.keys() & bb.keys())},
                    {f"{w} {bb[w]}" for w in sorted(ba.keys() & bb.keys())})
        return None
    if ia <= ib or ib <= ia:
        return None
    return ia, ib


def _bindings(text: str, ids: set[str]) -> dict[str, str]:
    """Content word -> the one identifier written right before or after it ("flat" -> "2",
    "rose" -> "18"); words next to two different identifiers are left out."""
    seen: dict[str, set[str]] = {}
    for m in _CODE.finditer(text):
        ident = re.sub(r"[\s-]", "", m.group(0).strip(" -")).upper()
        if ident not in ids:
            continue
        before = re.findall(r"[A-Za-z]+", text[max(0, m.start() - 30): m.start()])
        after = re.findall(r"[A-Za-z]+", text[m.end(): m.end() + 30])
        for w in (before[-1:] if before and re.search(r"[A-Za-z]+\W{0,2}$", text[: m.start()]) else []) + \
                 (after[:1] if after and re.match(r"\W{0,2}[A-Za-z]", text[m.end():]) else []):
            w = w.lower()
            if w not in _STOP:
                seen.setdefault(w, set()).add(ident)
    return {w: next(iter(v)) for w, v in seen.items() if len(v) == 1}


# ---------------------------------------------------------------------------- substitutions


@dataclass(frozen=True)
class Substitution:
    """A span of answer a replaced by a different span in answer b (as written, lower case)."""

    a: str
    b: str
    kind: str  # identifier | name | wording


def _is_name(tok: str, text: str) -> bool:
    return bool(re.search(rf"(?<![.!?]\s)(?<!^)\b{re.escape(tok)}\b", text, re.I)) and any(
        w[:1].isupper() for w in re.findall(rf"\b{re.escape(tok)}\b", text, re.I))


def alignment_ratio(ta: list[str], tb: list[str]) -> float:
    """Share of the two token lists that align (difflib's ratio), 0..1."""
    if not ta and not tb:
        return 1.0
    return SequenceMatcher(None, ta, tb, autojunk=False).ratio()


_DESTINATION = frozenset({"to", "from", "with", "for", "at", "via", "by", "on"})
_PERSONAL = frozenset({"you", "yourself", "us", "me", "him", "her", "them"})


def _recipient_swap(ta: list[str], tb: list[str], i: int, j: int, sa: list[str], sb: list[str]) -> bool:
    """After the same preposition, one answer names a person ("to you") and the other a
    third party or place ("to your financial adviser"): a different recipient."""
    if i == 0 or j == 0 or ta[i - 1] != tb[j - 1] or ta[i - 1] not in _DESTINATION:
        return False
    bare, full = (sa, sb) if not _content(sa) else (sb, sa)
    return bool(set(bare) & _PERSONAL) and not set(full) & _PERSONAL and len(full) <= 5


def substitutions(a: str, b: str, *, min_ratio: float = 0.5) -> list[Substitution]:
    """Changed slots between two largely parallel answers (see the module docstring)."""
    ta, tb = tokens(a), tokens(b)
    sm = SequenceMatcher(None, ta, tb, autojunk=False)
    if sm.ratio() < min_ratio:
        return []
    out: list[Substitution] = []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op != "replace":
            continue
        sa, sb = ta[i1:i2], tb[j1:j2]
        ca, cb = _content(sa), _content(sb)
        if bool(ca) != bool(cb) and _recipient_swap(ta, tb, i1, j1, sa, sb):
            out.append(Substitution(" ".join(sa), " ".join(sb), "name"))
            continue
        if not ca or not cb:
            continue
        if any(_FACT_TOKEN.search(x) for x in sa + sb):
            continue
        if _NEGATION_TOKEN.search(" ".join(ca + cb)) or _prefix_pair(ca, cb):
            continue  # negation and negating prefixes are the polarity checks' domain
        if {_stem(x) for x in ca} == {_stem(x) for x in cb}:
            continue
        if _synonyms(set(ca), set(cb)):
            continue
        if any(re.search(r"\d", x) for x in ca + cb):
            kind = "identifier"
        elif any(_is_name(x, a) for x in ca) or any(_is_name(x, b) for x in cb):
            kind = "name"
        else:
            kind = "wording"
        out.append(Substitution(" ".join(sa), " ".join(sb), kind))
    return out


def opposites(a: str, b: str) -> list[str]:
    """The opposite poles (see `_OPPOSITES`) one answer states and the other contradicts."""
    out = []
    for x, y, name in _OPPOSITES:
        ax, ay, bx, by = bool(x.search(a)), bool(y.search(a)), bool(x.search(b)), bool(y.search(b))
        if (ax and not ay and by and not bx) or (ay and not ax and bx and not by):
            out.append(name)
    return out


def containment(a: str, b: str) -> float:
    """Share of the shorter answer's content words (stemmed) that the longer one also has."""
    ca = {_stem(t) for t in _content(tokens(a))}
    cb = {_stem(t) for t in _content(tokens(b))}
    short, long_ = (ca, cb) if len(ca) <= len(cb) else (cb, ca)
    if not short:
        return 1.0
    return len(short & long_) / len(short)


# Where a thing goes or is (the destination slot): a place category named after a
# preposition. Longer names first, so "store credit" is credit and not a store.
_PLACES: tuple[tuple[str, str], ...] = (
    ("credit", r"store credit|credit note|gift card|gift voucher|e-?voucher|voucher|wallet"),
    ("pickup point", r"post office|parcel (?:shop|locker)|locker|collection point|pick-?up point|sorting office"),
    ("depot", r"depot|warehouse|returns centre|returns center"),
    ("neighbour", r"neighbou?rs?"),
    ("card", r"card(?: ending| you paid with)?|bank account|original payment method|payment card"),
    ("home", r"(?:home |registered |billing |delivery |postal )?address|home|house|doorstep|front door|safe place"),
    ("store", r"store|branch|shop|counter"),
)
_PLACE_RX = re.compile(
    r"\b(?:to|at|from|with|in|into|onto|as|by|on)\s+(?:(?:the|your|our|a|an|any|each|one of our|this|that|"
    r"nearest|local|registered|usual|main|own|[A-Z][a-z]+(?: [A-Z][a-z]+)?)\s+){0,3}("
    + "|".join(f"(?P<g{i}>{rx})" for i, (_, rx) in enumerate(_PLACES)) + r")\b")


def destinations(text: str) -> set[str]:
    """Place categories the text names after a preposition ("to your home address" ->
    {"home"}, "as store credit" -> {"credit"}, "from our Oxford Street store" -> {"store"})."""
    out = set()
    for m in _PLACE_RX.finditer(text):
        for i, (name, _) in enumerate(_PLACES):
            if m.group(f"g{i}"):
                out.add(name)
                break
    return out
