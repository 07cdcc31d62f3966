"""Fact checks that cosine similarity misses: amounts, quantities, dates, polarity, refusal.

Every extractor is pure and cheap (regular expressions over one answer). The
comparisons only report a difference when *both* answers state the thing:
an answer that omits the amount does not contradict one that gives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

# ---------------------------------------------------------------------------
# Numbers (digits and common English number words)
# ---------------------------------------------------------------------------

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "a": 1, "an": 1, "single": 1,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD_NUM = r"(?:(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million)(?:[\s-]+(?:and[\s-]+)?)?){1,8}"  # bounded: no catastrophic backtracking on "one one one ..."
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_NUM = rf"(?:{_DIGITS}|{_WORD_NUM})"


def parse_number(text: str) -> Decimal | None:
    """'1,200.50' -> 1200.50, 'fifty' -> 50, 'two hundred and fifty' -> 250, else None."""
    t = text.strip().lower().replace(",", "")
    try:
        return Decimal(t)
    except InvalidOperation:
        pass
    total, current, seen = 0, 0, False
    for w in re.split(r"[\s-]+", t):
        if not w or w == "and":
            continue
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w in _SCALES:
            scale = _SCALES[w]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * scale
                current = 0
        else:
            return None
        seen = True
    return Decimal(total + current) if seen else None


def _norm(d: Decimal) -> Decimal:
    return Decimal(int(d)) if d == d.to_integral_value() else d.quantize(Decimal("0.01"))


# ---------------------------------------------------------------------------
# Money
# ---------------------------------------------------------------------------

_SYMBOLS = {"£": "GBP", "$": "USD", "€": "EUR", "¥": "JPY", "₹": "INR"}
_CODES = {"gbp", "usd", "eur", "jpy", "inr", "chf", "aud", "cad"}
_WORDS = {"pound": "GBP", "pounds": "GBP", "quid": "GBP", "dollar": "USD", "dollars": "USD",
          "euro": "EUR", "euros": "EUR", "pence": "GBP_p", "p": "GBP_p", "cents": "USD_c"}
_MULT = {"k": 1000, "m": 1_000_000, "bn": 1_000_000_000}

_MONEY_SYM = re.compile(rf"([£$€¥₹])\s?({_DIGITS})\s?(k|m|bn)?\b", re.I)
_MONEY_CODE_BEFORE = re.compile(rf"\b(GBP|USD|EUR|JPY|INR|CHF|AUD|CAD)\s?({_DIGITS})\b", re.I)
_MONEY_AFTER = re.compile(
    rf"(?<![\w.£$€])({_NUM})\s?(GBP|USD|EUR|JPY|INR|CHF|AUD|CAD|pounds?|quid|dollars?|euros?|pence|p|cents)\b",
    re.I,
)


@dataclass(frozen=True, order=True)
class Amount:
    currency: str
    value: Decimal

    def __str__(self) -> str:
        sym = {"GBP": "£", "USD": "$", "EUR": "€"}.get(self.currency)
        return f"{sym}{self.value:,}" if sym else f"{self.value:,} {self.currency}"


def _amount(cur: str, raw: str, mult: str | None = None) -> Amount | None:
    value = parse_number(raw)
    if value is None:
        return None
    if mult:
        value *= _MULT[mult.lower()]
    if cur.endswith("_p") or cur.endswith("_c"):
        cur, value = cur[:3], value / 100
    return Amount(cur, _norm(value))


_MONEY_COMPOUND = re.compile(
    rf"(?<![\w.£$€])({_NUM})\s?(pounds?|quid|dollars?|euros?)\s+(?:and\s+)?({_NUM})(?:\s?(cents?|pence|p)\b)?",
    re.I,
)
_MAJOR = {"pound": "GBP", "quid": "GBP", "dollar": "USD", "euro": "EUR"}


def extract_amounts(text: str) -> set[Amount]:
    found: set[Amount] = set()
    spans: list[tuple[int, int]] = []
    # a major and a minor unit in words ("two dollars fifty", "ten pounds and 20p") is one amount
    for m in _MONEY_COMPOUND.finditer(text):
        major, minor = parse_number(m.group(1)), parse_number(m.group(3).strip())
        if major is None or minor is None or not 0 < minor < 100 or minor != minor.to_integral_value():
            continue
        cur = _MAJOR[m.group(2).lower().rstrip("s")]
        found.add(Amount(cur, _norm(major + minor / 100)))
        spans.append(m.span())
    for m in _MONEY_SYM.finditer(text):
        if any(st <= m.start() < e for st, e in spans):
            continue
        a = _amount(_SYMBOLS[m.group(1)], m.group(2), m.group(3))
        if a:
            found.add(a)
            spans.append(m.span())
    for m in _MONEY_CODE_BEFORE.finditer(text):
        a = _amount(m.group(1).upper(), m.group(2))
        if a:
            found.add(a)
            spans.append(m.span())
    for m in _MONEY_AFTER.finditer(text):
        if any(s <= m.start() < e for s, e in spans):
            continue
        unit = m.group(2).lower()
        if unit == "p" and not re.fullmatch(r"\d+", m.group(1)):
            continue
        cur = unit.upper() if unit in _CODES else _WORDS.get(unit)
        if cur:
            a = _amount(cur, m.group(1))
            if a:
                found.add(a)
    return found


# ---------------------------------------------------------------------------
# Quantities with units (durations, doses, percentages, counts)
# ---------------------------------------------------------------------------

_UNIT_CANON = {
    "minute": "minutes", "minutes": "minutes", "mins": "minutes", "min": "minutes",
    "hour": "hours", "hours": "hours", "hrs": "hours", "hr": "hours", "h": "hours",
    "day": "days", "days": "days", "working day": "days", "working days": "days",
    "business day": "days", "business days": "days", "calendar days": "days", "clear days": "days",
    "week": "weeks", "weeks": "weeks", "working week": "weeks", "working weeks": "weeks", "month": "months", "months": "months",
    "year": "years", "years": "years",
    "mg": "mg", "milligram": "mg", "milligrams": "mg", "mcg": "mcg", "micrograms": "mcg",
    "g": "g", "grams": "g", "gram": "g", "kg": "kg", "ml": "ml", "millilitres": "ml", "milliliters": "ml",
    "%": "%", "percent": "%", "per cent": "%",
    "times": "times", "tablet": "tablets", "tablets": "tablets", "capsule": "tablets",
    "capsules": "tablets", "dose": "doses", "doses": "doses", "units": "units",
    "items": "items", "item": "items", "instalments": "instalments", "installments": "instalments",
    "mb": "Mb", "mbps": "Mb", "mbit/s": "Mb", "meg": "Mb", "megs": "Mb", "gb": "GB", "gigs": "GB", "tb": "TB",
    "kwh": "kWh", "km": "km", "miles": "miles", "mile": "miles", "litres": "litres", "liters": "litres",
    "nights": "nights", "night": "nights", "seats": "seats", "users": "users", "bags": "bags", "bag": "bags",
}
_UNIT_RE = "|".join(sorted((re.escape(u) for u in _UNIT_CANON), key=len, reverse=True))
_QTY = re.compile(
    rf"(?<![\w£$€.])({_NUM})(?:\s?(?:-|\u2013|to|or)\s?({_NUM}))?\s?({_UNIT_RE})(?![a-z])",
    re.I,
)
_FREQ = {"once": ("times", 1), "twice": ("times", 2), "thrice": ("times", 3)}
_FREQ_RE = re.compile(r"\b(once|twice|thrice)\b", re.I)


@dataclass(frozen=True, order=True)
class Quantity:
    """A figure with its canonical unit: `low` == `high` for a single value, `low` < `high` for a
    range ("3-5 days"). `basis` is "working" for working or business days and weeks, else ""."""

    unit: str
    low: Decimal
    high: Decimal
    basis: str = ""

    def __str__(self) -> str:
        v = f"{self.low}" if self.low == self.high else f"{self.low}-{self.high}"
        unit = f"{self.basis} {self.unit}" if self.basis else self.unit
        return f"{v} {unit}" if self.unit != "%" else f"{v}%"


_WORKING = re.compile(r"^(?:working|business)\b", re.I)


def extract_quantities(text: str) -> set[Quantity]:
    found: set[Quantity] = set()
    for m in _QTY.finditer(text):
        unit = _UNIT_CANON.get(m.group(3).lower())
        low = parse_number(m.group(1))
        if unit is None or low is None:
            continue
        # "a day" / "an hour" inside "twice a day" is a rate, not a quantity
        if m.group(1).lower() in ("a", "an", "single") and not m.group(2):
            continue
        high = parse_number(m.group(2)) if m.group(2) else low
        if high is None:
            high = low
        basis = "working" if _WORKING.match(m.group(3)) else ""
        found.add(Quantity(unit, _norm(min(low, high)), _norm(max(low, high)), basis))
    for m in _FREQ_RE.finditer(text):
        unit, n = _FREQ[m.group(1).lower()]
        found.add(Quantity(unit, Decimal(n), Decimal(n)))
    for m in _DAY_WORDS.finditer(text):
        n = Decimal(0 if m.group(1).lower().startswith("same") else 1)
        found.add(Quantity("days", n, n))
    return found


# a duration of one unit said with an article ("within a month", "an hour"): not a Quantity (in
# "twice a day" it is a rate), but a span the cross-unit comparison reads
_ONE_UNIT = re.compile(r"\b(?:a|an)\s+(working |business |calendar |clear )?(hour|day|week|month|year)\b", re.I)
_IN_HOURS = {"hours": 1, "days": 24, "weeks": 168, "months": 730, "years": 8760}
_WORKING_DAY = Decimal("1.4")  # calendar days per working day (a five-day week)


def extract_durations(text: str, quantities: set[Quantity]) -> dict[str, set[Decimal]]:
    """canonical time unit -> the spans stated in it, in calendar hours (the end of a range:
    "3-5 days" is 120 h). A working day is 7/5 of a calendar day and a working week a calendar
    week, so "5 working days" and "a week" name the same span. Minutes are left out: they are
    times of day as often as spans."""
    out: dict[str, set[Decimal]] = {}
    for q in quantities:
        hours = _IN_HOURS.get(q.unit)
        if hours is not None:
            per = Decimal(hours) * _WORKING_DAY if q.unit == "days" and q.basis == "working" else Decimal(hours)
            out.setdefault(q.unit, set()).add(q.high * per)
    for m in _ONE_UNIT.finditer(text):
        unit = m.group(2).lower() + "s"
        working = unit == "days" and (m.group(1) or "").strip().lower() in ("working", "business")
        out.setdefault(unit, set()).add(Decimal(_IN_HOURS[unit]) * (_WORKING_DAY if working else 1))
    return out


# durations said in words: "same day" is 0 days, "next day" / "overnight" 1 day
_DAY_WORDS = re.compile(r"\b(same[- ]day|(?:the )?same day|next[- ]day|overnight)\b(?!\s*(?:delivery )?(?:on|at)\b)",
                        re.I)


# ---------------------------------------------------------------------------
# Dates and times of day
# ---------------------------------------------------------------------------

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august",
     "september", "october", "november", "december"])}
_MONTHS.update({k[:3]: v for k, v in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MON = r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?"
_ORD = r"(\d{1,2})(?:st|nd|rd|th)?"
_DMY = re.compile(rf"\b{_ORD}\s+(?:of\s+)?{_MON}(?:,?\s+(\d{{4}}))?\b", re.I)
_MDY = re.compile(rf"\b{_MON}\s+{_ORD}(?:,?\s+(\d{{4}}))?\b", re.I)
_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_SLASH = re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{2,4})\b")
_ORDINAL_DAY = re.compile(r"\b(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)\b", re.I)
_DAY_MONTH = re.compile(r"(?<![\d/.])(\d{1,2})/(\d{1,2})(?![\d/]|\.\d)")
_WEEKDAY = re.compile(r"\b(monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", re.I)
_TIME = re.compile(r"\b(\d{1,2})(?:[:.](\d{2}))?\s?(am|pm|a\.m\.|p\.m\.)", re.I)
_TIME24 = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_TIME_RANGE12 = re.compile(r"\b(\d{1,2}):([0-5]\d)\s*(?:to|-|\u2013|until|till)\s*(\d{1,2}):([0-5]\d)\b(?!\s?(?:am|pm|a\.m|p\.m))", re.I)


@dataclass(frozen=True, order=True)
class DateRef:
    """A calendar date (year optional) or a weekday; compared loosely on what both state."""

    month: int = 0
    day: int = 0
    year: int = 0
    weekday: str = ""

    def __str__(self) -> str:
        if self.weekday:
            return self.weekday.capitalize()
        names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        if not self.month:
            return f"day {self.day}"
        s = f"{self.day} {names[self.month - 1]}"
        return f"{s} {self.year}" if self.year else s

    def same_as(self, other: DateRef) -> bool:
        if self.weekday or other.weekday:
            return self.weekday == other.weekday
        if not self.month or not other.month:  # "the 3rd": a day of the month, any month
            return self.day == other.day
        if (self.month, self.day) != (other.month, other.day):
            return False
        return not (self.year and other.year and self.year != other.year)


def _valid(month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= 31


def extract_dates(text: str) -> set[DateRef]:
    found: set[DateRef] = set()
    for m in _DMY.finditer(text):
        d, mon, y = int(m.group(1)), _MONTHS[m.group(2).lower()[:4].rstrip(".") if m.group(2).lower().startswith("sept") else m.group(2).lower()[:3]], m.group(3)
        if _valid(mon, d):
            found.add(DateRef(mon, d, int(y) if y else 0))
    for m in _MDY.finditer(text):
        if m.group(1).lower() == "may" and not m.group(3) and re.match(r"\d+\s*(?:days|weeks|months|%)", text[m.end(2):m.end(2) + 10]):
            continue
        mon = _MONTHS[m.group(1).lower()[:3]]
        d, y = int(m.group(2)), m.group(3)
        if _valid(mon, d):
            found.add(DateRef(mon, d, int(y) if y else 0))
    for m in _ISO.finditer(text):
        y, mon, d = (int(g) for g in m.groups())
        if _valid(mon, d):
            found.add(DateRef(mon, d, y))
    for m in _SLASH.finditer(text):
        d, mon, y = (int(g) for g in m.groups())  # UK order: day/month/year
        if y < 100:
            y += 2000
        if not _valid(mon, d) and _valid(d, mon):
            d, mon = mon, d
        if _valid(mon, d):
            found.add(DateRef(mon, d, y))
    taken = [m.span() for rx in (_DMY, _MDY, _ISO, _SLASH) for m in rx.finditer(text)]
    for m in _DAY_MONTH.finditer(text):  # "28/02": day/month (UK order) without a year
        if any(st <= m.start() < e for st, e in taken) or m.group(0) == "24/7":
            continue
        d, mon = int(m.group(1)), int(m.group(2))
        if not _valid(mon, d) and _valid(d, mon):
            d, mon = mon, d
        if _valid(mon, d):
            found.add(DateRef(mon, d))
    for m in _ORDINAL_DAY.finditer(text):  # "on the 1st", "the 23rd of each month"
        if any(st <= m.start(1) < e for st, e in taken) or not 1 <= int(m.group(1)) <= 31:
            continue
        if re.match(r"\s*(?:time|floor|row|place|century|birthday|anniversary|attempt|call|year|week|month)\b",
                    text[m.end():m.end() + 12], re.I):
            continue  # "3rd time", "2nd floor": an ordinal, not a day
        found.add(DateRef(0, int(m.group(1))))
    for m in _WEEKDAY.finditer(text):
        found.add(DateRef(weekday=m.group(1).lower()))
    return found


def extract_times(text: str) -> set[str]:
    found: set[str] = set()
    for m in _TIME.finditer(text):
        h, mins, ap = int(m.group(1)), int(m.group(2) or 0), m.group(3).lower().replace(".", "")
        if not 1 <= h <= 12:
            continue
        h = (h % 12) + (12 if ap == "pm" else 0)
        found.add(f"{h:02d}:{mins:02d}")
    # an opening-hours range on a 12-hour clock without am/pm ends in the afternoon when its end is
    # earlier than its start ("8:30 to 3:30" = 08:30-15:30)
    afternoon = {m.start(3) for m in _TIME_RANGE12.finditer(text)
                 if int(m.group(3)) < int(m.group(1)) <= 12}
    for m in _TIME24.finditer(text):
        h = int(m.group(1)) + (12 if m.start() in afternoon else 0)
        found.add(f"{h:02d}:{m.group(2)}")
    for m in re.finditer(r"\b(noon|midday|midnight)\b", text, re.I):
        found.add("00:00" if m.group(1).lower() == "midnight" else "12:00")
    return found


# ---------------------------------------------------------------------------
# Decision polarity and negation
# ---------------------------------------------------------------------------

# word -> (concept, polarity). Antonyms share a concept with opposite polarity.
_POLAR: dict[str, tuple[str, bool]] = {}


def _polar(concept: str, pos: str, neg: str) -> None:
    for w in pos.split():
        _POLAR[w] = (concept, True)
    for w in neg.split():
        _POLAR[w] = (concept, False)


_polar("approval",
       "approved approve approves accepted accept granted grant authorised authorized authorise authorize upheld successful processed issued",
       "declined decline denied deny rejected reject refused refuse unsuccessful turned")
_polar("eligibility", "eligible entitled qualify qualifies qualified", "ineligible unqualified")
_polar("refundable", "refundable", "nonrefundable non-refundable")
_polar("permission", "allowed permitted permissible legal lawful ok okay acceptable possible fine",
       "prohibited forbidden banned illegal unlawful impossible unacceptable")
_polar("safety", "safe", "unsafe dangerous harmful hazardous")
_polar("validity", "valid active", "invalid void expired")
_polar("liability", "liable responsible", "")
_polar("requirement", "required necessary mandatory compulsory", "optional unnecessary")
_polar("recommendation", "recommended advisable advised suitable appropriate",
       "discouraged inadvisable contraindicated unsuitable inappropriate")
_polar("availability", "available", "unavailable")
_polar("answer", "yes correct right true", "no incorrect wrong false")
_polar("completion", "completed complete resolved fixed", "unresolved pending outstanding")
_polar("possibility", "can could may able", "unable")
_polar("continuation", "continue continuing keep keeping carry", "stop stopping discontinue cease quit")
_polar("renewal", "renew renews renewed renewal renewals", "")
_polar("booking", "confirmed booked scheduled", "cancelled canceled postponed")
_polar("coverage", "cover covers covered included includes", "excluded excludes")
_polar("payment", "paid payable", "unpaid")

def _ws(words: str) -> frozenset[str]:
    return frozenset(words.split())


# adjectives that only make a claim when predicative ("is legal"), not in "legal advice"
_PREDICATIVE = _ws(
    "legal lawful illegal unlawful possible impossible fine ok okay acceptable unacceptable safe unsafe dangerous "
    "harmful hazardous valid invalid void active available unavailable correct right true wrong false suitable "
    "unsuitable appropriate inappropriate complete necessary unnecessary optional responsible liable eligible "
    "ineligible refundable nonrefundable non-refundable expired mandatory compulsory required"
)
_COPULA = _ws("is are was were be been being s has have had seem seems remain remains become becomes considered "
              "deemed")
_NEGATORS = {"not", "never", "no", "neither", "nor", "without", "cannot", "hardly", "none", "unable"}
_SKIP = {"be", "been", "being", "also", "still", "yet", "currently", "now", "then", "really",
         "actually", "unfortunately", "sadly", "afraid", "fully", "definitely", "certainly",
         "likely", "always", "usually", "just", "only", "even", "therefore", "so", "quite", "at",
         "all", "considered", "deemed", "going", "to", "get", "got", "become", "remain", "s"}
_MODALS = {"can", "could", "may", "might", "will", "would", "should", "must", "shall", "do", "does",
           "did", "need", "needs", "is", "are", "was", "were", "has", "have", "had"}
# verbs too generic to carry a decision of their own
_GENERIC = {"help", "let", "know", "see", "find", "happy", "glad", "sorry", "please", "make", "like",
            "want", "hear", "a", "an", "the", "this", "that", "it", "you", "we", "i", "your", "our",
            "there", "here", "any", "some", "very", "more", "than", "in", "on", "of", "for", "with",
            "by", "as", "and", "or", "but", "if", "what", "which", "who", "how", "when", "also",
            "usually", "able", "about", "back", "up", "out", "contact", "call", "email", "reply",
            "respond", "take", "look", "check", "note", "aware", "expect", "try"}
_CONTRACTIONS = [
    (re.compile(r"\bcan['\u2019]?t\b|\bcannot\b"), "can not"),
    (re.compile(r"\bwon['\u2019]?t\b"), "will not"),
    (re.compile(r"\bshan['\u2019]?t\b"), "shall not"),
    (re.compile(r"n['\u2019]t\b"), " not"),
    (re.compile(r"['\u2019](?:re|ve|ll|d|m)\b"), ""),
    (re.compile(r"['\u2019]s\b"), " s"),
]
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")
_CLAUSE = re.compile(r"[.;!?:]|,\s*(?:but|however|although|though|whereas)\b|\b(?:but|however|although|unless)\b")


def _tokens(text: str) -> list[list[str]]:
    t = text.lower()
    for rx, rep in _CONTRACTIONS:
        t = rx.sub(rep, t)
    return [_WORD.findall(clause) for clause in _CLAUSE.split(t) if clause.strip()]


def polarity_claims(text: str) -> dict[str, set[bool]]:
    """Concept -> the polarities the text asserts, e.g. {"approval": {False}, "verb:refund": {True}}.

    A decision word is negated when a negator sits in the three preceding words
    of its clause ("has not been approved", "is no longer eligible"). Modal
    phrases ("can cancel" / "cannot cancel", "will refund" / "won't refund")
    become `verb:<verb>` claims so they are compared verb by verb.
    """
    claims: dict[str, set[bool]] = {}
    for words in _tokens(text):
        for i, w in enumerate(words):
            prev = words[max(0, i - 3) : i]
            negated = any(p in _NEGATORS for p in prev) or (
                i >= 4 and words[i - 4] in _NEGATORS and prev and prev[-1] in _SKIP
            )
            if w in _POLAR and w not in ("can", "could", "may", "able", "no", "yes") and not (
                w == "turned" and (i + 1 >= len(words) or words[i + 1] != "down")
            ) and not (w in _PREDICATIVE and not (set(prev) & _COPULA) and i > 0):
                concept, pol = _POLAR[w]
                claims.setdefault(concept, set()).add(pol != negated)
            if w in ("yes", "no") and i == 0:
                claims.setdefault("answer", set()).add(w == "yes")
            if w == "unable":
                claims.setdefault("possibility", set()).add(negated)
            if w in _MODALS or w in ("able",):
                j, neg = i + 1, False
                while j < len(words) and (
                    words[j] in _NEGATORS or words[j] in _SKIP
                    or (words[j] in ("have", "need", "needs", "ought") and j + 1 < len(words) and words[j + 1] == "to")
                ):
                    neg = neg or words[j] in _NEGATORS
                    j += 1
                if j < len(words):
                    verb = words[j]
                    if verb in _POLAR or verb in _GENERIC or len(verb) < 3:
                        continue
                    if w in ("is", "are", "was", "were", "has", "have", "had") and not neg:
                        continue  # "is a", "has the": only negated copulas carry a claim
                    claims.setdefault(f"verb:{_stem(verb)}", set()).add(not neg)
            if w == "unable" and i + 2 < len(words) and words[i + 1] == "to":
                claims.setdefault(f"verb:{_stem(words[i + 2])}", set()).add(False)
    return claims


# Antonyms formed by a negating prefix ("enforceable" / "unenforceable", "compliant" /
# "non-compliant"). A prefixed word counts only when its stem is itself a word the
# other answer uses the same way (predicatively or as a participle), the prefix fits
# the stem (im- before b/m/p, il- before l, ir- before r), and the stem ends like an
# adjective or participle -- so "information" / "formation" never pair up.
_NEG_PREFIXES = ("non-", "non", "un", "dis", "in", "im", "il", "ir")
_ADJ_SUFFIXES = ("able", "ible", "al", "ent", "ant", "ive", "ful", "ed", "id", "ar", "ous", "ct", "ete", "ate",
                 "ite", "ue", "ure", "ic", "le", "ing")
# prefixed words that are not the opposite of their stem
_NOT_ANTONYMS = _ws(
    "discovered disclosed dissolved disappointed dismissed dispatched disposed discharged discounted displayed "
    "disgusted distressed dispensed disturbed distributed discussed disbursed displaced dispersed disputed "
    "invaluable inflammable infamous indebted impressed imposed informed inflated involved intended invested "
    "installed insisted imparted implied imported impeached incurred indicated included insured inspected "
    "instructed interested intimate irate illustrated unravelled unloosed"
)
_PREDICATE_CUES = _COPULA | frozenset({"not", "never", "no", "now", "still", "fully", "deemed", "considered",
                                       "found", "ruled", "held", "become", "remain", "remains"})


def stances(text: str) -> dict[str, set[bool]]:
    """Adjectives and participles the text asserts, with polarity: "is unenforceable" ->
    {"unenforceable": {True}}, "is not valid" -> {"valid": {False}}. A word counts when
    it follows a copula or negator within three words ("was not found eligible") or is a
    participle (ends in -ed); attributive uses ("legal advice", "valid ID") are left out."""
    out: dict[str, set[bool]] = {}
    for words in _tokens(text):
        for i, w in enumerate(words):
            if len(w) < 5 or not w.endswith(_ADJ_SUFFIXES):
                continue
            prev = words[max(0, i - 3) : i]
            if not (set(prev) & _PREDICATE_CUES) and not w.endswith("ed"):
                continue
            negated = any(p in _NEGATORS for p in prev)
            out.setdefault(w, set()).add(not negated)
    return out


def prefix_stem(word: str, vocabulary: set[str] | dict[str, set[bool]]) -> str | None:
    """The stem `word` negates by prefix if that stem is in `vocabulary`, else None:
    ("unenforceable", {"enforceable"}) -> "enforceable"; ("information", {"formation"}) -> None."""
    if word in _NOT_ANTONYMS:
        return None
    for pre in _NEG_PREFIXES:
        if not word.startswith(pre):
            continue
        stem = word[len(pre) :]
        if len(stem) < 4 or stem not in vocabulary or not stem.endswith(_ADJ_SUFFIXES):
            continue
        first = stem[0]
        if (pre == "im" and first not in "bmp") or (pre == "il" and first != "l") or (pre == "ir" and first != "r"):
            continue
        if pre == "in" and first in "bmplr":
            continue
        return stem
    return None


_AUX = _ws("can could may might will would should must shall do does did is are was were be been s "
                 "has have had")
_SUBJECTS = _ws("i we you they he she it who which that")
_VERB_NEGATORS = frozenset({"not", "never"})


def negated_and_affirmed(text: str) -> tuple[set[str], set[str]]:
    """Verb stems the text negates ("don't need", "is not paid", "will never share") and
    verb stems it affirms ("you need", "is paid", "we ship"); nouns are left out by
    only counting words right after an auxiliary or a subject pronoun."""
    negated: set[str] = set()
    affirmed: set[str] = set()
    for words in _tokens(text):
        for i, w in enumerate(words):
            if w in _NEGATORS or w in _AUX or w in _SKIP or w in _GENERIC or len(w) < 3:
                continue
            j = i - 1
            while j >= 0 and (words[j] in _SKIP or words[j] in ("have", "need", "to", "be", "been")):
                j -= 1
            if j >= 0 and words[j] in _VERB_NEGATORS:
                k = j - 1
                while k >= 0 and words[k] in _SKIP:
                    k -= 1
                if words[j] == "never" or (k >= 0 and (words[k] in _AUX or words[k] in _SUBJECTS)):
                    negated.add(_stem(w))
                continue
            if j >= 0 and (words[j] in _AUX or words[j] in _SUBJECTS):
                affirmed.add(_stem(w))
    return negated, affirmed


def _stem(w: str) -> str:
    for suf in ("ing", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


# ---------------------------------------------------------------------------
# Refusal vs compliance
# ---------------------------------------------------------------------------

_CANT = (r"(?:can(?:no|')?t|cannot|can not|won'?t be able to|will not be able to|am not able to|are not able to|"
         r"'m not able to|'re not able to|am unable to|are unable to|'m unable to|'re unable to|unable to|"
         r"must decline to|(?:am|are|'m|'re) not (?:allowed|permitted) to)")
_REFUSAL = re.compile(
    r"\b(?:i|we)\b[^.!?]{0,25}?" + _CANT + r"\s+(?:"
    r"(?:help|assist|answer|comply|discuss|do that|do this)\b(?! (?:more|further|any further)\b)"
    r"|(?:provide|give|offer|share|disclose|reveal|process|make|recommend)\b[^.!?]{0,30}?"
    r"\b(?:advice|information|details|data|that|this|guidance|diagnos\w*|recommendations?|dosage|opinion)\b)"
    r"|\bas an ai\b|\bi(?:'m| am) not (?:a|your) (?:doctor|lawyer|solicitor|medical professional)\b"
    r"|\b(?:not something|nothing) (?:i|we) can (?:help|assist) with\b"
    r"|\b(?:outside|beyond) (?:the scope|what i can|what we can)\b"
    r"|\bi (?:must|have to) (?:decline|refuse)\b",
    re.I,
)


def is_refusal(text: str) -> bool:
    """The answer declines the task (rather than answering it)."""
    head = text.strip()[:300].replace("\u2019", "'")
    return bool(_REFUSAL.search(head))


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


@dataclass
class Facts:
    amounts: set[Amount] = field(default_factory=set)
    quantities: set[Quantity] = field(default_factory=set)
    durations: dict[str, set[Decimal]] = field(default_factory=dict)  # see `extract_durations`
    dates: set[DateRef] = field(default_factory=set)
    times: set[str] = field(default_factory=set)
    polarity: dict[str, set[bool]] = field(default_factory=dict)
    negated: set[str] = field(default_factory=set)
    affirmed: set[str] = field(default_factory=set)
    stances: dict[str, set[bool]] = field(default_factory=dict)
    refusal: bool = False

    def fact_count(self) -> int:
        return len(self.amounts) + len(self.quantities) + len(self.dates) + len(self.times)


def extract_facts(text: str) -> Facts:
    quantities = extract_quantities(text)
    return Facts(
        amounts=extract_amounts(text),
        quantities=quantities,
        durations=extract_durations(text, quantities),
        dates=extract_dates(text),
        times=extract_times(text),
        polarity=polarity_claims(text),
        negated=(na := negated_and_affirmed(text))[0],
        affirmed=na[1],
        stances=stances(text),
        refusal=is_refusal(text),
    )


@dataclass(frozen=True)
class Conflict:
    kind: str  # amounts | quantities | dates | times | polarity | refusal
    reason: str
    severity: float  # divergence this conflict implies on its own, in [0, 1]
    # a difference in a value a customer acts on, so the pair diverges whatever the answer-pair
    # model reads; set where the kind alone does not say (an identifier with letters: an email
    # address, an account code); amounts, times and quantities are decisive by kind
    # (`divergence.DECISIVE_KINDS`)
    decisive: bool = False


SEVERITY = {"refusal": 0.95, "amounts": 0.9, "polarity": 0.85, "quantities": 0.75, "dates": 0.75, "times": 0.7,
            "duration": 0.75, "range": 0.7, "day_basis": 0.7}
# spans in different units that name the same length: "30 days" / "a month", "90 days" / "three months"
DURATION_TOLERANCE = Decimal("0.1")
_SPAN_UNITS = ("hours", "days", "weeks", "months")


def _fmt(values: set) -> str:
    return ", ".join(sorted(str(v) for v in values))


def compare_facts(a: Facts, b: Facts) -> list[Conflict]:
    out: list[Conflict] = []
    if a.refusal != b.refusal:
        out.append(Conflict("refusal", "refusal vs compliance: " + ("first answer refuses" if a.refusal else "second answer refuses"), SEVERITY["refusal"]))
    for cur in sorted({x.currency for x in a.amounts} & {x.currency for x in b.amounts}):
        va = {x for x in a.amounts if x.currency == cur}
        vb = {x for x in b.amounts if x.currency == cur}
        nested = va <= vb or vb <= va  # one answer just gives fewer amounts
        if va != vb and (not nested or ((len(va) == 1 or len(vb) == 1) and va.isdisjoint(vb))):
            out.append(Conflict("amounts", f"amounts differ: {_fmt(va)} vs {_fmt(vb)}", SEVERITY["amounts"]))
    for unit in sorted({q.unit for q in a.quantities} & {q.unit for q in b.quantities}):
        qa = {q for q in a.quantities if q.unit == unit}
        qb = {q for q in b.quantities if q.unit == unit}
        # no value in common, or each answer states a value the other does not (25 years
        # and 5 years vs 25 years and 2 years)
        only_a = [x for x in qa if not any(_overlap(x, y) for y in qb)]
        only_b = [y for y in qb if not any(_overlap(x, y) for x in qa)]
        if not any(_overlap(x, y) for x in qa for y in qb) or (only_a and only_b):
            out.append(Conflict("quantities", f"{unit} differ: {_fmt(qa)} vs {_fmt(qb)}", SEVERITY["quantities"]))
    da = {d for d in a.dates if not d.weekday}
    db = {d for d in b.dates if not d.weekday}
    only_da = [x for x in da if not any(x.same_as(y) for y in db)]
    only_db = [y for y in db if not any(x.same_as(y) for x in da)]
    if da and db and (not any(x.same_as(y) for x in da for y in db) or (only_da and only_db)):
        out.append(Conflict("dates", f"dates differ: {_fmt(da)} vs {_fmt(db)}", SEVERITY["dates"]))
    wa = {d for d in a.dates if d.weekday}
    wb = {d for d in b.dates if d.weekday}
    # disjoint, or each states a weekday the other does not ("7pm Friday to 6am Monday" / "... Tuesday")
    if wa and wb and (wa.isdisjoint(wb) or (wa - wb and wb - wa)):
        out.append(Conflict("dates", f"days differ: {_fmt(wa)} vs {_fmt(wb)}", SEVERITY["dates"]))
    # disjoint, or each states a time the other does not ("8am to 12pm" vs "12pm to 6pm")
    if a.times and b.times and (a.times.isdisjoint(b.times) or (a.times - b.times and b.times - a.times)):
        out.append(Conflict("times", f"times differ: {_fmt(a.times)} vs {_fmt(b.times)}", SEVERITY["times"]))
    for concept in sorted(set(a.polarity) & set(b.polarity)):
        pa, pb = a.polarity[concept], b.polarity[concept]
        if len(pa) == 1 and len(pb) == 1 and pa != pb:
            name = concept.removeprefix("verb:")
            word = _CONCEPT_WORD.get(concept, name)
            sa = word if True in pa else f"not {word}"
            sb = word if True in pb else f"not {word}"
            out.append(Conflict("polarity", f"polarity: {sa} vs {sb}", SEVERITY["polarity"]))
    reported = {c.reason for c in out}
    for first, second, flip in ((a, b, False), (b, a, True)):
        for stem in sorted((first.negated & second.affirmed) - second.negated):
            if any(stem in r for r in reported):
                continue
            sa, sb = (f"not {stem}", stem) if not flip else (stem, f"not {stem}")
            reason = f"negation: {sa} vs {sb}"
            reported.add(reason)
            out.append(Conflict("polarity", reason, SEVERITY["polarity"]))
    for first, second, flip in ((a, b, False), (b, a, True)):
        for word in sorted(first.stances):
            stem = prefix_stem(word, second.stances)
            if stem is None or word in second.stances or stem in first.stances:
                continue  # both answers use both words: which claim goes with which subject is unclear
            pw, ps = first.stances[word], second.stances[stem]
            # "unenforceable" asserts not-enforceable; "not unenforceable" asserts enforceable
            if len(pw) != 1 or len(ps) != 1 or (True in pw) != (True in ps):
                continue
            if any(stem in r for r in reported) or (
                word in _POLAR and _POLAR[word][0] == _POLAR.get(stem, ("",))[0]
                and _POLAR[word][0] in a.polarity and _POLAR[word][0] in b.polarity
            ):
                continue  # already compared as a decision concept ("legal" / "illegal")
            sw = word if True in pw else f"not {word}"
            ss = stem if True in ps else f"not {stem}"
            sa, sb = (sw, ss) if not flip else (ss, sw)
            reason = f"prefix antonym: {sa} vs {sb}"
            reported.add(reason)
            out.append(Conflict("polarity", reason, SEVERITY["polarity"]))
    out += span_conflicts(a, b)
    return out


def span_conflicts(a: Facts, b: Facts) -> list[Conflict]:
    """The spans that differ though no figure does in the same unit: one duration each in
    different units, beyond `DURATION_TOLERANCE` ("for 2 days" / "for 24 hours"; "30 days" / "a
    month" agree); a single figure at the low end of the other answer's range, when the first gives
    no range ("within 3 working days" / "within 3 to 5 working days"; at the high end it is the same
    upper bound: "within five working days" / "in 3-5 working days"); the same number of days,
    working in one answer and calendar in the other ("3 working days" / "3 days")."""
    out: list[Conflict] = []
    da, db = a.durations, b.durations
    if len(da) == 1 and len(db) == 1 and da.keys() != db.keys():
        (ua, va), (ub, vb) = next(iter(da.items())), next(iter(db.items()))
        if len(va) == 1 and len(vb) == 1:
            x, y = next(iter(va)), next(iter(vb))
            if abs(x - y) > DURATION_TOLERANCE * max(x, y):
                out.append(Conflict("duration", f"durations differ: {x} h ({ua}) vs {y} h ({ub})", SEVERITY["duration"]))
    for x, y in ((a, b), (b, a)):
        ranges = [q for q in y.quantities if q.unit in _SPAN_UNITS and q.low < q.high]
        if not ranges or any(q.unit in _SPAN_UNITS and q.low < q.high for q in x.quantities):
            continue
        points = {(q.low, q.unit, q.basis) for q in x.quantities if q.unit in _SPAN_UNITS and q.low == q.high}
        hit = next((r for r in ranges if (r.low, r.unit, r.basis) in points), None)
        if hit is not None:
            out.append(Conflict("range", f"a single figure vs a range: {hit.low} vs {hit}", SEVERITY["range"]))
            break
    ba, bb = _day_bases(a), _day_bases(b)
    for n in sorted(ba.keys() & bb.keys()):
        if len(ba[n]) == 1 and len(bb[n]) == 1 and ba[n] != bb[n]:
            wa = "working" in ba[n]
            out.append(Conflict("day_basis", f"{n} {'working' if wa else 'calendar'} days vs {n} "
                                             f"{'calendar' if wa else 'working'} days", SEVERITY["day_basis"]))
            break
    return out


def _day_bases(f: Facts) -> dict[Decimal, set[str]]:
    """number of days (the end of a range) -> "working" / "calendar" as the answer counts them."""
    out: dict[Decimal, set[str]] = {}
    for q in f.quantities:
        if q.unit == "days":
            out.setdefault(q.high, set()).add(q.basis or "calendar")
    return out


def _in_days(q: Quantity) -> Quantity:
    """A duration in weeks as days (four weeks = 28 days); other quantities unchanged."""
    return Quantity("days", q.low * 7, q.high * 7) if q.unit == "weeks" else q


def shared_facts(a: Facts, b: Facts) -> int:
    """How many stated facts (amounts, quantities, dates, times) both answers agree on."""
    n = len(a.amounts & b.amounts) + len(a.times & b.times)
    n += sum(1 for x in a.quantities if any(_overlap(_in_days(x), _in_days(y)) and _in_days(x).unit == _in_days(y).unit
                                            for y in b.quantities))
    n += sum(1 for x in a.dates if any(x.same_as(y) for y in b.dates))
    return n


_CONCEPT_WORD = {"approval": "approved", "eligibility": "eligible", "permission": "allowed",
                 "safety": "safe", "coverage": "covered", "validity": "valid", "liability": "liable",
                 "requirement": "required", "recommendation": "recommended", "availability": "available",
                 "answer": "yes", "completion": "resolved", "possibility": "able", "refundable": "refundable"}


def _overlap(x: Quantity, y: Quantity) -> bool:
    return x.low <= y.high and y.low <= x.high
