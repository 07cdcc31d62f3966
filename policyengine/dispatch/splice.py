"""Continuing a cut answer on a model that cannot take an assistant prefill.

Such a model is asked, in an ordinary follow-up turn, to write the rest of its (cut) previous
answer. What comes back is checked before any of it reaches the client: `splice` returns the
part to append, with the text it repeated (the tail of the partial answer, or the whole answer
restarted from the beginning) removed, or None when it does not continue the partial text
(a preamble such as "Sure, here is the rest:", or a different answer started over).
"""

from __future__ import annotations

import re

#: the follow-up turn that asks for the rest of a cut answer (after the partial answer itself)
CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off before it was finished. Continue it from exactly where it "
    "stopped: write only the rest, starting with the next character, without repeating any of it "
    "and without any introduction or comment.")

#: how many characters of the partial answer must be repeated before it counts as an overlap
MIN_OVERLAP = 8
#: a reply that begins with this many characters of the partial answer has started over (then the
#: whole partial text must match, else it is a different answer)
RESTART_PROBE = 16

_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|alright|here(?:'s| is| are)|continuing|as requested|"
    r"i(?:'ll| will) continue|(?:the )?continuation|(?:the )?rest of)\b[^\n]{0,80}?(?:[:!]|\.\s|\n)", re.I)


def needs_more(sent: str, head: str, *, enough: int = 64) -> bool:
    """True while `head` is too short to judge: under `enough` characters, or it looks like a
    restart of `sent` (its first `RESTART_PROBE` characters) but is not yet past the whole of it."""
    if len(head) < min(enough, len(sent) + 1):
        return True
    probe = sent[:RESTART_PROBE]
    return bool(probe) and head.startswith(probe) and len(head) <= len(sent)


def splice(sent: str, head: str) -> str | None:
    """The part of `head` (the start of a continuation of `sent`) to append to `sent`, or None
    when `head` does not continue it. Repeated text is dropped: the whole of `sent` when the model
    started over, else the longest tail of `sent` (at least `MIN_OVERLAP` characters) it began with."""
    if not head.strip():
        return head
    if sent and head.startswith(sent):
        return head[len(sent):]
    if len(sent) > RESTART_PROBE and head.startswith(sent[:RESTART_PROBE]):
        return None  # started over, and not with the same text: a different answer
    for k in range(min(len(sent), len(head)), MIN_OVERLAP - 1, -1):
        if sent.endswith(head[:k]):
            return head[k:]
    if _PREAMBLE.match(head):
        return None
    return head


__all__ = ["CONTINUE_INSTRUCTION", "MIN_OVERLAP", "needs_more", "splice"]
