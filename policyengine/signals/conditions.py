"""Conditions, counts, prices and bases that one answer states and the other does not.

Checks the embeddings and the value checks in `checks` miss (spans across units, ranges and
working days are compared there, on the quantities it extracts) because both answers are about
the same thing in nearly the same words, yet a customer acting on one would act wrongly:

* an added or dropped **condition or restriction**: "Breakfast is included." / "Breakfast is
  included on weekdays only."; "You can withdraw at any time." / "... after giving 30 days'
  notice". The shorter answer's content must reappear in the longer one (so it is the same
  statement) and a restricting phrase ("only", "if you", "unless", "as long as", "plus", ...)
  must be in one of them and not the other. Formulaic conditions that change nothing ("if
  you have any questions") are ignored.
* **counts in words**: "two replacement chairs" / "three replacement chairs" (digits are
  identifiers, compared in `alignment`).
* **free against a price**: one answer says it is free, included or at no cost, the other
  states a price for it and does not say it is free.
* **the same figure per different things**: "£312.60 for the year" / "£312.60 monthly".

Invariant: each check returns nothing unless both answers were found to state the same
thing (content overlap), so paraphrase and added detail without a restriction pass.
English only; pure Python, no model.
"""

from __future__ import annotations

import re
from functools import lru_cache

from policyengine.signals.alignment import _content, _stem, tokens
from policyengine.signals.checks import _DIGITS, _norm, extract_amounts, parse_number

__all__ = ["amount_count_conflicts", "basis_conflicts", "condition_conflicts", "count_conflicts", "month_conflicts",
           "price_conflicts", "relative_date_conflicts"]

# share of the shorter answer's content stems the longer one must contain
MIN_CONTAINMENT = 0.8
MIN_PRICE_OVERLAP = 0.5

_RESTRICTION = re.compile(
    r"\b(?:only(?= (?:on|for|at|in|if|when|after|before|to|with|by|between|within|until|from|you|one|once|up|"
    r"available|valid|applies|apply|covers?|the|\d)\b|\s*(?:[.,;:!?)]|$))|if you|if it|if the|if your|if they|if we|if there|unless|as long as|so long as|provided(?: that)?|"
    r"providing|subject to|on condition|except(?: for)?|excluding|not including|apart from|other than|"
    r"plus (?:vat|tax|taxes|fees?|postage|shipping|delivery|p&p|a |an |[£$€]?\d)|after giving|"
    r"once (?:you|we|the|your|it|he|she|they)|(?:don't|do not|never) [a-z]+ [^.!?]{0,40}?until|"
    r"as soon as you|in which case|but (?:only|not)|but you(?:'ll| will)? (?:need|must|have to)|"
    r"on weekdays|at weekends|on weekends|for new customers|for existing customers|minimum|at least|"
    r"up to (?:a (?:maximum|limit) of )?[£$€]\s?\d|capped at|pending|minus (?:a |an |the |[£$€]?\d)|off-peak|"
    r"but you (?:won't|will not|can't|cannot|wouldn't|aren't|are not)|but there(?:'s| is|'ll be| will be)|"
    r"of (?:signing|receiving|receipt|approval|acceptance|activation|completion)|"
    r"on (?:mon|tues|wednes|thurs|fri|satur|sun)days(?:\s*(?:to|-|\u2013|through|and)\s*(?:mon|tues|wednes|thurs|fri|satur|sun)days?)?)",
    re.I,
)
# conditions that assert nothing about the offer ("let us know if you have any questions")
_FORMULAIC = re.compile(
    r"\b(?:if you (?:have any (?:other |further |more )?(?:questions?|queries|problems|issues|concerns)|need (?:anything|"
    r"any (?:more |further )?help|more help|further help|help|us)|need to(?=[.!?,]|$)|wish|prefer|can)|"
    r"if you(?:'d| would) like(?: to)?|if you (?:head|go|click|visit|open|log|sign|tap|select|pop|look)\b|let us know if|get in touch if|contact us if|reply if|if needed|"
    r"if necessary|if possible|if so|if not|only takes|only take|not only|only just|the only thing|"
    r"if that helps|if anything changes)\b",
    re.I,
)
# restrictions that exclude ("bank transfer only", "plus VAT"): never implied by the other answer's words
_EXCLUSIVE = re.compile(r"only|except|excluding|not including|apart from|other than|plus|but (?:only|not)", re.I)
# a clause ends at punctuation or "and"; one that opens with a restriction (", as long as it's
# unused") belongs to the clause before it
_CLAUSE_CUT = re.compile(r"[,;:()\u2013\u2014]|\s-\s|\band\b", re.I)
# share of the shorter answer's content stems the restricted clause must state
MIN_CLAUSE_OVERLAP = 0.6


@lru_cache(maxsize=2048)
def _stems(text: str) -> frozenset[str]:
    """Content stems of a text; cached, as every check of a pair asks for both answers' stems."""
    return frozenset(_stem(t) for t in _content(tokens(text)))


def _contained(a: str, b: str, share: float = MIN_CONTAINMENT) -> bool:
    """At least `share` of the shorter answer's content stems (two or more) reappear in the longer one."""
    ca, cb = _stems(a), _stems(b)
    short, long_ = (ca, cb) if len(ca) <= len(cb) else (cb, ca)
    return len(short) >= 2 and len(short & long_) / len(short) >= share


def _restricted_clauses(text: str) -> list[tuple[str, str]]:
    """(restricting phrase, the clause it restricts) for each restriction the text states."""
    out: list[tuple[str, str]] = []
    for sentence in re.split(r"(?<=[.!?])\s+", _FORMULAIC.sub(" ", text.replace("\u2019", "'"))):
        clauses: list[str] = []
        for part in (c.strip() for c in _CLAUSE_CUT.split(sentence)):
            if not part:
                continue
            if clauses and (_RESTRICTION.match(part) or
                            _RESTRICTION.match(re.sub(r"^(?:though|however|but)\s+", "", part, flags=re.I))):
                clauses[-1] = f"{clauses[-1]}, {part}"
            else:
                clauses.append(part)
        for clause in clauses:
            out += [(m.group(0).lower(), clause) for m in _RESTRICTION.finditer(clause)]
    return out


def condition_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when the answers state the same thing and one of them attaches a condition
    or restriction to it that the other does not (see the module docstring)."""
    if not _contained(a, b):
        return []
    ra, rb = _restricted_clauses(a), _restricted_clauses(b)
    pa, pb = [p for p, _ in ra], [p for p, _ in rb]
    for other, mine, theirs, side in ((b, ra, pb, "first"), (a, rb, pa, "second")):
        stems = _stems(other)
        for phrase, clause in mine:
            if [p for p, _ in mine].count(phrase) <= theirs.count(phrase) or not stems:
                continue
            cs = _stems(clause)
            if not cs - stems and not _EXCLUSIVE.match(phrase):
                continue  # the other answer states the same condition as a modifier ("dogs under 8kg can ...")
            if len(cs & stems) / min(len(cs), len(stems)) >= MIN_CLAUSE_OVERLAP:
                return [f"a condition only the {side} answer states: {clause!r}"]
    return []


# the words that count things in an answer ("two chairs", "a couple of days", "both cards"); figures
# with units are parsed by `checks.parse_number` and compared there
_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
                 "a couple of": 2, "a pair of": 2, "a dozen": 12, "both": 2, "single": 1}
_COUNT = re.compile(
    r"\b(" + "|".join(sorted(_COUNT_WORDS, key=len, reverse=True)) + r"|\d{1,3})\s+"
    r"((?:(?:more|extra|new|replacement|additional|spare|separate|free|further|monthly|weekly|annual|[a-z]+-[a-z]+)\s+)"
    r"{0,2})([a-z]{3,})(?:\s+([a-z]{3,}))?\b",
    re.I,
)
# durations and other units are compared by `checks` (with their conversions)
_UNIT_NOUNS = {"minutes", "hours", "days", "weeks", "months", "years", "nights", "times", "seconds", "mins", "hrs"}
_IRREGULAR = {"children": "child", "people": "person", "men": "man", "women": "woman", "teeth": "tooth"}
# words after "one" that are not counted things ("one moment", "one of", "one more")
_NOT_COUNTED = {"more", "moment", "off", "way", "thing", "another", "other", "less", "last", "time", "too", "that",
                "this", "which", "who", "you", "the", "and", "but", "for", "our", "your", "their", "its", "has", "was",
                "will", "can", "is", "are", "with", "from", "item", "person", "piece", "minute", "second"}


def _counts(text: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for m in _COUNT.finditer(text):
        raw = m.group(1).lower()
        if re.search(r"\b(?:working|business|calendar)\s*$", m.group(2), re.I):
            continue
        n = int(raw) if raw.isdigit() else _COUNT_WORDS[raw]
        # the counted noun is the first word, or the second after a noun modifier ("two passport
        # photos"); both are keys when both agree with the count ("one passport photo")
        for noun in (m.group(3), m.group(4)):
            if noun is None:
                break
            noun = noun.lower()
            # a plural after a number above one; a singular only after "one" / "single" ("a single user")
            plural = noun.endswith("s") or noun in _IRREGULAR
            if (plural and raw in ("one", "single", "1")) or (not plural and raw not in (
                    "one", "single", "1")) or noun in _NOT_COUNTED:
                continue
            noun = _IRREGULAR.get(noun, noun.removesuffix("s"))
            if noun + "s" not in _UNIT_NOUNS:
                out.setdefault(noun, set()).add(n)
    return out


def count_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when both answers count the same things and the counts share no value."""
    ca, cb = _counts(a), _counts(b)
    return [f"counts differ: {sorted(ca[k])} vs {sorted(cb[k])} {k}(s)" for k in sorted(ca.keys() & cb.keys())
            if ca[k].isdisjoint(cb[k])]


_FREE = re.compile(r"\b(?:free(?! to\b)(?: of charge)?|included|includes?|no (?:extra |additional )?(?:charge|cost|fee)s?|"
                   r"at no (?:extra |additional )?cost|complimentary|without (?:any )?charge|costs? nothing|"
                   r"no payment (?:is |will be )?(?:due|needed|required|taken)|nothing (?:is due|to pay|for you to pay)|"
                   r"owe (?:us )?nothing|nothing (?:further|more|else) (?:is due|to pay|for you to pay)|"
                   r"(?:no|nothing) (?:further|more) to pay)\b",
                   re.I)
# a price that starts later ("free for the first six months, then £13 a month") is a price
_LATER_PRICE = re.compile(r"\b(?:then|after that|thereafter|afterwards|from then on|after which)\b", re.I)
_NEGATED = re.compile(r"\b(?:not|no|never|n't|isn't|aren't|doesn't|don't|won't)\W+(?:\w+\W+){0,2}$", re.I)


def _says_free(text: str) -> bool:
    t = text.replace("\u2019", "'")
    # "not included" / "doesn't include" says the opposite
    return any(not _NEGATED.search(t[max(0, m.start() - 30): m.start()]) for m in _FREE.finditer(t))


_SUBJECT = re.compile(r"^\W*((?:[\w'-]+\s+){0,4}?)(?:is|are|comes?|costs?|will|can|includes?)\b", re.I)


def _same_subject(a: str, b: str) -> bool:
    """Both answers open with the same subject before their verb ("Wi-Fi is ..." / "Wi-Fi is ...")."""
    ma, mb = _SUBJECT.match(a), _SUBJECT.match(b)
    return bool(ma and mb and ma.group(1).strip() and ma.group(1).strip().lower() == mb.group(1).strip().lower())


def price_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when the answers are about the same thing and one says it is free or
    included while the other states a price and does not say so. The overlap asked is lower
    than for conditions: the priced answer usually words the thing differently ("Seat selection
    is included" / "Seat selection is available for an extra £12")."""
    if not (_contained(a, b, MIN_PRICE_OVERLAP) or _same_subject(a, b)):
        return []
    for x, y, side in ((a, b, "second"), (b, a, "first")):
        # the free answer's own figures are what is paid already ("Your insurer has paid $412; you
        # owe nothing"): a further figure in the other answer is the price
        extra = {m for m in extract_amounts(y) - extract_amounts(x) if m.value}
        if _says_free(x) and extra and (not _says_free(y) or _LATER_PRICE.search(y)):
            return [f"free or included vs a price: the {side} answer charges {sorted(map(str, extra))[0]}"]
    return []


_REL_UNIT = r"(week|month|year|quarter|billing cycle|weekend)"
_RELATIVE = re.compile(rf"\b(?:(the {_REL_UNIT} after next)|(last|this|next|previous|current|coming|following) {_REL_UNIT})\b",
                       re.I)
_REL_OFFSET = {"last": -1, "previous": -1, "this": 0, "current": 0, "next": 1, "coming": 1, "following": 1}


def _relative(text: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for m in _RELATIVE.finditer(text):
        if m.group(1):
            out.setdefault(m.group(2).lower(), set()).add(2)
        else:
            out.setdefault(m.group(4).lower(), set()).add(_REL_OFFSET[m.group(3).lower()])
    return out


def relative_date_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when both answers place something in a relative period of the same unit and
    share no offset ("before March last year" / "before March this year"; "from next month" /
    "from the month after next")."""
    ra, rb = _relative(a), _relative(b)
    names = {-1: "last", 0: "this", 1: "next", 2: "the one after next"}
    for unit in sorted(ra.keys() & rb.keys()):
        if ra[unit].isdisjoint(rb[unit]):
            return [f"relative dates differ: {'/'.join(names[x] for x in sorted(ra[unit]))} {unit} vs "
                    f"{'/'.join(names[x] for x in sorted(rb[unit]))} {unit}"]
    return []


def _amount_counts(text: str) -> dict[object, int]:
    counts: dict[object, int] = {}
    for sentence in re.split(r"(?<=[.!?;])\s+|,\s+", text):
        for amount in extract_amounts(sentence):
            counts[amount] = counts.get(amount, 0) + 1
    return counts


def amount_count_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when the answers state the same amounts but each states one the other does not,
    counting repeats ("refunded half of it, £143.57" of £287.14 / "refunded all of it, £287.14":
    the same set of values up to one amount, said a different number of times)."""
    ca, cb = _amount_counts(a), _amount_counts(b)
    only_a = [k for k in ca if ca[k] > cb.get(k, 0)]
    only_b = [k for k in cb if cb[k] > ca.get(k, 0)]
    if only_a and only_b and ca.keys() & cb.keys():
        return [f"amounts differ: {', '.join(map(str, only_a))} vs {', '.join(map(str, only_b))}"]
    return []


_MONTH = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|december)\b"
                    r"(?!\s+\d)", re.I)
_MONTH_DATED = re.compile(r"\d\s*(?:st|nd|rd|th)?\s+(?:of\s+)?$", re.I)


def month_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when both answers name a month without a day ("due in March" / "due in May")
    and share none. Months with a day are dates, compared by `checks`."""
    def months(text: str) -> set[str]:
        return {m.group(1).lower() for m in _MONTH.finditer(text) if not _MONTH_DATED.search(text[: m.start()])
                and not (m.group(1).lower() == "may" and not m.group(1)[0].isupper())}
    ma, mb = months(a), months(b)
    if ma and mb and ma.isdisjoint(mb):
        return [f"months differ: {', '.join(sorted(ma))} vs {', '.join(sorted(mb))}"]
    return []


# a figure, then (within a few words, before any other figure or the end of the clause) what it
# is counted per: "£312.60 for the year", "1,000 requests per minute", "€400 per passenger"
_FIGURE = re.compile(rf"([£$€]?)\s?({_DIGITS})(?![\d/:-])")
_BASIS = re.compile(
    r"[^\d.;!?]{0,40}?\b(?:(?:per|a|an|each|every|for (?:the|each|a|every|your))\s+(?:policy\s+|calendar\s+|billing\s+)?"
    r"(minute|hour|day|night|week|fortnight|month|quarter|year|passenger|person|adult|guest|head|traveller|traveler|"
    r"booking|order|reservation|trip|claim|incident|bag|item|user|seat|device|line|room|household|account)s?|"
    r"(monthly|weekly|yearly|annually|annual|daily|nightly|hourly|quarterly))\b", re.I)
_BASIS_CANON = {"night": "day", "daily": "day", "nightly": "day", "hourly": "hour", "weekly": "week", "monthly": "month",
                "quarterly": "quarter", "yearly": "year", "annually": "year", "annual": "year", "passenger": "person",
                "adult": "person", "guest": "person", "head": "person", "traveller": "person", "traveler": "person",
                "order": "booking", "reservation": "booking", "trip": "booking", "incident": "claim"}


def _bases(text: str) -> dict[str, set[str]]:
    """figure (currency + its value as `checks` reads numbers) -> the bases it is stated per."""
    out: dict[str, set[str]] = {}
    for m in _FIGURE.finditer(text):
        value = parse_number(m.group(2))
        if value is None:
            continue
        key = m.group(1) + str(_norm(value))
        b = _BASIS.match(text, m.end())
        found = out.setdefault(key, set())
        if b is not None:
            word = (b.group(1) or b.group(2)).lower()
            found.add(_BASIS_CANON.get(word, word))
    return out


def basis_conflicts(a: str, b: str) -> list[str]:
    """Reasons, when both answers state the same figure per different things ("£312.60 for the
    year" / "£312.60 monthly"; "per minute" / "per hour"; "per passenger" / "for the booking").
    A figure with no basis in one answer, or bases one of which includes the other ("per person"
    / "per person per night"), is not a conflict."""
    ba, bb = _bases(a), _bases(b)
    for fig in ba.keys() & bb.keys():
        x, y = ba[fig], bb[fig]
        if x and y and not x <= y and not y <= x:
            return [f"the same figure per different things: {fig} per {', '.join(sorted(x))} vs per "
                    f"{', '.join(sorted(y))}"]
    return []
