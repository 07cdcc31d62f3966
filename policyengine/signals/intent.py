"""Intent behind a lexicon's topic: does the text *mean* it, not only use its words?

A lexicon finds words ("sue", "solicitor"); an intent model decides whether the writer
threatens, pursues or is preparing what the lexicon is about. Shipped topics are listed
in `INTENT_TOPICS` (today: `litigation`); a lexicon of that name uses the topic's model.

Method (the way sentiment trains its classifier): a logistic regression over the
sentence embedding (all-MiniLM-L6-v2) plus a few cues (negation before a topic word, a
third party as the subject, first person, a future/threat modal, a regulator instead of
a court), trained on `policyengine/signals/data/intent_<topic>.jsonl`, which ships with
the package. The text is split into sentences, and only sentences that contain a broad
topic term (an inflection- and typo-tolerant list, much wider than a policy's lexicon:
"counsel", "proceedings", "arbitration", "small claims", "letter before action"...) are
embedded. A text with no topic term has probability 0 and costs no embedding. The
text's probability is the maximum over those sentences (and the whole text when it is
short), and the sentence that gave it is kept as the evidence.

Guarantees: `probability()` is in [0, 1]; it is 0.0 exactly when no topic term occurs;
the model trains once per instance on first use; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from policyengine.signals.embedder import Embedder, LazyEmbedder
from policyengine.signals.fitted import fitted, predict_proba
from policyengine.signals.mentions import LexiconMatcher

if TYPE_CHECKING:  # numpy is part of the embeddings extra
    import numpy as np

__all__ = ["INTENT_TOPICS", "IntentModel", "IntentResult", "has_intent_model", "intent_training_set"]

# topic -> the broad terms that gate which sentences the model reads (matched with the
# lexicon matcher: word boundaries, inflections, names, typos on long words).
INTENT_TOPICS: dict[str, tuple[str, ...]] = {
    "litigation": (
        "sue", "lawsuit", "law suit", "lawyer", "legal", "legally", "solicitor", "attorney", "counsel", "barrister",
        "court", "courts", "judge", "judgment", "judgement", "tribunal", "proceedings", "litigation", "litigate",
        "arbitration", "class action", "group action", "group claim", "group litigation", "small claims",
        "small claim", "claim form", "money claim", "letter before", "pre-action", "redress", "remedies",
        "without prejudice", "issue a claim", "file suit", "defendant", "cort", "cout", "lawer", "lawyr",
        "sueing", "solicitr", "atturney", "llp", "act on my behalf", "act for me", "acting for me",
        "legal representation", "collective action", "clams", "law firm", "law firms", "damages", "sew you", "sew u",
        "sue u", "sue ya", "soo you", "sewing you", "suin", "lawya", "lawyah", "solisitor", "sollicitor", "law",
        "atty", "attys", "instructed a firm", "retained a firm", "hired a firm", "engaged a firm", "a firm",
        "this office represents", "represents", "representing", "my client", "our client", "judicial review",
        "legal route", "legal thing", "legal advice", "demand letter", "legal team", "arbitrate", "arbitrator",
        "letter of claim", "issued and served", "served the claim", "umpire", "plaintiff", "process server",
        "breach of contract", "district judge", "before filing", "no win no fee", "no-win-no-fee", "counterclaim",
        "defend any claim", "defend the claim", "mediation", "client account", "served with",
        "settlement agreement",
        # bodies that decide a dispute by other names, and filing a claim without "court"
        "consumer forum", "consumer court", "consumer commission", "tenancies board", "tenancy board",
        "disputes tribunal", "appeals commission", "ncat", "vcat", "qcat", "notice of appeal", "hearing date",
        "claim against",  # not "file a claim": an insurance claim is filed too
    ),
}

# Single gate words long enough to be recognised by their consonants when a vowel is
# misspelt ("lawyar", "atturney", "solicetor"): same first letter, same consonant skeleton.
_SKELETON_MIN = 6
_VOWELS = frozenset("aeiouy")
_TOKEN = re.compile(r"[A-Za-z]+")
_SEW = re.compile(r"\b(s)(ew)(?=\s+(?:you|u|ya|them|your|the|this|every)\b)", re.I)


def _skeleton(word: str) -> str:
    """First letter, then the consonants, doubled letters once: "lawyar" -> "lwr"."""
    w = word.lower()
    out = [w[0]]
    for c in w[1:]:
        if c not in _VOWELS and c != out[-1]:
            out.append(c)
    return "".join(out)


# the correctly spelt topic words a misspelling is rewritten to
RESPELL_WORDS: dict[str, tuple[str, ...]] = {
    "litigation": ("lawyer", "attorney", "solicitor", "counsel", "barrister", "lawsuit", "tribunal", "litigation",
                   "arbitration", "proceedings", "judgment"),
}


def _skeleton_targets(words: tuple[str, ...]) -> dict[tuple[str, int], str]:
    return {(_skeleton(t), len(t)): t for t in words if len(t) >= _SKELETON_MIN}


def respell(text: str, targets: dict[tuple[str, int], str]) -> str:
    """The text with vowel-misspelt topic words written as the topic word ("lawyar" ->
    "lawyer", "sew you" -> "sue you"). Length-preserving, so offsets stay valid."""
    def fix(m: re.Match[str]) -> str:
        w = m.group(0)
        t = targets.get((_skeleton(w), len(w))) if len(w) >= _SKELETON_MIN else None
        if t is None or t == w.lower():
            return w
        return t.upper() if w.isupper() else t.capitalize() if w[0].isupper() else t

    text = _SEW.sub(lambda m: m.group(1) + ("UE" if m.group(2).isupper() else "ue"), text)
    return _TOKEN.sub(fix, text)

_SENT = re.compile(r"[^.!?\n;]+[.!?;]*")
_NEG = re.compile(r"\b(?:not|never|no|won'?t|don'?t|isn'?t|aren'?t|wouldn'?t|can'?t|cannot|nobody|no one|"
                  r"haven'?t|without|nor|neither|rather not|no need|no intention|no plans?)\b|n't\b", re.I)
_FIRST = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|we|we'll|we've|we're|my|our|us|me)\b", re.I)
_MODAL = re.compile(r"\b(?:will|shall|going to|gonna|intend|'ll|about to|next step|expect|until|unless|or else|"
                    r"failing|otherwise|if)\b|'ll\b", re.I)
_REGULATOR = re.compile(r"\b(?:ombudsman|trading standards|regulator|ofcom|ofgem|ofwat|fca|cfpb|ftc|fcc|bbb|attorney general|"
                        r"better business bureau|chargeback|citizens advice|cqc|commissioner|one-star review|the press)\b",
                        re.I)


def has_intent_model(lexicon: str) -> bool:
    """Does a shipped intent model exist for the lexicon's name (its topic)?"""
    return lexicon in INTENT_TOPICS


def intent_training_set(topic: str) -> list[tuple[str, bool]]:
    """The labelled sentences the topic's model trains on (shipped with the package)."""
    if topic not in INTENT_TOPICS:
        raise KeyError(f"no intent model for {topic!r}; topics: {', '.join(sorted(INTENT_TOPICS))}")
    raw = resources.files("policyengine.signals").joinpath(f"data/intent_{topic}.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [(r["text"], bool(r["label"])) for r in rows]


@dataclass(frozen=True)
class IntentResult:
    """The probability that the text means the topic, and the sentence that carried it."""

    topic: str
    probability: float
    sentence: str | None = None  # None when no topic term occurs
    start: int = 0
    end: int = 0


_CLAUSE = re.compile(r"[,;:]|\b(?:if|unless|but|until|or|should|because|so|otherwise)\b", re.I)
# subject pronouns that start a new clause after a negator ("not ... you" is an object)
_PRONOUN = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|we|we'll|we're|we've|he|she|they)\b", re.I)
# people with legal matters of their own: the writer's relations and other parties named by role
_RELATION_WORDS = (r"(?:brother|sister|son|daughter|mum|mom|mother|father|dad|husband|wife|partner|friend|neighbou?r|"
                   r"colleague|boss|employer|tenant|landlord|aunt|uncle|flatmate|nephew|niece|cousin)")
_RELATION = re.compile(rf"\b(?:{_RELATION_WORDS}|couple|family|people|someone|somebody|next door|client|company's|firm's|"
                       r"estate's|executor)\b", re.I)
_RECIPIENT = r"you|your|the\s+(?:company|bank|clinic|airline|hotel|firm|store|shop|provider|practice|business)"
_AGAINST = re.compile(rf"\bagainst\s+(?:{_RECIPIENT})\b|\byou(?:'ll| will)\s+(?:be\s+)?(?:hear|hearing|receive|"
                      rf"be\s+served)\b|\b(?:sue|suing|sued)\s+(?:{_RECIPIENT})\b|"
                      r"\b(?:take|takes|taking|took|taken)\s+(?:you|your\s+\w+)\s+to\s+(?:court|tribunal|small claims|arbitration)\b",
                      re.I)
# roles a writer can hold in someone else's legal matter ("I'm a paralegal", "I'm the executor")
_ROLES = (r"lawyer|solicitor|attorney|paralegal|barrister|journalist|witness|executor|receiver|deputy|reporter|"
          r"consultant|student|judge|administrator|trustee|liquidator")
_COURT_APPOINTED = r"\bcourt[- ]appointed\b|\bappointed by the court\b"
_ROLE_SELF = re.compile(rf"\b(?:i'?m|i am|we'?re|we are)\s+an?\s+(?:\w+\s+){{0,2}}?(?:{_ROLES}|firm)\b|"
                        rf"\b(?:estate|probate|jury|witness)\b|{_COURT_APPOINTED}", re.I)


# the legal action is aimed at someone else's party ("suing their builder", "taking her landlord to court")
_OTHERS_TARGET = re.compile(r"\b(?:su(?:e|es|ing|ed)|tak(?:e|es|ing)|took)\s+(?:their|his|her)\s+\w+|"
                            r"\b(?:pursue|sue|suing|take|taking)\s+(?:my|our)\s+(?:builder|landlord|tenant|employer|"
                            r"neighbou?r|ex|contractor|garage|dentist)\b", re.I)
# a relation's own matter ("my son's case") or a relation as the one acting ("your tenant has
# commenced proceedings", "my neighbour is suing"): someone else's, even when the writer acts in
# the same sentence
_RELATIONS_MATTER = re.compile(rf"\b(?:my|our|his|her|their|your)\s+{_RELATION_WORDS}['\u2019]s\s+(?:\w+\s+)?(?:case|claim|"
                            r"hearing|trial|lawsuit|court|proceedings|solicitors?|lawyers?|attorneys?)\b|"
                            rf"\b(?:my|our|his|her|their|your)\s+{_RELATION_WORDS}\s+(?:has|have|had|is|was|are)\s+"
                            r"(?:\w+\s+)?(?:commenced|started|issued|filed|brought|lodged|begun|suing|taking)\b(?!\s+(?:you|your)\b)", re.I)


# the action is between other parties, whoever writes about it ("a class action against another
# retailer", "the case filed by other customers")
_ELSEWHERE = re.compile(r"\bagainst (?:another|other|a different) (?:\w+ )?(?:retailer|company|bank|firm|airline|provider|"
                        r"business|brand|store|shop|insurer)s?\b|\b(?:filed|brought|started) by other (?:customers|users|"
                        r"people|passengers)\b|\b(?:relates?|refers?) to (?:a |another )?(?:different|other) (?:company|firm|"
                        r"business|provider|retailer|bank|insurer)\b", re.I)


def _clause(before: str) -> str:
    cut = list(_CLAUSE.finditer(before))
    return before[cut[-1].end():] if cut else before


_RELUCTANT = re.compile(r"\b(?:do(?:n'?t| not)|would(?:n'?t| not)|'?d rather not|rather not|prefer not|hate to|"
                        r"no wish to|nobody wants?|no one wants?|not want)\b(?:\s+\w+){0,3}?\s*(?:to|a|an|the|this)?\b",
                        re.I)
_DESPITE = re.compile(r"\b(?:but|if|unless|no (?:choice|option)|leaving me|heading|ready|will|otherwise)\b", re.I)


def _negated(before: str, after: str = "") -> bool:
    """A negator governs the topic word: within the eight words before it, in the same
    clause, with no new subject ("I'm", "we") between the negator and the word.
    Reluctance ("I'd rather not involve the lawyers") is negation unless the sentence goes
    on to a condition or a resolve ("... but I will if I have to"): see `_DESPITE`."""
    cut = list(_CLAUSE.finditer(before))
    if cut and cut[-1].group(0).lower() in ("if", "unless", "until"):
        return False  # the negation is in the condition ("if the data isn't restored our attorneys...")
    clause = _clause(before)
    if _RELUCTANT.search(clause):
        return not _DESPITE.search(after)
    words = clause.split()[-8:]
    last = max((i for i, w in enumerate(words) if _NEG.search(w)), default=None)
    if last is None:
        return False
    return not any(_PRONOUN.fullmatch(w.strip(".,!?\"'").lower()) for w in words[last + 1:])


def _third_party(sentence: str, before: str) -> bool:
    """Someone else's legal matter: a relation noun before the topic word in its clause
    with no first-person subject after it, or the writer naming a role ("I'm a paralegal")."""
    if _ROLE_SELF.search(sentence) or _OTHERS_TARGET.search(sentence):
        return True
    clause = _clause(before)
    found = list(_RELATION.finditer(clause))
    m = found[-1] if found else None
    return m is not None and not re.search(r"\b(?:i|i'm|i'll|i've|we|we'll|we've)\b", clause[m.end():], re.I)


# the legal action is aimed at the writer, or is the recipient's own ("the letter says legal
# action may be taken against me", "your debt collectors' solicitors")
_AT_WRITER = re.compile(r"\bagainst (?:me|us|myself|my (?:account|name))\b|\b(?:sue|suing|sued|take|taking|took) (?:me|us)\b|"
                        r"\b(?:threaten\w*|the letter says|letter (?:said|says|states))\b|"
                        r"\byour (?:\w+ )?(?:solicitors?|lawyers?|attorneys?|debt collectors?|collections? agency)\b", re.I)
# a legal matter of the writer's that is not a dispute with the recipient, or a law word
# in another sense ("my attorney needs it for my divorce", "power of attorney", "food court")
# matters that, named anywhere in a short text, make all of its legal words another matter
_CONTEXT_TERMS = r"mortgage offer|remortgag\w*|conveyanc\w*|(?:separate|unrelated) (?:matter|case|lawsuit|proceedings)"
_OTHER_MATTER = re.compile(
    r"\b(?:divorce|custody|probate|estate|house (?:sale|purchase|move)|buying a (?:house|flat|home)|"
    rf"{_CONTEXT_TERMS}|(?:separate|unrelated) claim|"
    r"penalty charge notice|parking (?:fine|ticket|appeal)|traffic (?:tribunal|court)|covers? (?:my |the )?legal expenses|"
    r"immigration|visa|adoption|power of attorney|lasting power|guardian\w*|malpractice|personal injury|"
    r"the other (?:driver|party|driver's \w+)|legal (?:name|age|tender|guardian|"
    r"entity|sector|cover|expenses cover|expenses['\u2019]? (?:add-on|insurance|policy))|legally (?:blind|required)|food court|tennis court|court (?:road|street|"
    r"lane)|jury service|court reporter|law school|law degree|studying law|by law|the law (?:says|requires))\b",
    re.I)


# a context that makes every legal word in a short text another matter, whichever sentence it is in
# ("Your mortgage offer has been issued! Your solicitor will receive a copy today.")
_CONTEXT_OTHER = re.compile(rf"\b(?:{_CONTEXT_TERMS})\b", re.I)
# a gate word in another sense, recognised by the words around it: a regulator's name ("the state
# Attorney General"), damage to a thing rather than damages claimed ("hail damage to my roof")
_OTHER_SENSE = re.compile(
    r"\battorney general\b|\b(?:hail|storm|flood|water|fire|smoke|frost|accidental|impact|transit|cosmetic|wind) damage\b|"
    r"\bdamage to (?:my|the|our|your) (?:car|roof|home|house|property|parcel|item|phone|van|bike|luggage|suitcase|ceiling)\b",
    re.I)


# the writer considered legal action and dropped it, or only imagines it ("I was all set to
# ring a lawyer, but you refunded me", "if this were a bigger purchase I'd be talking to a lawyer")
_ABANDONED = re.compile(
    r"\b(?:was (?:all )?(?:set|about|going|ready|this close) to|had been (?:going|about) to|almost|nearly|"
    r"(?:did|had) (?:\w+ )?consider(?:ed)?|decided (?:against|not to)|withdraw (?:my|the|our) (?:earlier |previous )?threat|"
    r"(?:you'?re|you are|it'?s|it is|it was|it wasn'?t) not worth the|"
    r"(?:thought|think|thinking) about|considered|was tempted to|toyed with (?:the idea of )?|"
    r"(?:keep|kept) asking (?:if|whether)|the answer is no|(?:haven'?t|have not|not yet) decided|"
    r"(?:made|makes) me wonder|wonder(?:ing)? what would|documentary|"
    r"no need (?:now|for (?:that|it|any of that))|(?:that's|that is|it's|it is|seems?) (?:a bit )?(?:over the top|overkill|"
    r"excessive|too much)|if (?:this|it|that) (?:were|was|had been) (?:a )?(?:bigger|more|worse|larger)|"
    r"(?:reckons|thinks|says|said|told me|suggested) (?:that )?(?:i|we) (?:should|could|ought)|"
    r"i'?d (?:probably|definitely|have) (?:be|been)|people have|read (?:somewhere|online)|heard (?:that )?(?:people|others)|"
    r"if (?:i|we)(?:'m| am| are| were| was)? (?:ever )?(?:get |got |am |was |were )?(?:sued|taken to court)|"
    r"forget (?:the|about the|about) (?:lawyers?|solicitors?|courts?|legal)|(?:don'?t|do not) have a case|"
    r"(?:won'?t|will not|not going to) (?:be )?tak(?:e|ing) (?:it|this|things|the matter) (?:any )?further|"
    r"(?:have |'ve )?withdrawn (?:my|the|our) (?:\w+ ){0,2}(?:claim|application|case|proceedings))\b",
    re.I)
# "court" and "judge" in sport, shows and shopping
_SPORT = re.compile(r"\b(?:tennis|squash|badminton|basketball|netball|volleyball|padel|club|clay|grass|hard|food|moot)[- ]courts?\b|"
                    r"\bcourt (?:play|shoes?|surface|booking|hire|time)\b|\b(?:dog|cat|flower|baking|talent) show\b|"
                    r"\bjudg(?:e|es|ed|ing) (?:at|of|on) the (?:show|competition|contest)\b", re.I)


# after a negated topic word, a resolve to act anyway ("..., but I will if I have to")
_RESOLVE = re.compile(r"\b(?:but|if|unless|otherwise|until)\b[^.!?]*?(?:\b(?:will|shall|going to|gonna|ready|prepared|"
                      r"have to|next|then)\b|'ll\b)|\bno (?:choice|option)\b|\bleaving me\b", re.I)
_CONTEXT_CHARS = 600  # a short message: its context governs every sentence in it
NEGATED_CAP = 0.2  # the most a window whose topic words are all negated, with no resolve after them, can score


def negated_without_resolve(sentence: str, hit_starts: list[int]) -> bool:
    """Every topic word of the window is negated ("No lawyers, I'm not going to court over
    a £9 toaster") and nothing after the last one resolves to act anyway: a negated threat,
    whatever it embeds like."""
    if not hit_starts:
        return False
    if not all(_negated(sentence[:h], sentence[h:]) for h in hit_starts):
        return False
    return not _RESOLVE.search(sentence[max(hit_starts):])


def not_a_dispute(sentence: str, hit_starts: list[int]) -> bool:
    """The window's legal words are not the writer's dispute with the recipient: each one part
    of a regulator's name or of damage to a thing (`_OTHER_SENSE`), a plan dropped or only
    imagined (`_ABANDONED`), court or judge in another sense (`_SPORT`), the writer's own
    unrelated legal matter (`_OTHER_MATTER`), an action between other parties (`_ELSEWHERE`) or a
    relation's own (`_RELATIONS_MATTER`),
    or every topic word in someone else's clause (`_third_party`) with nothing aimed at the
    recipient (`_AGAINST`)."""
    if not hit_starts or _AGAINST.search(sentence):
        return False
    named = [m.span() for m in _OTHER_SENSE.finditer(sentence)]
    if named and all(any(lo <= h < hi for lo, hi in named) for h in hit_starts):
        return True  # every legal word is in another sense: a regulator's name, damage to a thing
    if _ABANDONED.search(sentence) and not _RESOLVE.search(sentence[max(hit_starts):]):
        return True
    if _SPORT.search(sentence) or _OTHER_MATTER.search(sentence):
        return True
    if _ROLE.search(sentence):
        return not _DISPUTE.search(sentence)
    if _ELSEWHERE.search(sentence) or _RELATIONS_MATTER.search(sentence):
        return True
    if _WRITER_ACTS.search(sentence):
        return False
    return all(_third_party(sentence, sentence[:h]) for h in hit_starts)


# the writer names their own legal role ("I'm a litigation paralegal", "the court-appointed receiver")
_ROLE = re.compile(rf"\b(?:i'?m|i am|we'?re|we are)\s+(?:an?|the)\s+(?:[\w-]+\s+){{0,2}}?(?:{_ROLES})\b|"
                   rf"{_COURT_APPOINTED}|\bwe (?:run|are|own) an? (?:[\w-]+\s+){{0,3}}(?:firm|practice|company|business)\b",
                   re.I)
# the writer is the subject of the sentence, or the recipient will hear from someone: not a
# bystander's matter whoever else is named ("My son's a barrister ... He'll be writing to you")
_WRITER_ACTS = re.compile(r"\b(?:i|i'm|i've|i'll|i'd|we|we're|we've|we'll|we'd)\b|^were\b|\bwere taking\b|"
                          r"\b(?:writing|write) to (?:you|u)\b|\bin touch with (?:you|u)\b|\bhear(?:ing)? from\b|"
                          r"\byou owe (?:us|me)\b|\b(?:has|have) (?:joined|signed (?:up|on)|instructed|retained|filed)\b",
                          re.I)
# a dispute stated outright, whoever the writer says they are ("I'm a paralegal ... what you did breached it")
_DISPUTE = re.compile(r"\b(?:breach(?:ed|es)?|you owe (?:us|me)|owed to (?:us|me)|unlawful(?:ly)?|liable|negligen\w*|"
                      r"claim form|drafted a claim|(?:file|filing|issue|issuing) (?:a |the )?claim)\b", re.I)


def _cues(sentence: str, gate_hit_start: int) -> list[float]:
    before = sentence[:gate_hit_start]
    return [
        float(_negated(before, sentence[gate_hit_start:])),
        float(_third_party(sentence, before)),
        float(bool(_FIRST.search(sentence))),
        float(bool(_MODAL.search(sentence))),
        float(bool(_AGAINST.search(sentence))),
        float(bool(_REGULATOR.search(sentence))),
        float("?" in sentence),
        float(bool(_RELUCTANT.search(before)) and bool(_DESPITE.search(sentence[gate_hit_start:]))),
        float(bool(_AT_WRITER.search(sentence))),
        float(bool(_OTHER_MATTER.search(sentence) or _SPORT.search(sentence))),
        float(bool(_ABANDONED.search(sentence))),
    ]


class IntentModel(LazyEmbedder):
    """One topic's intent classifier. Construction is free; it trains on first use."""

    def __init__(self, topic: str = "litigation", embedder: Embedder | None = None, *,
                 regularisation: float = 32.0, cue_weight: float = 1.0, threshold: float = 0.3,
                 training: list[tuple[str, bool]] | None = None) -> None:
        if topic not in INTENT_TOPICS:
            raise KeyError(f"no intent model for {topic!r}; topics: {', '.join(sorted(INTENT_TOPICS))}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"intent threshold must be in (0, 1), got {threshold!r}")
        self.topic = topic
        # probability at or above which the text means the topic; 0.3 was chosen on the
        # tune split (tests/data/signals_tune), C and the cue weight likewise
        self.threshold = threshold
        self._embedder = embedder
        self.regularisation = regularisation
        self.cue_weight = cue_weight
        self._training = training
        self._terms = list(INTENT_TOPICS[topic])
        self._respell = _skeleton_targets(RESPELL_WORDS.get(topic, ()))
        self._gate = LexiconMatcher()
        self._clf = None
        self._lock = threading.Lock()

    # -- windows -------------------------------------------------------------------

    def windows(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, first topic hit offset within the window) for each sentence with a
        topic term, plus the whole text when it is short (<= 3 sentences) and has one.
        `text` is expected respelt (`respell`)."""
        hits = self._gate.find_all(text, self.topic, self._terms)
        if not hits:
            return []
        out: list[tuple[int, int, int]] = []
        spans = [(m.start(), m.end()) for m in _SENT.finditer(text) if m.group(0).strip()]
        for s, e in spans:
            inside = [h for h in hits if s <= h.start < e]
            if inside:
                out.append((s, e, inside[0].start - s))
        if 1 < len(spans) <= 3:
            out.append((0, len(text), hits[0].start))
        return out

    def _features(self, texts: list[str], offsets: list[int]) -> np.ndarray:
        import numpy as np

        emb = self.embedder.embed(texts)
        cues = np.array([_cues(t, o) for t, o in zip(texts, offsets, strict=True)], dtype=np.float32)
        return np.hstack([emb, cues * self.cue_weight])

    def fit(self, rows: list[tuple[str, bool]] | None = None) -> IntentModel:
        """Train (or retrain) on labelled texts; called automatically on first use."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        rows = rows if rows is not None else (self._training or intent_training_set(self.topic))
        texts, offs = [], []
        for t, _ in rows:
            t = respell(t, self._respell)
            hits = self._gate.find_all(t, self.topic, self._terms)
            texts.append(t)
            offs.append(hits[0].start if hits else len(t))
        y = np.array([int(lab) for _, lab in rows])
        params = {"C": self.regularisation, "max_iter": 3000, "class_weight": "balanced"}

        def fit() -> LogisticRegression:
            return LogisticRegression(**params).fit(self._features(texts, offs), y)

        self._clf = fitted(f"intent-{self.topic}", params, list(zip(texts, offs, y.tolist(), strict=True)),
                           self.embedder, fit, key={"cue_weight": self.cue_weight})
        return self

    def fingerprint(self) -> str:
        """A hash of the fitted classifier (training it first if needed): what a model built on
        this one's probabilities keys its own cached fit on."""
        import numpy as np

        clf = self._ensure()
        return hashlib.sha256(np.asarray(clf.coef_).tobytes() + np.asarray(clf.intercept_).tobytes()).hexdigest()

    def _ensure(self):
        if self._clf is None:
            with self._lock:
                if self._clf is None:
                    self.fit()
        return self._clf

    # -- scoring -------------------------------------------------------------------

    def results(self, texts: list[str]) -> list[IntentResult]:
        """One IntentResult per text; texts without a topic term cost no embedding. A window is
        capped at `NEGATED_CAP` when its topic words are negated without resolve, are not a
        dispute (`not_a_dispute`), or sit in a short text whose context is another matter
        (`_CONTEXT_OTHER`: a mortgage offer, "an unrelated case")."""
        jobs: list[tuple[int, int, int, int]] = []  # text index, start, end, offset
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"intent needs text, got {type(t).__name__}")
        texts = [respell(t, self._respell) for t in texts]
        for i, t in enumerate(texts):
            jobs += [(i, s, e, o) for s, e, o in self.windows(t)]
        out = [IntentResult(self.topic, 0.0) for _ in texts]
        if not jobs:
            return out
        clf = self._ensure()
        wins = [texts[i][s:e].strip() or texts[i][s:e] for i, s, e, _ in jobs]
        offs = [max(0, o - (len(texts[i][s:e]) - len(texts[i][s:e].lstrip()))) for i, s, e, o in jobs]
        proba = predict_proba(clf, self._features(wins, offs))[:, list(clf.classes_).index(1)]
        other = [bool(_CONTEXT_OTHER.search(t)) and not _AGAINST.search(t) and not _DISPUTE.search(t)
                 and len(t) <= _CONTEXT_CHARS for t in texts]
        for k, w in enumerate(wins):
            starts = [h.start for h in self._gate.find_all(w, self.topic, self._terms)]
            if other[jobs[k][0]] or negated_without_resolve(w, starts) or not_a_dispute(w, starts):
                proba[k] = min(proba[k], NEGATED_CAP)
        for (i, s, e, _), p, w in zip(jobs, proba, wins, strict=True):
            if out[i].sentence is None or p > out[i].probability:
                out[i] = IntentResult(self.topic, round(float(p), 4), w, s, e)
        return out

    def result(self, text: str) -> IntentResult:
        return self.results([text])[0]

    def probability(self, text: str) -> float:
        return self.result(text).probability

    def means(self, text: str) -> bool:
        """probability(text) >= threshold."""
        return self.probability(text) >= self.threshold
