"""Read a policy set's sources from the working tree or from a git revision.

`policies/` or `policies/support.policy` are paths; `REV:PATH` (for example
`origin/main:policies`) reads the files as they are in that git revision, so CI
can compare a pull request against its base without a second checkout.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLICY_SUFFIX = ".policy"


class SourceSpecError(ValueError):
    pass


def _git(args: list[str], cwd: str | None = None) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise SourceSpecError("git is not installed (needed to read REV:PATH)") from None
    if out.returncode != 0:
        raise SourceSpecError(out.stderr.strip() or f"git {' '.join(args)} failed")
    return out.stdout


def is_git_spec(spec: str) -> bool:
    if os.path.exists(spec) or ":" not in spec:
        return False
    rev = spec.split(":", 1)[0]
    return bool(rev) and not (len(rev) == 1 and rev.isalpha())  # not a Windows drive letter


def read_sources(spec: str) -> dict[str, str]:
    """file name -> text for every `.policy` file the spec names (sorted by name)."""
    if is_git_spec(spec):
        rev, path = spec.split(":", 1)
        path = path.strip("/") or "."
        top = _git(["rev-parse", "--show-toplevel"]).strip()
        prefix = _git(["rev-parse", "--show-prefix"]).strip()
        full = os.path.normpath(os.path.join(prefix, path)) if path != "." else prefix.rstrip("/") or "."
        listing = _git(["ls-tree", "-r", "--name-only", rev, "--", full], cwd=top).splitlines()
        names = sorted(n for n in listing if n.endswith(POLICY_SUFFIX))
        if not names:
            raise SourceSpecError(f"{spec}: no {POLICY_SUFFIX} files at that path in revision {rev}")
        return {f"{rev}:{n}": _git(["show", f"{rev}:{n}"], cwd=top) for n in names}
    p = Path(spec)
    if not p.exists():
        raise SourceSpecError(f"{spec}: no such file or directory")
    files = sorted(p.rglob(f"*{POLICY_SUFFIX}")) if p.is_dir() else [p]
    if not files:
        raise SourceSpecError(f"{spec}: no {POLICY_SUFFIX} files in this folder")
    return {str(f): f.read_text(encoding="utf-8") for f in files}


@contextmanager
def materialised(spec: str) -> Iterator[list[str]]:
    """Paths `load_policy_set` can read: the spec itself, or a temp copy of a git revision's files."""
    if not is_git_spec(spec):
        yield [spec]
        return
    sources = read_sources(spec)
    with tempfile.TemporaryDirectory(prefix="policyengine-rev-") as tmp:
        for name, text in sources.items():
            rel = name.split(":", 1)[1]
            dest = Path(tmp) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
        yield [tmp]
