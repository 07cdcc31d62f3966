"""W245: actions the tests name that no rule of the policy set names.

Such a case is decided by the default deny whatever the policy says about other actions, which
is what a renamed action or a typo in the test (or in the policy) looks like. A case that says it
expects exactly that (`expect: {default_applied: true}`) is not reported, nor a skipped one.
`chat` and `embeddings` count as named when the set has a route (routes decide model calls).
The diagnostic is located in the test file, at the case's `action:` (the case is the example).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from policyengine.dsl import ast
from policyengine.dsl.diagnostics import Diagnostic, source_line

_NAMING = (ast.Authorize, ast.Deny, ast.RequireApproval, ast.Escalate, ast.Verify)
_NEXT_CASE = re.compile(r"^\s*-\s")


def named_actions(files: list[ast.PolicyFile]) -> set[str]:
    """The actions some rule of the set names (shadow rules included); `chat` and `embeddings`
    when it has a route or a model choice."""
    out: set[str] = set()
    for pf in files:
        for it in pf.items:
            if isinstance(it, _NAMING) and it.actions:
                out.update(n.value for n in it.actions)
            elif isinstance(it, ast.Route | ast.AllowChoice):
                out.update(("chat", "embeddings"))
    return out


def _locate(text: str, line: int, action: str) -> tuple[int, int, int]:
    """(line, col, end col) of `action` after an `action:` key in the case starting at `line`
    (1-based); the case's line when it is not written there (e.g. it comes from `defaults`)."""
    lines = text.split("\n")
    pat = re.compile(r"\baction\s*:\s*[\"']?(" + re.escape(action) + r")\b")
    for i in range(max(line - 1, 0), len(lines)):
        if i > line - 1 and _NEXT_CASE.match(lines[i]):
            break
        m = pat.search(lines[i])
        if m:
            return i + 1, m.start(1) + 1, m.end(1) + 1
    return line, 1, 2


def uncovered_actions(files: list[ast.PolicyFile], test_files: list[Any]) -> list[Diagnostic]:
    """W245 for every case of `test_files` (`policyengine.ci.spec.PolicyTestFile`) whose action
    no rule of `files` names; sorted by file and line."""
    named = named_actions(files)
    out: list[Diagnostic] = []
    for tf in test_files:
        text: str | None = None
        for case in tf.tests:
            action = case.given.action
            if case.skip or action in named or case.expect.default_applied is True:
                continue
            if text is None:
                try:
                    text = Path(tf.path).read_text(encoding="utf-8")
                except OSError:
                    text = ""
            line, col, end = _locate(text, case.line, action)
            close = difflib.get_close_matches(action, sorted(named - {"chat", "embeddings"}), n=1, cutoff=0.6)
            hint = (f"did you mean `{close[0]}`? " if close else "") + (
                f"add a rule for `{action}` (authorize, deny or require approval), or say the test expects "
                "the default: `default_applied: true`")
            out.append(Diagnostic(
                file=tf.path, line=line, col=col, end_line=line, end_col=end, code="W245", severity="warning",
                message=f"test {case.name!r} names action `{action}`, which no rule of the policy set names: "
                        "the default deny decides it", hint=hint, source_line=source_line(text, line)))
    return sorted(out, key=lambda d: (d.file, d.line, d.col))
