"""`policyengine signals eval` and `policyengine signals calibrate`: the detectors on your own labelled data.

Both read JSON Lines (the format is in `policyengine.signals.evaluate` and
docs/signals.md): messages labelled with `sentiment` and/or `mentions`, answer pairs
labelled `divergent`. `--policy` takes the lexicons and the thresholds from a policy set
(the first `sentiment < N` and `divergence > N` it finds); without it the shipped
support-desk lexicon and the defaults 0.3 and 0.25 are used.

Exit codes: 0 measured; 2 bad input (a file that cannot be read, a malformed line, a
policy that does not load).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from policyengine.cli import app

signals_app = typer.Typer(help="Measure the escalation signals on labelled data and propose thresholds.",
                          no_args_is_help=True)
app.add_typer(signals_app, name="signals")

INPUT_ERROR = 2


class Format(StrEnum):
    text = "text"
    json = "json"


def _settings(policy: str | None) -> tuple[dict[str, list[str]] | None, float, float]:
    if policy is None:
        return None, 0.3, 0.25
    from policyengine.dsl import PolicyError, load_policy_set

    try:
        compiled = load_policy_set([policy])
    except (PolicyError, OSError) as exc:
        diags = getattr(exc, "diagnostics", None)
        text = "\n".join(d.format() for d in diags) if diags else str(exc)
        Console(stderr=True).print(f"error: policy {policy} does not load:\n{text}", markup=False)
        raise typer.Exit(INPUT_ERROR) from exc
    sources = [getattr(r, "source", "") or "" for plan in [*compiled.plans.values(), compiled.global_plan]
               if plan is not None for r in (*plan.denies, *plan.holds, *plan.authorizes)]
    sent = next((float(m.group(1)) for s in sources if (m := re.search(r"sentiment\s*<\s*([0-9.]+)", s))), 0.3)
    div = next((float(m.group(1)) for s in sources if (m := re.search(r"divergence\s*>\s*([0-9.]+)", s))), 0.25)
    return {k: list(v) for k, v in compiled.lexicons.items()}, sent, div


def _load(data: list[Path]) -> list[dict[str, Any]]:
    from policyengine.signals.evaluate import DataError, load_rows

    try:
        return load_rows(data)
    except DataError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False)
        raise typer.Exit(INPUT_ERROR) from exc


def _provider() -> Any:
    from policyengine.signals import DefaultSignalProvider

    return DefaultSignalProvider()


DataOpt = Annotated[list[Path], typer.Option("--data", help="labelled JSONL file (repeatable)")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="policy file or directory: lexicons and thresholds")]
FormatOpt = Annotated[Format, typer.Option("--format", help="text or json")]


def _fmt_metrics(name: str, m: dict[str, Any], out: Console) -> None:
    out.print(f"{name}: balanced accuracy {m['balanced_accuracy']:.3f}  precision {m['precision']:.3f}  "
              f"recall {m['recall']:.3f}  (tp {m['tp']} fp {m['fp']} tn {m['tn']} fn {m['fn']}, n {m['n']})")
    tags = m.get("per_tag", {})
    if tags:
        out.print("  per tag: " + ", ".join(f"{t} {c['correct']}/{c['n']}" for t, c in tags.items()))


def _report(run: Any, data: list[Path], policy: str | None, fmt: Format) -> tuple[dict[str, Any] | None, Console]:
    """Run `run` (evaluate or calibrate) on the labelled rows; print JSON and return None for
    `--format json`, else return the report with its heading printed. Bad data exits 2."""
    from policyengine.signals.evaluate import DataError

    rows = _load(data)
    lexicons, sent, div = _settings(policy)
    try:
        report = run(rows, _provider(), lexicons=lexicons, sentiment_threshold=sent, divergence_threshold=div)
    except DataError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False)
        raise typer.Exit(INPUT_ERROR) from exc
    out = Console(highlight=False, markup=False, width=200)
    if fmt is Format.json:
        out.print(json.dumps(report, indent=2, sort_keys=True), soft_wrap=True)
        return None, out
    out.print(f"{report['rows']} labelled rows")
    return report, out


@signals_app.command("eval")
def eval_cmd(data: DataOpt, policy: PolicyOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Balanced accuracy, precision, recall, confusion and per-tag counts of every detector the labels call for."""
    from policyengine.signals.evaluate import evaluate

    report, out = _report(evaluate, data, policy, fmt)
    if report is None:
        return
    if "sentiment" in report:
        _fmt_metrics(f"sentiment ({report['sentiment']['decision']} escalates)", report["sentiment"], out)
    for key, modes in report.items():
        if key.startswith("mentions:"):
            for mode, m in modes.items():
                _fmt_metrics(f"text {key.replace(':', ' ', 1).replace('mentions', 'mentions', 1)} by {mode}", m, out)
    if "divergence" in report:
        _fmt_metrics(f"divergence ({report['divergence']['decision']} escalates)", report["divergence"], out)


@signals_app.command("calibrate")
def calibrate_cmd(data: DataOpt, policy: PolicyOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Propose thresholds (maximal balanced accuracy on the data) beside the current ones."""
    from policyengine.signals.evaluate import calibrate

    report, out = _report(calibrate, data, policy, fmt)
    if report is None:
        return
    for key, e in report.items():
        if key == "rows":
            continue
        out.print(f"{key}: current {e['current']} (balanced accuracy {e['current_balanced_accuracy']:.3f}) -> "
                  f"proposed {e['proposed']} (balanced accuracy {e['proposed_balanced_accuracy']:.3f}, precision "
                  f"{e['proposed_precision']:.3f}, recall {e['proposed_recall']:.3f}): {e['rule']}")
    out.print("Proposals fit this data: check them on data you did not calibrate on before shipping.")
