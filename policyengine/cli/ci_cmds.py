"""`policyengine test`, `policyengine dry-run`, `policyengine diff`: check a policy change before it ships.

Exit codes: 0 all good; 1 a test failed, coverage is below the minimum, or the
dry-run crossed `--fail-on-change` / `--max-change-share`; 2 bad input (a path,
a URL, a policy or test file that cannot be read).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from policyengine.cli import app, tables

INPUT_ERROR = 2


class TestFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _out() -> Console:
    return tables.console(highlight=False, markup=False)  # not squeezed to 80 columns when piped


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _fail_input(message: str) -> typer.Exit:
    _err().print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(INPUT_ERROR)


def _policy_error_text(exc: Exception) -> str:
    diags = getattr(exc, "diagnostics", None)
    if diags:
        return "\n".join(d.format() for d in diags)
    return str(exc)


def _load_policy(spec: str) -> Any:
    """Load a policy set from a path or REV:PATH; exit 2 with the diagnostics if it does not load."""
    from policyengine.ci.sources import SourceSpecError, materialised
    from policyengine.dsl import PolicyError, load_policy_set

    try:
        with materialised(spec) as paths:
            return load_policy_set(paths)
    except PolicyError as exc:
        raise _fail_input(f"policy {spec} does not load:\n{_policy_error_text(exc)}") from None
    except (SourceSpecError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise _fail_input(f"policy {spec}: {exc}") from None


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text, encoding="utf-8")


def _write_report(renderer: Any, report: Any, fmt: ReportFormat, output: Path | None) -> None:
    """A dry-run or diff report in `fmt`, with `renderer` (its module under policyengine.ci.render),
    to stdout or `output`."""
    if fmt is ReportFormat.json:
        _write(renderer.render_json(report), output)
    elif fmt is ReportFormat.markdown:
        _write(renderer.render_markdown(report), output)
    elif output is None:
        renderer.render_text(report, _out())
    else:
        with output.open("w", encoding="utf-8") as fh:
            renderer.render_text(report, Console(file=fh, width=120, no_color=True, highlight=False, markup=False))


@app.command("test")
def test_cmd(
    path: Annotated[str, typer.Argument(help="A folder (every *.tests.yaml under it), a .policy file or a test file.")],
    min_coverage: Annotated[float | None, typer.Option("--min-coverage", min=0, max=100,
                                                       help="Fail when rule coverage is below N percent.")] = None,
    fmt: Annotated[TestFormat, typer.Option("--format", help="text, json, or github (workflow annotations).")] = TestFormat.text,
    compute_signals: Annotated[bool, typer.Option("--compute-signals", help="Compute signals a test does not supply "
                                                  "(sentiment model, fuzzy mentions) instead of leaving them unset.")] = False,
    match: Annotated[str | None, typer.Option("--match", "-k", help="Only tests whose name contains this text.")] = None,
    junit_xml: Annotated[Path | None, typer.Option("--junit-xml", help="Also write a JUnit XML report here.")] = None,
) -> None:
    """Run the policy tests written beside the policies and report rule coverage."""
    from policyengine.ci.runner import run_tests
    from policyengine.ci.spec import SpecError

    provider = _test_signal_provider(path) if compute_signals else None
    try:
        report = run_tests(path, min_coverage=min_coverage, signal_provider=provider, match=match)
    except (FileNotFoundError, ValueError, SpecError) as exc:
        raise _fail_input(str(exc)) from None
    if not report.sets and not report.file_errors:
        raise _fail_input(f"{path}: no policy test files (*.tests.yaml) found")
    if junit_xml is not None:
        from policyengine.ci.render.junit import render_junit

        junit_xml.write_text(render_junit(report), encoding="utf-8")
    if fmt is TestFormat.json:
        from policyengine.ci.render.tests_report import render_json

        _write(render_json(report), None)
    elif fmt is TestFormat.github:
        from policyengine.ci.render.tests_report import render_github

        _write(render_github(report), None)
    else:
        from policyengine.ci.render.tests_report import render_text

        render_text(report, _out())
    if report.file_errors or any(s.error for s in report.sets):
        raise typer.Exit(INPUT_ERROR)
    if not report.ok:
        raise typer.Exit(1)


def _signal_provider(*policies: Any) -> Any:
    """The default signal provider (`--compute-signals`), after checking that every policy given
    has the optional dependencies of the signals it uses: one using sentiment or
    verify/divergence without the `embeddings` extra exits 2 naming the rule and
    `pip install 'policyengine-llm[embeddings]'`."""
    from policyengine.signals.provider import DefaultSignalProvider
    from policyengine.signals.requirements import EmbeddingsNotInstalled, require_available

    for p in policies:
        if p is None:
            continue
        try:
            require_available(p)
        except EmbeddingsNotInstalled as exc:
            from rich.markup import escape

            raise _fail_input(escape(f"policy {p.name} does not load: {exc}")) from None
    return DefaultSignalProvider()


def _test_signal_provider(path: str) -> Any:
    """`_signal_provider` for `policyengine test --compute-signals`: the policy sets the tests
    under `path` name are loaded and checked first (only when the embedding stack is missing;
    with it installed this costs nothing). Sets that do not load are left to the runner."""
    from policyengine.signals.requirements import EMBEDDING_SIGNALS, missing_modules

    if not missing_modules(EMBEDDING_SIGNALS):
        return _signal_provider()
    from policyengine.ci.spec import SpecError, discover_test_files, load_test_file
    from policyengine.dsl import load_policy_set

    sets: dict[tuple[str, ...], None] = {}
    try:
        for f in discover_test_files(path):
            try:
                sets[tuple(load_test_file(f).policy)] = None
            except SpecError:
                continue
    except (FileNotFoundError, ValueError, SpecError):
        return _signal_provider()  # the runner reports the bad path
    policies = []
    for paths in sets:
        try:
            policies.append(load_policy_set(list(paths)))
        except Exception:  # reported by the runner, with its diagnostics
            continue
    return _signal_provider(*policies)


@app.command("dry-run")
def dry_run_cmd(
    policy: Annotated[str, typer.Option("--policy", help="The candidate policy set: a path or REV:PATH.")],
    against: Annotated[str | None, typer.Option("--against", help="Database URL of the decision log "
                                                "(sqlite:///decisions.db, postgresql://...).")] = None,
    actions: Annotated[Path | None, typer.Option("--actions", help="JSON-lines file of logged decisions or actions.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only decisions at or after this date/time "
                                              "(2026-11-01, 2026-11-01T09:00:00Z, epoch seconds).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's decisions.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only decisions about this action name.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Replay at most N decisions.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Compare against this policy (path or REV:PATH) "
                                                 "re-run on the same inputs, instead of the logged decisions.")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="text, json, or markdown (for a pull-request comment).")] = ReportFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here instead of stdout.")] = None,
    fail_on_change: Annotated[bool, typer.Option("--fail-on-change", help="Exit 1 if any decision would change.")] = False,
    max_change_share: Annotated[float | None, typer.Option("--max-change-share", min=0, max=1,
                                                           help="Exit 1 if more than this share (0.05 = 5%) would change.")] = None,
    examples: Annotated[int, typer.Option("--examples", min=-1, help="Examples kept per kind of change (-1: all).")] = 5,
    changes_out: Annotated[Path | None, typer.Option("--changes-out", help="Write every changed decision to this "
                                                     "JSON-lines file (streamed).")] = None,
    compute_signals: Annotated[bool, typer.Option("--compute-signals", help="Compute signals the log did not record "
                                                  "(counted in the report: not an exact replay).")] = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes replaying in parallel "
                                                "(default: one per CPU for large logs, else 1).")] = None,
    rematch: Annotated[list[str] | None, typer.Option("--rematch-lexicon", help="Drop the logged mention results of "
                                                      "this lexicon and match the logged text again (repeatable). "
                                                      "Automatic for lexicons that differ from --baseline or from "
                                                      "the logged policy versions in the database.")] = None,
    all_policies: Annotated[bool, typer.Option("--all-policies", help="Also replay decisions logged under another "
                                               "policy name (default: only those of the candidate's name).")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="Evaluate every distinct logged input instead of grouping "
                                        "inputs the policies cannot tell apart (slower; same results).")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar on stderr "
                                                  "(default: when stderr is a terminal).")] = None,
) -> None:
    """Replay logged decisions through a candidate policy and report what would change."""
    from policyengine.ci.replay.engine import apply_thresholds, replay
    from policyengine.ci.replay.records import RecordError, parse_since
    from policyengine.ci.replay.sources import DatabaseSource, JsonlSource, SourceError

    if (against is None) == (actions is None):
        raise _fail_input("give exactly one of --against DB_URL or --actions FILE.jsonl")
    try:
        since_ts = parse_since(since) if since else None
    except ValueError as exc:
        raise _fail_input(f"--since: {exc}") from None
    candidate = _load_policy(policy)
    base = _load_policy(baseline) if baseline else None
    try:
        src: Any = (DatabaseSource(against, since=since_ts, tenant=tenant, action=action, limit=limit)
                    if against is not None else
                    JsonlSource(actions, since=since_ts, tenant=tenant, action=action, limit=limit))  # type: ignore[arg-type]
        total = src.estimate()
    except SourceError as exc:
        raise _fail_input(str(exc)) from None

    err = _err()
    show = err.is_terminal if progress is None else progress
    stale = set(rematch or [])
    unknown = stale - set(candidate.lexicons)
    if unknown:
        raise _fail_input(f"--rematch-lexicon: the candidate has no lexicon {sorted(unknown)[0]!r}")
    references = _reference_lexicons(base, src, candidate.name)
    if references:
        from policyengine.ci.replay.engine import changed_lexicons

        stale |= changed_lexicons(candidate, references)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from policyengine.ci.replay.parallel import default_workers, replay_parallel

    if workers is None:
        big = (total or 0) >= 200_000 or (isinstance(src, JsonlSource) and src.bytes_total >= 100_000_000)
        workers = default_workers() if big and limit is None and not compute_signals else 1
    elif limit is not None or compute_signals:
        workers = 1  # a global --limit and a shared signal model need one process
    bar = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), console=err, disable=not show, transient=False)
    by_bytes = total is None and isinstance(src, JsonlSource) and workers == 1
    task = bar.add_task("replay", total=src.bytes_total if by_bytes else total, rate="")
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if by_bytes:
            bar.update(task, completed=src.bytes_read, rate=f"{done:,} decisions")
        else:
            bar.update(task, advance=n)

    try:
        with bar:
            if workers > 1:
                report = replay_parallel(candidate, src, workers=workers, baseline=base, exact=exact,
                                         only_policy=None if all_policies else candidate.name,
                                         rematch_lexicons=frozenset(stale),
                                         max_examples=examples, since=since, changes_out=changes_out,
                                         progress=tick)
            else:
                sink_fh = changes_out.open("wb") if changes_out else None

                def sink(change: dict[str, Any]) -> None:
                    assert sink_fh is not None
                    sink_fh.write(orjson.dumps(change, default=str) + b"\n")

                try:
                    report = replay(candidate, src, baseline=base,
                                    signal_provider=_signal_provider(candidate, base) if compute_signals else None,
                                    exact=exact,
                                    only_policy=None if all_policies else candidate.name,
                                    rematch_lexicons=frozenset(stale),
                                    max_examples=examples, source=src.describe(), since=since,
                                    on_change=sink if sink_fh else None, progress=tick)
                finally:
                    if sink_fh:
                        sink_fh.close()
    except (RecordError, SourceError) as exc:
        raise _fail_input(str(exc)) from None
    finally:
        if isinstance(src, DatabaseSource):
            src.close()
    apply_thresholds(report, fail_on_change=fail_on_change, max_change_share=max_change_share)
    from policyengine.ci.render import dryrun as renderer

    _write_report(renderer, report, fmt, output)
    if report.failed:
        raise typer.Exit(1)


def _reference_lexicons(baseline: Any, src: Any, name: str) -> list[dict[str, list[str]]]:
    """The lexicons the logged decisions were made with: the baseline's, else every version of this
    policy recorded in the database's `policy_versions` table (none for a JSONL file)."""
    if baseline is not None:
        return [dict(baseline.lexicons)]
    engine = getattr(src, "engine", None)
    if engine is None:
        return []
    import sqlalchemy as sa

    from policyengine.ci.rules import parse_sources
    from policyengine.dsl import ast
    from policyengine.store.models import PolicyVersion

    out: list[dict[str, list[str]]] = []
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(PolicyVersion.sources).where(PolicyVersion.name == name)).all()
    except sa.exc.SQLAlchemyError:
        return []
    for (sources,) in rows:
        try:
            files = parse_sources(sources)
        except Exception:  # a version that no longer parses: its lexicons are unknown
            continue
        out.append({i.name.value: [p.value for p in i.phrases] for f in files for i in f.items
                    if isinstance(i, ast.Lexicon)})
    return out


@app.command("diff")
def diff_cmd(
    old: Annotated[str, typer.Argument(help="The current policy set: a path or REV:PATH (e.g. origin/main:policies).")],
    new: Annotated[str, typer.Argument(help="The proposed policy set: a path or REV:PATH.")],
    fmt: Annotated[ReportFormat, typer.Option("--format", help="text, json or markdown.")] = ReportFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here instead of stdout.")] = None,
    exit_code: Annotated[bool, typer.Option("--exit-code", help="Exit 1 when the sets differ (like git diff --exit-code).")] = False,
) -> None:
    """Static comparison of two policy sets: rules added, removed or changed, and whose treatment may change."""
    from policyengine.ci.diff import diff_sets
    from policyengine.ci.sources import SourceSpecError, read_sources
    from policyengine.dsl import PolicyError

    try:
        report = diff_sets(old, read_sources(old), new, read_sources(new))
    except SourceSpecError as exc:
        raise _fail_input(str(exc)) from None
    except PolicyError as exc:
        raise _fail_input(f"policy does not parse:\n{_policy_error_text(exc)}") from None
    from policyengine.ci.render import diff as renderer

    _write_report(renderer, report, fmt, output)
    if exit_code and report.changed:
        raise typer.Exit(1)
