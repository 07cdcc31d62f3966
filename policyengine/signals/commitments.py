"""How, when, how often and by whom: divergence checks for commitments stated in plain words.

Two answers can share every number and most words and still commit the support desk to
different things. Each check extracts one slot from each answer on its own and reports a
conflict only when **both** answers fill the slot and the values are disjoint (an answer
that leaves the slot empty never conflicts: more or less detail is not a different answer):

* **channel**: how something reaches the customer ("by text" / "by post", "by email",
  "in the app", "in branch");
* **period**: how often ("daily", "monthly", "once a year", "per week");
* **timing**: immediate ("straight away", "now", "instantly", "automatically") against
  deferred or conditional ("once the item is back", "when your contract ends", "up to 10
  working days", "after");
* **agent**: who acts, when the two answers talk about the same thing: "we will take it
  away" against "you'll need to dispose of it yourself";
* **amount binding**: both answers state the same amounts, bound to different words
  ("$199 today, then $49 a month" / "$49 today, then $199 a month");
* **added charge**: one answer deducts or adds a charge with an amount the other does not
  state ("the full £89" / "£89 minus a £10 restocking fee").

Pure Python, English only, no model.
"""

from __future__ import annotations

import re

from policyengine.signals.alignment import _STOP, tokens

__all__ = ["commitment_conflicts"]

_CHANNELS: tuple[tuple[str, str], ...] = (
    ("text message", r"(?:by|via|in an?|over) (?:text|sms)(?: message)?|text message|\bsms\b"),
    ("email", r"(?:by|via|in an?|over) e-?mail|e-?mailed"),
    ("post", r"(?:by|via|in the) (?:post|mail|letter)|(?:in a|by) (?:separate )?letter|posted to you"),
    ("phone", r"(?:by|over the|via) (?:phone|telephone)|(?:we'?ll|we will|an? \w+ will) (?:call|ring|phone) you"),
    ("app", r"(?:in|through|via|using|on) (?:the|our) app"),
    ("online", r"(?:online|on (?:our|the) website|through (?:our|the) website|web ?chat)"),
    ("in person", r"in (?:branch|person|store)|at (?:the|your|any|a) (?:branch|counter|desk|store)"),
)
_CHANNEL_RX = [(name, re.compile(rf"\b(?:{rx})\b", re.I)) for name, rx in _CHANNELS]

_PERIOD_WORDS = {"daily": "day", "weekly": "week", "fortnightly": "fortnight", "monthly": "month",
                 "quarterly": "quarter", "annually": "year", "annual": "year", "yearly": "year"}
_PERIOD_RX = re.compile(
    r"\b(daily|weekly|fortnightly|monthly|quarterly|annually|annual|yearly)\b|"
    r"\b(?:a|per|each|every|once a|twice a) (day|week|fortnight|month|quarter|year)\b", re.I)

_IMMEDIATE = re.compile(r"\b(?:straight away|right away|immediately|instantly|instant|now|today|automatically|"
                        r"at once|same[- ]day|in real time)\b", re.I)
_DEFERRED = re.compile(r"\b(?:once (?:the|your|we|it|they|you)|when (?:the|your|we|it|they|you)|after (?:the|your|we|"
                       r"it|they|you)|as soon as|only (?:after|once|when|if)|provided (?:that )?|until|"
                       r"up to \d+|within \d+|takes? (?:up to )?\d+|\d+ (?:working |business )?days?|"
                       r"next (?:week|month|year|billing))\b", re.I)

_WE_ACT = re.compile(r"\b(?:we(?:'ll| will| can| would|'d)|our (?:engineer|team|courier|driver|fitters?)s? will|"
                     r"automatically|for you)\b", re.I)
_YOU_ACT = re.compile(r"\b(?:you(?:'ll| will)? (?:need|have) to|you must|you should|yourself|you can request|"
                      r"please (?:request|apply|arrange|dispose|contact|call|book|submit|send|give|bring|take))\b", re.I)

_CHARGE = re.compile(r"\b(?:minus|less|deduct\w*|after deducting|excess|restocking|admin(?:istration)? fee|"
                     r"handling fee|fee of|charge of|surcharge|plus|extra|additional)\b", re.I)
_MONEY = re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?\s?(?:GBP|USD|EUR|pounds?|dollars?|euros?)\b", re.I)


def _channels(text: str) -> set[str]:
    return {name for name, rx in _CHANNEL_RX if rx.search(text)}


def _periods(text: str) -> set[str]:
    return {_PERIOD_WORDS.get((m.group(1) or "").lower(), (m.group(2) or "").lower()) for m in _PERIOD_RX.finditer(text)}


def _timing(text: str) -> str | None:
    imm, dfr = bool(_IMMEDIATE.search(text)), bool(_DEFERRED.search(text))
    return "immediate" if imm and not dfr else "deferred" if dfr and not imm else None


def _agent(text: str) -> str | None:
    we, you = bool(_WE_ACT.search(text)), bool(_YOU_ACT.search(text))
    return "we" if we and not you else "you" if you and not we else None


def _content(text: str) -> set[str]:
    return {t[:5] for t in tokens(text) if t not in _STOP and t.isalpha() and len(t) > 3}


def _money_bindings(text: str) -> dict[str, str]:
    """Amount (digits only) -> the first content word after it (or before it, at the end)."""
    out: dict[str, str] = {}
    for m in _MONEY.finditer(text):
        amount = re.sub(r"[^\d.]", "", m.group(0)).rstrip(".")
        after = [w for w in re.findall(r"[A-Za-z]+", text[m.end(): m.end() + 40]) if w.lower() not in _STOP]
        before = [w for w in re.findall(r"[A-Za-z]+", text[max(0, m.start() - 40): m.start()]) if w.lower() not in _STOP]
        word = (after[:1] or before[-1:] or [""])[0].lower()
        if word:
            out[amount] = word
    return out


def _amount_binding(a: str, b: str) -> str | None:
    ba, bb = _money_bindings(a), _money_bindings(b)
    if len(ba) < 2 or set(ba) != set(bb):
        return None
    by_word_a = {w: x for x, w in ba.items()}
    by_word_b = {w: x for x, w in bb.items()}
    for w in by_word_a.keys() & by_word_b.keys():
        if by_word_a[w] != by_word_b[w]:
            return f"amounts bound differently: {by_word_a[w]} {w} vs {by_word_b[w]} {w}"
    return None


def _added_charge(a: str, b: str) -> str | None:
    ma = {re.sub(r"[^\d.]", "", m.group(0)) for m in _MONEY.finditer(a)}
    mb = {re.sub(r"[^\d.]", "", m.group(0)) for m in _MONEY.finditer(b)}
    for x, y, mx, my in ((a, b, ma, mb), (b, a, mb, ma)):
        if mx and my and my < mx and _CHARGE.search(x) and not _CHARGE.search(y):
            return f"added charge: {', '.join(sorted(mx - my))} in one answer only"
    return None


def commitment_conflicts(a: str, b: str) -> list[tuple[str, str]]:
    """(kind, reason) for each slot both answers fill with disjoint values (module docstring)."""
    out: list[tuple[str, str]] = []
    ca, cb = _channels(a), _channels(b)
    if ca and cb and ca.isdisjoint(cb):
        out.append(("channel", f"different channel: {', '.join(sorted(ca))} vs {', '.join(sorted(cb))}"))
    pa, pb = _periods(a), _periods(b)
    if pa and pb and pa.isdisjoint(pb):
        out.append(("period", f"different period: {', '.join(sorted(pa))} vs {', '.join(sorted(pb))}"))
    shared = len(_content(a) & _content(b)) >= 1
    ta, tb = _timing(a), _timing(b)
    if shared and ta and tb and ta != tb:
        out.append(("timing", f"different timing: {ta} vs {tb}"))
    ga, gb = _agent(a), _agent(b)
    if shared and ga and gb and ga != gb:
        out.append(("agent", f"different agent: {ga} act vs {gb} act"))
    for check in (_amount_binding, _added_charge):
        reason = check(a, b)
        if reason:
            out.append(("amounts", reason))
    return out
