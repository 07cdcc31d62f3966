"""One spelling for values that English writes several ways, before the divergence checks compare.

Invariant: two answers that state the same value in different conventional formats
compare equal after `canonical()`; nothing else about the text changes (it is not used
for embeddings, and the reasons a check gives quote the canonical text). Rewritten:

* street-type abbreviations after a capitalised name: "Baker St" -> "Baker Street",
  "Elm Rd." -> "Elm Road" (Ave, Ln, Sq, Blvd, Pl, Cres, Gdns, Pk, Hwy likewise);
* "no." / "No." / "nr" before a number -> "number" ("at no. 14" is not a negation and does
  not end the sentence);
* UK and US telephone prefixes: "+44 20 7946 0958" / "+44 (0)20..." -> "020 7946 0958",
  "+1 (212) 555-0100" / "(212) 555-0100" -> "212 555-0100";
* a US number's trunk prefix without a plus: "1-800-555-0142" -> "800-555-0142";
* unit designators before a number: "Ste. 210" -> "Suite 210", "Apt 4" -> "Apartment 4";
* storage units: "1000 gigabytes" -> "1000 GB" (MB, TB likewise);
* a decimal comma in money: "€54,90" / "54,90 €" -> "€54.90" / "54.90 €";
* European grouping in money: "1.450,00 EUR" -> "1450.00 EUR", "€2.400" -> "€2400";
* an IBAN written in groups: "IE29 AIBK 9311 5212 3456 78" -> "IE29AIBK93115212345678";
* a code written in groups of capitals and digits: "7HZ 442 891" -> "7HZ442891", "QQ 12 34 56 C" -> "QQ123456C";
* money grouped by spaces, as South Africa and much of Europe write it, and a rand sign spaced
  from its figure: "R12 900" / "R 12,900" -> "R12900", "R3 412,00" -> "R3412.00", "€1 200" -> "€1200";
* a quantity grouped by spaces before its unit: "30 000 km" -> "30000 km" (only before a unit,
  so telephone numbers and codes in groups are left alone);
* thousands separators inside a number: "12,345" -> "12345" (money keeps its symbol);
* a fraction as a discount: "one fifth off" -> "20% off", "half price" -> "50% price".

English only; pure Python.
"""

from __future__ import annotations

import re

__all__ = ["canonical"]

_STREET = {"st": "Street", "rd": "Road", "ave": "Avenue", "av": "Avenue", "ln": "Lane", "sq": "Square",
           "blvd": "Boulevard", "pl": "Place", "cres": "Crescent", "gdns": "Gardens", "pk": "Park", "hwy": "Highway"}
# the abbreviation's dot is dropped inside a sentence ("Elm Rd. next to"), kept at its end
_STREET_RX = re.compile(r"\b([A-Z][a-z]+)\s+(" + "|".join(_STREET) + r")\b(?:\.(?=\s+[a-z0-9]|,))?(?=[\s,;.)]|$)", re.I)
_NUMBER_RX = re.compile(r"\b(?:no|nr|num)\.\s?(?=\d)|(?<![\w#])#(?=\d)", re.I)
_UK_PHONE = re.compile(r"\+\s?44\s?(?:\(0\)\s?)?(?=\d)")
_US_PHONE = re.compile(r"(?:\+\s?1[\s.-]?)?\((\d{3})\)\s?|\+\s?1[\s.-](?=\d{3}[\s.-]\d{3}[\s.-]\d{4})")
_US_TRUNK = re.compile(r"(?<![\d+])\b1[\s.-](?=\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b)")
_UNIT_DESIGNATOR = {"ste": "Suite", "apt": "Apartment", "bldg": "Building", "fl": "Floor", "rm": "Room"}
_UNIT_RX = re.compile(r"\b(" + "|".join(_UNIT_DESIGNATOR) + r")\.?\s?(?=\d)", re.I)
_STORAGE_RX = re.compile(r"(?<=\d)\s?(?:(giga|mega|tera)bytes?|(g|m|t)b)\b", re.I)
_DECIMAL_COMMA = re.compile(r"(?<=[£$€])(\d{1,3}),(\d{2})(?!\d)|(?<![\d,.])(\d{1,3}),(\d{2})(?=\s?(?:€|eur\b|euros?\b))",
                            re.I)
_EURO_GROUPED = re.compile(r"(?<![\d.,])(\d{1,3}(?:\.\d{3})+),(\d{2})(?!\d)(?=\s?(?:€|eur\b|euros?\b))|"
                           r"(?<=€)(\d{1,3}(?:\.\d{3})+)(?:,(\d{2}))?(?![\d.,]?\d)", re.I)
_IBAN = re.compile(r"\b([A-Z]{2}\d{2})((?: ?[A-Z0-9]{4}){2,7})(?: ?([A-Z0-9]{1,3}))?\b")


# the first group holds a digit or is a short prefix ("QQ 12 34 56 C"), so a word such as "IBAN" never joins
_CODE_GROUPS = re.compile(r"\b(?=[A-Z0-9 ]*[A-Z])(?=[A-Z0-9 ]*\d)(?:[A-Z]{1,3}|[A-Z0-9]*\d[A-Z0-9]*)(?: [A-Z0-9]{1,4}){2,5}\b")


def _euro(m: re.Match[str]) -> str:
    whole = (m.group(1) or m.group(3)).replace(".", "")
    cents = m.group(2) or m.group(4)
    return f"{whole}.{cents}" if cents else whole


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# a currency sign, then a figure grouped by spaces (or "R " before a grouped figure), an optional decimal comma
_SPACE_GROUPED = re.compile(r"(?<![\w])([£$€₹]|R)\s?(\d{1,3}(?:[ \u00a0]\d{3})+|\d{1,3}(?:,\d{3})+)(?:,(\d{2}))?(?![\d,])")


def _space_grouped(m: re.Match[str]) -> str:
    whole = re.sub(r"[ \u00a0,]", "", m.group(2))
    return f"{m.group(1)}{whole}.{m.group(3)}" if m.group(3) else f"{m.group(1)}{whole}"
# a figure grouped by spaces (or thin / no-break spaces) directly before a unit of measure
_UNIT_GROUPED = re.compile(r"(?<![\w.,])(\d{1,3}(?:[ \u00a0\u202f]\d{3})+)(?=\s?(?:km|kms|kilometres|kilometers|miles|kwh|"
                           r"litres|liters|points|steps|words|users|units|kg|mb|gb)\b)", re.I)
_FRACTIONS = {"half": "50%", "quarter": "25%", "fifth": "20%", "tenth": "10%"}
_FRACTION_RX = re.compile(r"\b(?:one|a) (quarter|fifth|tenth) (?=off\b|discount\b|of the (?:price|cost|bill)\b)|"
                          r"\b(half) (?=price\b|off\b)", re.I)


def _street(m: re.Match[str]) -> str:
    name, abbr = m.group(1), m.group(2)
    if not (name[0].isupper() and abbr[0].isupper()):
        return m.group(0)
    return f"{name} {_STREET[abbr.lower()]}"


def canonical(text: str) -> str:
    """The text with the formats above rewritten to one spelling (see the module docstring)."""
    t = _STREET_RX.sub(_street, text)
    t = _NUMBER_RX.sub("number ", t)
    t = _UNIT_RX.sub(lambda m: _UNIT_DESIGNATOR[m.group(1).lower()] + " ", t)
    t = _STORAGE_RX.sub(lambda m: " " + (m.group(1) or m.group(2))[0].upper() + "B", t)
    t = _IBAN.sub(lambda m: (m.group(1) + m.group(2) + (m.group(3) or "")).replace(" ", ""), t)
    t = _CODE_GROUPS.sub(lambda m: m.group(0).replace(" ", "") if len(m.group(0).replace(" ", "")) >= 6 else m.group(0), t)
    t = _SPACE_GROUPED.sub(_space_grouped, t)
    t = _UNIT_GROUPED.sub(lambda m: re.sub(r"[ \u00a0\u202f]", "", m.group(1)), t)
    t = _EURO_GROUPED.sub(_euro, t)
    t = _DECIMAL_COMMA.sub(lambda m: f"{m.group(1) or m.group(3)}.{m.group(2) or m.group(4)}", t)
    t = _US_TRUNK.sub("", t)
    t = _UK_PHONE.sub("0", t)
    t = _US_PHONE.sub(lambda m: f"{m.group(1)} " if m.group(1) else "", t)
    t = _FRACTION_RX.sub(lambda m: _FRACTIONS[(m.group(1) or m.group(2)).lower()] + " ", t)
    return _THOUSANDS.sub("", t)
