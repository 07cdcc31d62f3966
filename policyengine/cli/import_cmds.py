"""`policyengine import litellm CONFIG.yaml [-o DIR]`: another gateway's configuration as a policy set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from policyengine.cli import app
from policyengine.dsl import check
from policyengine.importers.litellm import import_litellm

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

import_app = typer.Typer(help="Import another gateway's configuration as a .policy set.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("litellm")
def import_litellm_cmd(
    config: Annotated[Path, typer.Argument(help="A LiteLLM proxy config.yaml.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the .policy set into.")]
    = Path("litellm-policies"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files already in the directory.")] = False,
) -> None:
    """Write CONFIG's models, fallback chains, tag routes and key allowlists as a policy set in DIR
    (models.policy, routing.policy, import-report.txt), lint it, and list, by line, what could not
    be translated. Exit 1 when the result does not lint clean (errors), 2 on an unreadable config."""
    try:
        text = config.read_text(encoding="utf-8")
    except OSError as e:
        err.print(f"cannot read {config}: {e}")
        raise typer.Exit(2)
    try:
        res = import_litellm(text, config.name)
    except yaml.YAMLError as e:
        err.print(f"{config}: not YAML: {e}")
        raise typer.Exit(2)
    if not res.files:
        for n in res.notes:
            err.print(f"{config}:{n.line}: {n.key}: {n.message}")
        err.print("nothing to import")
        raise typer.Exit(1)
    output.mkdir(parents=True, exist_ok=True)
    names = [*res.files, "import-report.txt"]
    clash = [n for n in names if (output / n).exists()]
    if clash and not force:
        err.print(f"{output} already has {', '.join(clash)}: pass --force to overwrite")
        raise typer.Exit(2)
    for name, body in res.files.items():
        (output / name).write_text(body, encoding="utf-8")
    report = [f"{config.name}:{n.line}: {n.key}: {n.message}" for n in res.notes]
    (output / "import-report.txt").write_text("\n".join(report) + ("\n" if report else ""), encoding="utf-8")
    out.print(f"wrote {', '.join(str(output / n) for n in res.files)}")
    if report:
        out.print(f"not translated ({len(report)}; also in {output / 'import-report.txt'}):")
        for line in report:
            out.print(f"  {line}")
    diags = check([output])
    errors = [d for d in diags if d.is_error]
    for d in diags:
        (err if d.is_error else out).print(d.format())
    if errors:
        err.print(f"the imported set does not lint clean: {len(errors)} error(s)")
        raise typer.Exit(1)
    out.print(f"lint: ok ({len(diags)} warning(s))")
