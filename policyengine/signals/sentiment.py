"""Customer sentiment in [0, 1] (0 = very negative ... 1 = very positive), offline.

Method (chosen by measurement, see benchmarks/signals.md): a logistic-regression
classifier over the sentence embedding *plus* VADER's scores and shouting
features, trained on the labelled messages shipped in
`policyengine/signals/data/sentiment_train.jsonl` (negative / neutral /
positive). The score is P(positive) + 0.5 * P(neutral), so a clearly negative
message lands near 0, a neutral question near 0.5. The neutral class includes
greetings, bare order numbers and short fragments ("Hi", "Order 58213", "OK"):
without them a message with no sentiment at all fell to the majority
(negative) class and "Hello, a new conversation." scored about 0.2. VADER alone reads sarcasm
("Great, another week without my refund") and polite fury ("I am deeply
unhappy, kind regards") as positive; the embedding classifier does not.

Training takes about a second on first use (one batched embedding pass) and
happens once per process; `method="vader"` gives the lexicon-only score.
"""

from __future__ import annotations

import json
import re
import threading
from importlib import resources
from typing import TYPE_CHECKING, Literal

from policyengine.signals.embedder import Embedder, LazyEmbedder
from policyengine.signals.fitted import fitted, predict_proba
from policyengine.signals.sentiment_model import (
    SentimentModel,
    adapters_path,
    configured_mode,
    shared_sentiment_model,
)

if TYPE_CHECKING:  # numpy is part of the embeddings extra: imported where features are built
    import numpy as np

    from policyengine.signals.intent import IntentModel

LABELS = ("negative", "neutral", "positive")
# The adapted model's share of the score; the classifier, after its fixed idioms, has the rest.
# Chosen on holdout9, the model's validation split, in a flat region (0.929-0.933 for 0.5-0.7;
# benchmarks/signals.md, "Session 16"); never on the untouched split.
MODEL_WEIGHT = 0.6
Method = Literal["combined", "vader", "embedding"]

_vader = None
_vader_lock = threading.Lock()


def _analyzer():
    global _vader
    if _vader is None:
        with _vader_lock:
            if _vader is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                _vader = SentimentIntensityAnalyzer()
    return _vader


def vader_scores(text: str) -> dict[str, float]:
    return _analyzer().polarity_scores(text)


def vader_sentiment(text: str) -> float:
    """VADER compound mapped from [-1, 1] to [0, 1]."""
    return (vader_scores(text)["compound"] + 1.0) / 2.0


_LETTERS = re.compile(r"[A-Za-z]")
_CAPS_WORD = re.compile(r"\b[A-Z]{2,}\b")
# shouted words: capitals of four letters or more that are not codes or acronyms next to a
# number or hyphen ("RK-20931", "JAMS", "AAA" are names, "I WANT MY MONEY" is shouting)
_SHOUTED = re.compile(r"(?<![-\w])[A-Z]{4,}\b(?![-\d])")


def _shouting(text: str) -> bool:
    return len(_SHOUTED.findall(text)) >= 2


_OPENER = re.compile(r"^\W*((?:oh|wow|yeah|yay|well)?\W*[\w' ]{1,25}?)\s*[,!.:;\u2013\u2014-]+\s+(.{8,})$", re.I | re.S)
_SARCASTIC_IDIOMS = re.compile(
    r"\bthanks? (?:a lot |so much |ever so much )?for (?:nothing|the help not)\b|\bwhat a (?:joke|surprise|treat)\b|"
    r"\bnothing says\b|\bonly (?:took|taken|waited|six|five|four|three|two|a) .{0,20}\b(?:days|weeks|months|hours)\b|"
    r"\bcounts? for (?:absolutely )?nothing\b|\bexactly (?:what|how) i (?:wanted|needed)\b|\bjust what i needed\b|"
    r"\b(?:i'?m|i am) sure (?:whoever|they|you) meant well\b|"
    r"\bwell done (?:on|for) (?:making|managing|losing|charging|taking|breaking|ignoring|cancelling)\b",
    re.I,
)


# Negated-comparative praise that lexicons read as negative ("couldn't be happier"),
# and complaint patterns with no sentiment word in them ("nobody helps", "third time").
_PRAISE_IDIOMS = re.compile(
    r"\b(?:could(?:n'?t| not)|can(?:'?t|not| not)) (?:be (?:happier|better|more pleased)|fault|complain|thank you enough|"
    r"recommend (?:you|it|this|them) (?:enough|highly enough)|ask for (?:a |anything )?(?:better|more))\b|"
    r"\bno (?:complaints|problems|issues)(?: at all| whatsoever| here)?\b|\bnot (?:a single|one) (?:issue|problem)\b|"
    r"\bnever had (?:such|a|service|better|this)\b|\bnothing but praise\b|\bnot bad at all\b|"
    r"\bcould(?:n'?t| not) have been (?:happier|better|more pleased)\b|"
    # British and American praise idioms that sentiment lexicons miss or misread
    r"\b(?:cracking|spot on|top notch|top-notch|chuffed|bang on|hats off|fair play|ace service|lush|brill|"
    r"deserves? a (?:raise|pay rise|medal|promotion|bonus)|breath of fresh air|credit where (?:it'?s|credit'?s) due|"
    r"properly (?:comfy|good|impressed)|proper good|can'?t fault|cannot fault|expected worse|zero (?:drama|issues|problems)|"
    r"nailed it|knocked it out of the park|above and beyond|extra mile|a lifesaver|life saver)\b|"
    # relief and thanks that lexicons read as worry ("Phew, I was panicking")
    r"\b(?:phew|thank (?:god|goodness|heavens)|(?:huge|such a|what a|massive|big) relief|so relieved|i could cry|"
    r"absolute (?:legends?|stars?|heroes?|gems?)|you (?:guys |lot )?(?:rock|are (?:the best|stars|legends|heroes))|"
    r"worth every penny|not half bad|can'?t say fairer|job done|in no time|(?:minutes|seconds) flat)\b|"
    # thanks and praise stated outright, often around a hard story ("Broke down at 2am ... thank you")
    r"\b(?:(?:seriously|really|so|very|hugely|genuinely|incredibly) impressed|(?:pass on|say|send) (?:my |our )?"
    r"(?:thanks|gratitude)|what a star|it meant a lot|meant the world|happy customer|i (?:really |truly )?appreciate"
    r" (?:the|your|how|all)|you have my thanks|made (?:a|it|things) (?:very |really )?(?:stressful|difficult|hard) "
    r"(?:time )?(?:a (?:bit|lot|little) )?(?:easier|better)|(?:brilliant|excellent|outstanding|amazing|superb|"
    r"fantastic) service at|thanks for being (?:so )?(?:reasonable|helpful|kind|patient|understanding))\b",
    re.I,
)
_COMPLAINT_CUES = re.compile(
    r"\b(?:second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(?:st|nd|rd|th)) (?:attempt|request|email|"
    r"message|call|chase|letter|time of asking)\b|\bwhat (?:remains|is left) of my patience\b|\butmost respect\b|"
    r"\b(?:most|tremendously|awfully|terribly|eternally) (?:grateful|helpful) if\b|\bwith the greatest respect\b|"
    r"\b(?:greatly|really) appreciate it if\b|\bat some point this (?:quarter|year|century|decade|month|week)\b|"
    r"\bperhaps the \w+ (?:will|one)\b|\b(?:\d+|three|four|five|six|seven|eight|nine|ten|eleven|twelve) different (?:advisers|"
    r"advisors|agents|people|answers)\b|"
    r"\b(?:nobody|no one|no-one|nothing)\b(?:\s+\w+){0,2}\s+(?:helps?|cares?|refunds?|fix(?:es)?|repl(?:y|ys|ies|ied)|an(?:sw|ws)e?rs?|"
    r"called|came|turned up|happened|works?|arrived)\b|\bstill (?:no|not|waiting|nothing|broken)\b|"
    r"\b(?:second|third|fourth|fifth|sixth|\d+(?:st|nd|rd|th)) time\b|\b(?:\d+|two|three|four|five|six|seven|"
    r"eight|nine|ten) times\b|\bon hold\b|\b(?:weeks|months) (?:later|now|and)\b|"
    # plain factual complaints: something promised did not happen, or happened wrongly
    r"\bnever (?:arrived|came|turned up|showed|received|got|ordered|made|dialled|dialed|requested|asked for|agreed|"
    r"signed up|used)\b|\bwithout (?:telling|asking|warning|notice|notifying|consent|my (?:permission|consent))\b|"
    r"\b(?:did(?:n'?t| not)|does(?:n'?t| not)|has(?:n'?t| not)|have(?:n'?t| not)) (?:work|arrive|turn up|come|show up|"
    r"been (?:refunded|fixed|returned|credited))\b|\b(?:isn'?t|wasn'?t|aren'?t) (?:ours|mine|me)\b|"
    r"\bwrong (?:size|item|model|part|colou?r|address|amount|name|room|order)\b|"
    r"\b(?:charged|billed|taken|debited) (?:me )?twice\b|"
    # a customer about to leave, a chase counted out
    r"\b(?:i'?m|i am|we'?re|we are|i'?ll be|we'?ll be) (?:moving|switching|leaving|taking my business)(?: to another)? "
    r"(?:banks?|providers?|suppliers?|networks?|insurers?|elsewhere)\b|\banother no[- ]show\b|"
    r"\bhow is (?:that|this) even (?:possible|allowed|legal)\b|\bafter (?:two|three|four|five|six|seven|eight|nine|ten|"
    r"\d+|several|multiple|countless) (?:emails|calls|phone calls|attempts|chasers|visits)\b|"
    r"\bnot (?:happy|impressed|good enough|acceptable)\b|\bevery time i (?:call|ring|phone|ask|chase)\b|"
    r"\b(?:does|did) not (?:address|answer) (?:a single|any|one) (?:one )?of\b|"
    r"\bare you (?:seriously|kidding|joking|having a laugh)\b|\bso which is it\b|"
    r"\bdo you (?:actually|even) (?:check|read|care|listen)\b|"
    # a demand made now ("I want a full refund and I want it now")
    r"\bi want (?:a (?:full )?refund|my money back|it (?:sorted|fixed|done)) (?:now|today|immediately)\b|\bi want it now\b",
    re.I,
)
# a short phrase in quotes in a customer's message: the writer disputes the word ("'unlimited'
# data", "a 'facility fee'") -- irony or complaint, not a quotation
_SCARE_QUOTES = re.compile(r"(?<![\w])['\"\u2018\u201c](?:[A-Za-z][\w-]*(?: [\w-]+){0,3})['\"\u2019\u201d](?![\w])")


_SALUTATION = re.compile(r"^\W*(?:dear|hi|hello|hey|good (?:morning|afternoon|evening)|good news|thanks?(?: you)?,)\b",
                         re.I)
_FIXED_SARCASM = re.compile(r"\b(?:thanks?|thx|cheers) (?:a lot |so much |ever so much )?for nothing\b|\bwhat a joke\b", re.I)


# The writer says the problem is small ("not a big deal", "but I get it", "it still works"):
# mild annoyance, which is above the escalation threshold.
_DOWNPLAY = re.compile(
    r"\b(?:not (?:a |that |too )?(?:big|huge|major|massive|serious) (?:deal|problem|issue)|no big deal|"
    r"not the end of the world|not urgent|no rush|nothing (?:major|serious|dramatic|urgent)|(?:a |one )?small thing|"
    r"minor (?:thing|issue|point|niggle)|but (?:i|we) (?:get|understand)(?: it| that| why)?|but (?:it|that)(?:'s| is) fine|"
    r"all good(?: now)?|can live with it|(?:but )?it (?:still )?works|just (?:a heads up|flagging|wanted to (?:flag|"
    r"let you know|mention|say))|no harm done|seems fine|not a problem really|no worries|not (?:that )?(?:i'?m |we'?re )?unhappy)\b",
    re.I)
# The register of a formal notice ("Please be advised that...", "I write to inform you"):
# by the labelling rules a calm legal or procedural notice is neutral, not a complaint.
_FORMAL_NOTICE = re.compile(
    r"^\W*(?:please (?:be advised|note|be informed|treat this|accept this)|kindly note|for (?:your records|information)|"
    r"i (?:write|am writing) to (?:inform|notify|advise|confirm|let you know)|this is to (?:inform|notify|confirm|"
    r"put you on notice)|further to|following our|i (?:hereby )?confirm that|we (?:hereby )?(?:give|write to give) notice)\b",
    re.I)
# The writer takes the dispute to a regulator, an ombudsman or a card chargeback ("I'm
# reporting this to Ofcom", "I've raised a chargeback"): a complaint, however calmly put.
_REGULATOR_BODY = (r"(?:ombudsman|trading standards|regulator|ofcom|ofgem|ofwat|fca|cfpb|ftc|fcc|bbb|better business bureau|"
                   r"citizens advice|cqc|(?:state |insurance )*commissioner|attorney general|(?:my )?mp\b|the (?:press|papers)|"
                   r"chargeback|card (?:provider|issuer))")
_REGULATOR_ESCALATION = re.compile(
    r"\b(?:i|we)(?:'ve|'m|'re|'ll| am| are| have| will| shall)?\b[^.!?]{0,40}?\b(?:report\w*|complain\w*|escalat\w*|"
    r"go(?:ing)? (?:straight )?to|contact\w*|fil(?:e|ed|ing)|rais(?:e|ed|ing)|been in touch with|refer\w*|tak\w+ (?:this|it) to|"
    r"disput\w*)\b[^.!?]{0,30}?\b" + _REGULATOR_BODY + r"|\bnext stop is (?:the )?" + _REGULATOR_BODY, re.I)
REGULATOR_CAP = 0.25
_ULTIMATUM = re.compile(r"\b(?:unless|failing (?:which|that|this)|absent (?:a|an|payment|your)|within \d+ (?:working )?days|"
                        r"i (?:require|demand|expect)|you have (?:\d+|until))\b", re.I)
MILD_FLOOR = 0.35  # the score a downplayed annoyance gets at least (the policy threshold is 0.3)
OUTBOUND_FLOOR = 0.4  # routine outbound text is neutral (apologies included)


LEGAL_ACTION_CAP = 0.25  # a customer's notice of legal action is a dispute, however calm
# the litigation probability from which the cap applies: above the intent model's own
# threshold, so that its borderline false alarms ("a court hearing I'm a witness at") do not
# also become complaints
LEGAL_ACTION_PROBABILITY = 0.6


# a legal notice written for the party pursuing the recipient ("Please find enclosed a letter before
# claim on behalf of our client"): a dispute, however much it reads like correspondence
_CLAIMANT_SIDE = re.compile(r"\bon behalf of (?:our|my) client\b|\bwe (?:act|are acting) for\b|\bwe are instructed by\b|"
                            r"\bletter before (?:claim|action)\b|\bthis firm represents\b", re.I)


def idiom_override(text: str, score: float, *, legal_action: bool = False) -> float:
    """Fixed idioms whose meaning is not compositional win over the classifier:
    "couldn't be happier" is praise, "thanks for nothing" and taking the matter to a regulator
    are complaints (`REGULATOR_CAP`; not a company's reply that notes the referral); a downplayed
    annoyance ("bit annoying, but not a big deal") and routine outbound text (a notice or
    reply written by the company) and a formal notice ("Please be advised that ...") are at least neutral-ish (`MILD_FLOOR`, `OUTBOUND_FLOOR`)
    unless sarcasm or a complaint pattern is present. `legal_action` (the litigation intent
    model says the writer pursues legal action) makes an inbound text a dispute: at most
    `LEGAL_ACTION_CAP`, and never floored as a formal notice (nor as outbound text when it is written
    for the claimant, `_CLAIMANT_SIDE`); outbound text about legal action stays neutral."""
    if _FIXED_SARCASM.search(text):
        return min(score, 0.15)
    if _REGULATOR_ESCALATION.search(text) and not outbound_cue(text):
        return min(score, REGULATOR_CAP)
    if _PRAISE_IDIOMS.search(text) and not _COMPLAINT_CUES.search(text):
        return max(score, 0.65)
    if outbound_cue(text) and not _shouting(text) and not (legal_action and _CLAIMANT_SIDE.search(text)):
        return max(score, OUTBOUND_FLOOR)
    if legal_action:
        return min(score, LEGAL_ACTION_CAP)
    # a notice of what has been done, with no grievance words and no ultimatum, is neutral;
    # a demand with a deadline ("unless ... within 14 days") is a complaint
    formal = bool(_FORMAL_NOTICE.search(text)) and vader_scores(text)["neg"] < 0.1 and not _ULTIMATUM.search(text)
    if (_DOWNPLAY.search(text) or formal) and not _COMPLAINT_CUES.search(text) and not sarcasm_cue(text):
        return max(score, MILD_FLOOR)
    return score


def sarcasm_cue(text: str) -> float:
    """1 when a positive opener ("Great,", "Oh brilliant!") precedes a non-positive clause,
    or a known sarcastic idiom appears ("thanks for nothing"); else 0."""
    if _SARCASTIC_IDIOMS.search(text):
        return 1.0
    if _SALUTATION.match(text) or outbound_cue(text):
        return 0.0  # "Dear customer, ..." / "Good news, ...": a greeting or an announcement, not irony
    m = _OPENER.match(text.strip())
    if not m:
        return 0.0
    head, rest = m.group(1), m.group(2)
    if len(head.split()) > 4:
        return 0.0
    return float(vader_scores(head)["compound"] >= 0.3 and vader_scores(rest)["compound"] < 0.3)


# Text written by the company to the customer (an outbound draft): a salutation to a
# customer, "we" as the subject of what was done for "you", "your <thing> has been <done>",
# or the formulas of notices ("Good news", "We acknowledge", "Thank you for your patience",
# "If this wasn't you"). Routine outbound text is neutral: see `outbound_floor`.
_OUTBOUND = re.compile(
    r"^\W*(?:dear\s+(?:customer|patient|guest|member|student|parent|tenant|applicant|mr|mrs|ms|miss|dr)\b|(?:hi|hello)\s+(?!there\b)(?:(?:mr|mrs|ms|miss|dr)\.?\s+)?[A-Z][a-z]+(?:-[A-Z][a-z]+)?,)|"
    # an apology followed by what the writer has done for the reader, and the company's own formulas
    r"^\W*(?:i'?m (?:so |really |very |truly |terribly )?sorry|apologies)\b[^.!?]*[.!?]\s+(?:[^.!?]*\s)?(?:i'?ve|i have|we'?ve|we have|"
    r"i'?ll|we'?ll|a crew|an engineer|our [a-z]+ team)\s+(?:\w+\s+){0,2}?(?:authori[sz]ed|put|escalated|applied|"
    r"credited|paused|refunded|flagged|booked|arranged|waived|issued|raised|passed|logged|reinstated|traced|corrected|"
    r"collect|call|be in touch|contact|publish|sent|ordered|cancelled|canceled)\b|"
    r"\bi(?:'ve| have)\s+(?:\w+\s+){0,1}?(?:authori[sz]ed|escalated (?:it|this|your)|applied a credit|credited your|"
    r"paused (?:the|your)|refunded the|flagged your|waived the|reinstated|put (?:enforcement|collections?|the account|"
    r"your account) (?:action )?on hold)\b|"
    r"\b(?:we(?:'ve| have) been (?:notified|informed|served|made aware)|we have notified|as requested|"
    r"while we (?:look|assess|investigate|review|check)|it'?s been (?:traced|located|found|dispatched|rebooked)|"
    # the company's side of a legal matter, anywhere in the text
    r"we note that you have|our records (?:show|indicate)|we (?:have )?received (?:a|your|the) (?:subpoena|letter|claim|notice|"
    r"demand)|please (?:route|direct|address) (?:all )?(?:communications?|correspondence)|we (?:cannot|can'?t) discuss your "
    r"account|in response to the claim|we have decided to settle|we confirm receipt of|for legal review|"
    r"we(?:'ve| have) (?:reproduced|scheduled|fixed|posted|reset|escalated|referred)|"
    r"(?:has|have) been (?:posted|dispatched|sent|shipped) (?:first class|today|by|to you)|"
    r"your (?:premium|bill|payment|balance|plan|price|tariff|renewal premium) (?:will|is going to) (?:increase|decrease|"
    r"change|go (?:up|down))|"
    r"^\W*thanks? (?:you )?for letting us know|"
    r"if you remain (?:dissatisfied|unhappy)|you(?:'re| are) welcome to (?:raise|contact|refer|ask)|^\W*reminder|"
    r"this is (?:a|your) (?:\w+ )?reminder|by continuing to use|you may wish to|we are in receipt of|"
    r"(?:has|have) been (?:issued|sent|served|posted) to you|"
    r"per our (?:attorneys?|solicitors?|lawyers?|legal (?:team|department|counsel))|"
    r"i(?:'ve| have) asked (?:a|my|our) (?:supervisor|manager|colleague|team leader)|no action is needed|you (?:don'?t|do not) need to (?:take any action|do anything))\b|"
    r"(?<![\"'])\b(?:we(?:'ve| have| will|'ll)|our team)\s+(?:\w+\s+){0,2}?(?:received|processed|refunded|credited|applied|"
    r"cancelled|canceled|closed|updated|sent|issued|approved|passed|forwarded|referred|booked|arranged|removed|added|"
    r"reviewed|note|acknowledge|upgraded|submitted|escalated|checked|waived|unblocked|unlocked|reset|raised|logged)\b|"
    r"\byour\s+(?:[\w'\u2019£$€.,-]+\s+){0,8}?(?:(?:has|have) (?:now )?been|will (?:now )?be)\s+(?:\w+ed|sent|set up|shipped)\b|"
    r"\bwe (?:have not|haven'?t) been able to\b|\bwe(?:'re| are) unable to (?:reverse|refund|accept|offer|collect)\b|"
    r"\bwe regret to inform\b|\bto avoid (?:a late fee|interruption|an estimated bill|disconnection)\b|"
    r"\byour free trial (?:ends|expires)\b|^\W*dear (?:passenger|traveller|policyholder|resident|subscriber)\b|"
    r"\byour\s+(?:[\w£$€.,-]+\s+){0,6}?(?:is|are|was|were)\s+(?:now\s+)?(?:ready|available|confirmed|booked|"
    r"on (?:its|their) way|attached|enclosed|changed successfully|set up)\b|"
    r"^\W*(?:(?:hi|hello|dear)\b[^,.!?]{0,30},\s*)?(?:good news|great news|welcome (?:aboard|to|back)|just confirming|please find (?:attached|enclosed)|"
    r"we(?:'re| are) (?:writing|sorry|really sorry|so sorry|delighted|pleased|glad)|we acknowledge|we note|"
    r"thanks? (?:you )?(?:so much )?for (?:contacting|getting in touch|your (?:patience|letter|email|message|kind|payment|"
    r"order|feedback|notice|response)|staying|flying|choosing|shopping|being|writing (?:to us|in))|"
    r"following your (?:complaint|call|email|letter|enquiry|inquiry|feedback))|"
    r"^\W*we (?:understand|appreciate|recogni[sz]e|reali[sz]e|know) (?:that )?(?:this|you|how|it)\b|\bwe apologi[sz]e\b|\bif this wasn'?t you\b|\ba member of our team\b|\byour reference (?:number )?is\b|"
    r"\bplanned\s+(?:\w+\s+){0,3}(?:interruption|outage|maintenance|works)\b|\bhas been resolved\b|"
    # account formulas, and the company's side of a legal matter or of its own mistake
    r"\byour (?:card|account) ending(?: in)? \d|\bhas been processed\b|\bthe claim you(?:'ve| have) (?:filed|issued|lodged|"
    r"brought)\b|\bwithout (?:any )?admission of liability\b|\b(?:we are|we're) not taking (?:any )?legal action against "
    r"you\b|^\W*internal draft\b|\bplease be assured\b|\b(?:sent to you|issued) in error\b|"
    r"\bplease (?:ignore|disregard) (?:the|our|this|that) (?:\w+ )?(?:email|letter|notice|reminder|message)\b|"
    r"\bi'?m (?:pausing|putting|placing) (?:all )?(?:billing|the account|your account|collections?)\b|"
    r"\backnowledges? receipt\b|\bwe (?:can )?confirm (?:that )?(?:we|receipt|your)\b|\byou(?:'re| are) chatting with\b|"
    r"\b(?:has|have) been referred to our\b|"
    # a creditor's notice: what happens to the customer's debt, and a court's judgment against them
    # (written by no "I" and no payer: a customer also writes about a balance sent to collections)
    r"^(?![\s\S]*\b(?:i|i'm|i've|i'll|i'd|my|me|we(?:'ve| have)? (?:already )?paid)\b)[\s\S]*?\b(?:arrears|outstanding balance|overdue balance|amount owed|"
    r"the debt)\b[^.!?]{0,80}\b(?:proceedings|court|"
    r"judge?ment|collection|referred|recovery)\b|\b(?:judge?ment|ccj) may be (?:entered|registered|obtained) against you\b|"
    r"\bour (?:lawyers|solicitors|attorneys|legal team) have reviewed your\b",
    re.I)


def outbound_cue(text: str) -> float:
    """1 when the text reads as written by the company to the customer, else 0."""
    return float(bool(_OUTBOUND.search(text)))


def surface_features(text: str) -> np.ndarray:
    """VADER neg/neu/pos/compound, capitals, shouted words, ! and ? density, sarcasm cue, praise
    idiom, complaint cues, outbound cue, scare quotes (inbound only)."""
    import numpy as np

    v = vader_scores(text)
    letters = _LETTERS.findall(text)
    caps = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
    words = max(1, len(text.split()))
    shouted = len(_CAPS_WORD.findall(text)) / words
    excl = min(1.0, text.count("!") / 3)
    quest = min(1.0, text.count("?") / 3)
    praise = float(bool(_PRAISE_IDIOMS.search(text)))
    complaint = min(1.0, len(_COMPLAINT_CUES.findall(text)) / 2)
    out = outbound_cue(text)
    quotes = 0.0 if out else min(1.0, len(_SCARE_QUOTES.findall(text)) / 2)
    return np.array([v["neg"], v["neu"], v["pos"], v["compound"], caps, shouted, excl, quest, sarcasm_cue(text),
                     praise, complaint, out, quotes], dtype=np.float32)


def training_set() -> list[tuple[str, str]]:
    """The labelled messages the classifier is trained on (shipped with the package)."""
    raw = resources.files("policyengine.signals").joinpath("data/sentiment_train.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [(r["text"], r["label"]) for r in rows]


class SentimentScorer(LazyEmbedder):
    """Offline sentiment; construction is free, the classifier trains on first use."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        method: Method = "combined",
        # chosen by leave-one-split-out CV over the three tuned-on splits (benchmarks/signals.md):
        # stronger regularisation and surface features weighted 2x held best across rotations
        surface_weight: float = 2.0,
        regularisation: float = 2.0,
        negative_weight: float = 1.0,
        training: list[tuple[str, str]] | None = None,
        threat_feature: bool = True,
        intent: IntentModel | None = None,
        model: SentimentModel | str | None = "auto",
    ) -> None:
        if method not in ("combined", "vader", "embedding"):
            raise ValueError(f"sentiment method must be combined, vader or embedding, got {method!r}")
        if model == "auto":  # the packaged model, unless POLICYENGINE_SENTIMENT_MODEL=off
            use = method == "combined" and configured_mode() != "off" and adapters_path().is_file()
            model = shared_sentiment_model() if use else None
        elif isinstance(model, str):
            raise ValueError(f"sentiment model must be 'auto', None or a SentimentModel, got {model!r}")
        # The adapted encoder's own three-class reading (`sentiment_model.py`), mixed with the
        # classifier's after the fixed idioms apply to it; None scores with the classifier alone.
        self.model: SentimentModel | None = model
        self._embedder = embedder
        self.method = method
        self.surface_weight = surface_weight
        self.regularisation = regularisation
        # Weight of the negative class; leave-one-split-out CV is flat over 1-2 (1 best by a hair).
        self.negative_weight = negative_weight
        self._training = training
        # The litigation intent probability as one more feature: a threat of legal action
        # ("my solicitor will be in touch") embeds close to neutral business text, but it is
        # a complaint. Chosen on the tune split (tests/data/signals_tune).
        # `intent` is the litigation model to read it from (default: the shipped one).
        self.threat_feature = threat_feature
        self._intent = intent
        self._clf = None
        self._lock = threading.Lock()

    def _litigation(self):
        if self._intent is None:
            from policyengine.signals.intent import IntentModel

            self._intent = IntentModel("litigation", self.embedder)
        return self._intent

    def _features(self, texts: list[str], threat: np.ndarray | None = None) -> np.ndarray:
        import numpy as np

        emb = self.embedder.embed(texts)
        if self.method == "embedding":
            return emb
        surf = np.stack([surface_features(t) for t in texts]) * self.surface_weight
        if self.threat_feature:
            if threat is None:
                threat = self._threats(texts)
            surf = np.hstack([surf, threat.reshape(-1, 1)])
        return np.hstack([emb, surf])

    def _threats(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        return np.array([r.probability for r in self._litigation().results(texts)], dtype=np.float32)

    def fit(self, rows: list[tuple[str, str]] | None = None) -> SentimentScorer:
        """Train (or retrain) the classifier; called automatically on first use."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        rows = rows if rows is not None else (self._training or training_set())
        bad = {lab for _, lab in rows} - set(LABELS)
        if bad:
            raise ValueError(f"sentiment training labels must be {LABELS}, got {sorted(bad)}")
        y = np.array([LABELS.index(lab) for _, lab in rows])
        params = {"C": self.regularisation, "max_iter": 2000,
                  "class_weight": {0: self.negative_weight, 1: 1.0, 2: 1.0}}

        def fit() -> LogisticRegression:
            return LogisticRegression(**params).fit(self._features([t for t, _ in rows]), y)

        key: dict[str, object] = {"method": self.method, "surface_weight": self.surface_weight,
                                  "threat_feature": self.threat_feature}
        if self.method == "combined" and self.threat_feature:
            key["litigation"] = self._litigation().fingerprint()  # its probabilities are a feature
        self._clf = fitted(f"sentiment-{self.method}", params, rows, self.embedder, fit, key=key)
        return self

    def _ensure(self):
        if self._clf is None:
            with self._lock:
                if self._clf is None:
                    self.fit()
        return self._clf

    def scores(self, texts: list[str]) -> list[float]:
        """Sentiment for a batch of texts (one embedding pass)."""
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"sentiment needs text, got {type(t).__name__}")
        if self.method == "vader":
            return [round(vader_sentiment(t), 4) for t in texts]
        out = [0.5] * len(texts)
        idx = [i for i, t in enumerate(texts) if t.strip()]
        if not idx:
            return out
        clf = self._ensure()
        batch = [texts[i] for i in idx]
        threat = self._threats(batch) if self.method == "combined" else None
        proba = predict_proba(clf, self._features(batch, threat))
        read = self.model.scores(batch) if self.model is not None else None
        cols = {int(c): k for k, c in enumerate(clf.classes_)}
        legal = max(self._litigation().threshold, LEGAL_ACTION_PROBABILITY)
        for k, (row, i) in enumerate(zip(proba, idx, strict=True)):
            p_neu = row[cols[1]] if 1 in cols else 0.0
            p_pos = row[cols[2]] if 2 in cols else 0.0
            pursues = threat is not None and float(threat[k]) >= legal
            score = idiom_override(texts[i], float(p_pos + 0.5 * p_neu), legal_action=pursues)
            if read is not None:  # the idioms were written for the classifier: they correct its reading only
                score = (1 - MODEL_WEIGHT) * score + MODEL_WEIGHT * read[k]
            out[i] = round(score, 4)
        return out

    def score(self, text: str) -> float:
        return self.scores([text])[0]

    def label(self, text: str) -> str:
        s = self.score(text)
        return "negative" if s < 0.3 else "positive" if s > 0.7 else "neutral"
