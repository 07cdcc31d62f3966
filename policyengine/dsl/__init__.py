"""The policy language: parse, check, compile, format.

    from policyengine.dsl import load_policy_set
    policy = load_policy_set(["policies/support-desk"])
    decision = policy.evaluate(Action(action="refund", fields={"amount": "150 GBP"}))

The walk of a rule from `.policy` text to a Decision touches five modules (plus the
syntax tree's node classes, `dsl/ast`; `dsl/diagnostics` only when there is a problem;
`dsl/formatter` prints conditions for the checker's messages and the compiler's
explanations):

1. `dsl/parser`: the text -> `dsl.ast` nodes with spans (grammar.lark, LALR);
   a syntax error is a Diagnostic.
2. `dsl/checker`: the nodes of the whole set -> Diagnostics (names, types, conflicts);
   any error stops here (`PolicyError`).
3. `dsl/compiler`: the nodes -> `policyengine.ir.PolicyIR`: each condition a closure,
   rules indexed by action name, routes by the values they test, models as ModelSpecs.
4. `policyengine/ir`: the compiled form (data, the condition protocol, path readers).
5. `policyengine/evaluator`: `CompiledPolicy.evaluate(action) -> Decision`, the
   closures run against an `EvalContext`.

Dependencies point one way: dsl -> ir, dsl -> evaluator (this module wraps the
compiler's PolicyIR as a `CompiledPolicy`), evaluator -> ir; ir imports neither.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from policyengine.evaluator import CompiledPolicy

from . import ast
from .checker import check_files
from .compiler import compile_files, content_hash
from .diagnostics import Diagnostic, PolicyError
from .formatter import format_file, format_source
from .parser import parse

__all__ = [
    "CompiledPolicy",
    "Diagnostic",
    "PolicyError",
    "check",
    "check_sources",
    "compile_sources",
    "content_hash",
    "deferred_full_gc",
    "discover_sets",
    "expand_paths",
    "format_file",
    "format_source",
    "load_policy_set",
    "parse",
    "read_sources",
    "stage_sources",
]


def _as_list(paths: Sequence[str | Path] | str | Path) -> list[str | Path]:
    return [paths] if isinstance(paths, str | Path) else list(paths)


def expand_paths(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Files as given; a directory contributes its `*.policy` files (recursively, sorted by path)."""
    paths = _as_list(paths)
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.policy")))
        else:
            out.append(p)
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]  # type: ignore[func-returns-value]


def discover_sets(path: str | Path) -> list[list[Path]]:
    """The policy sets under one CLI argument.

    A file is a set. A directory with `*.policy` files directly inside is one set (its
    sub-folders included). A directory with none directly inside is a collection: each
    sub-folder is discovered the same way (so `policyengine lint policies/` lints every
    example set on its own)."""
    p = Path(path)
    if not p.is_dir():
        return [[p]]
    if any(p.glob("*.policy")):
        return [expand_paths([p])]
    sets: list[list[Path]] = []
    for child in sorted(c for c in p.iterdir() if c.is_dir()):
        sets.extend(s for s in discover_sets(child) if s)
    return sets


def read_sources(paths: Sequence[str | Path] | str | Path) -> dict[str, str]:
    """{file: text} of every `.policy` file the paths name (see `expand_paths`), read as
    UTF-8 (a leading BOM dropped). PolicyError (E001) when there are none or one cannot be read."""
    paths = _as_list(paths)
    files = expand_paths(paths)
    if not files:
        where = ", ".join(str(p) for p in paths) or "(nothing)"
        raise PolicyError([Diagnostic(file=where, line=1, col=1, code="E001",
                                      message="no .policy files found", hint="pass a .policy file or a directory holding some")])
    sources: dict[str, str] = {}
    for f in files:
        try:
            sources[str(f)] = f.read_text(encoding="utf-8-sig")  # a leading BOM is not policy text
        except FileNotFoundError:
            raise PolicyError([Diagnostic(file=str(f), line=1, col=1, code="E001", message="no such file")]) from None
        except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
            raise PolicyError([Diagnostic(file=str(f), line=1, col=1, code="E001",
                                          message=f"cannot read: {e}")]) from None
    return sources


_GC_LOCK = threading.Lock()
_gc_deferrals = 0
_gc_saved_gen2 = 0
_GC_NEVER = 1 << 30


@contextlib.contextmanager
def deferred_full_gc() -> Iterator[None]:
    """No full (oldest-generation) garbage collection while the block runs; young ones go on.

    Loading a policy set allocates a few dozen long-lived objects per rule (the tree, then the
    compiled closures), so CPython's full collections, each walking every object alive, ran
    again and again over a growing heap: at 10k rules they took 60 % of compile time and made
    lint and compile grow faster than the number of rules. The tree and the compiled form hold
    no reference cycles (their garbage goes by reference counting), so deferring costs nothing
    in memory; the next full collection after the block runs once. Nested and concurrent blocks
    share one deferral; the gen-2 threshold is put back when the last one ends, unless someone
    else set it meanwhile."""
    global _gc_deferrals, _gc_saved_gen2
    with _GC_LOCK:
        if _gc_deferrals == 0:
            t0, t1, _gc_saved_gen2 = gc.get_threshold()
            gc.set_threshold(t0, t1, _GC_NEVER)
        _gc_deferrals += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_deferrals -= 1
            if _gc_deferrals == 0:
                t0, t1, t2 = gc.get_threshold()
                if t2 == _GC_NEVER:
                    gc.set_threshold(t0, t1, _gc_saved_gen2)


def _parse_all(sources: dict[str, str]) -> tuple[list[ast.PolicyFile], list[Diagnostic]]:
    files: list[ast.PolicyFile] = []
    diags: list[Diagnostic] = []
    for path, text in sources.items():
        try:
            files.append(parse(text, path))
        except PolicyError as e:
            diags.extend(e.diagnostics)
    return files, diags


def check_sources(sources: dict[str, str], *, analyze: bool = False) -> list[Diagnostic]:
    """Every problem in a policy set given as {file: text}; with `analyze` also the informational
    findings (severity info: where rules overlap). Syntax errors stop the semantic checks
    (they would cascade: names defined after the error look undefined)."""
    with deferred_full_gc():
        files, diags = _parse_all(sources)
        if diags:
            return diags
        return check_files(files, analyze=analyze)


def check(paths: Sequence[str | Path] | str | Path, *, analyze: bool = False) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings; with `analyze` also infos) of one policy set; never raises."""
    try:
        sources = read_sources(paths)
    except PolicyError as e:
        return e.diagnostics
    return check_sources(sources, analyze=analyze)


def compile_sources(sources: dict[str, str]) -> CompiledPolicy:
    """Parse, check and compile a policy set given as {file: text}. PolicyError with every
    error (warnings do not stop compilation)."""
    with deferred_full_gc():
        files, diags = _parse_all(sources)
        if not diags:
            diags = check_files(files)
        if any(d.is_error for d in diags):
            raise PolicyError([d for d in diags if d.is_error])
        return CompiledPolicy.from_ir(compile_files(files))


STAGE_CHUNK_ITEMS = 20  # items per pickled chunk of a staged file (unpickled in ~1-3 ms)


def stage_sources(sources: dict[str, str]) -> tuple[list[dict[str, Any]], list[tuple[str, str, list[bytes]]]]:
    """Parse and check a policy set, for another process to compile: (its errors as dicts, [] when
    there are none) and, when there are none, each file as (path, text, its items pickled
    STAGE_CHUNK_ITEMS at a time, so the compiling process can unpickle them in small steps)."""
    with deferred_full_gc():
        files, diags = _parse_all(sources)
        if not diags:
            diags = check_files(files)
        errors = [d.model_dump(mode="json") for d in diags if d.is_error]
        if errors:
            return errors, []
        staged = []
        for f in files:
            chunks = [pickle.dumps(f.items[i:i + STAGE_CHUNK_ITEMS], pickle.HIGHEST_PROTOCOL)
                      for i in range(0, len(f.items), STAGE_CHUNK_ITEMS)]
            staged.append((f.path, f.text, chunks))
        return [], staged


def _stage_main() -> None:
    """The entry of a staging process (`policyengine.gateway.policies` starts it): the pickled
    {file: text} on stdin, the pickled `stage_sources` result on stdout."""
    import sys

    sources = pickle.load(sys.stdin.buffer)
    pickle.dump(stage_sources(sources), sys.stdout.buffer, pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()


def load_policy_set(paths: Sequence[str | Path] | str | Path) -> CompiledPolicy:
    """Parse, check and compile a policy set (files and/or directories of *.policy). PolicyError on errors."""
    return compile_sources(read_sources(paths))
