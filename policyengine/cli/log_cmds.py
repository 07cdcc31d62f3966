"""Decision log commands: `policyengine verify-log`, `policyengine log checkpoint`, and the anchors
`verify-log` checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from policyengine.cli import app
from policyengine.cli.service_cmds import SettingsOpt, _db_url, out

console = Console(stderr=True)

log_app = typer.Typer(help="Decision log: signed checkpoints that anchor its head outside the database.",
                      no_args_is_help=True)
app.add_typer(log_app, name="log")

KeyEnvOpt = Annotated[str, typer.Option("--key-env", help="environment variable holding the checkpoint HMAC key")]


def anchors_from_options(expect_head: list[str] | None, checkpoints: list[Path] | None, key_env: str) -> list:
    """The anchors named on the command line (`--expect-head HASH[:COUNT]`, `--checkpoint FILE`).
    Exits 2 with the reason when one cannot be used (malformed, unreadable, no key, bad signature)."""
    from policyengine.store.chain import Anchor
    from policyengine.store.checkpoint import CheckpointError, checkpoint_key, read_checkpoint

    anchors = []
    for text in expect_head or []:
        try:
            anchors.append(Anchor.parse(text, source=f"--expect-head {text}"))
        except ValueError as exc:
            console.print(f"[red]--expect-head:[/red] {exc}")
            raise typer.Exit(2)
    if checkpoints:
        try:
            key = checkpoint_key(key_env)
            for path in checkpoints:
                try:
                    text_b = path.read_bytes()
                except OSError as exc:
                    raise CheckpointError(f"cannot read {path}: {exc}") from None
                anchors.extend(read_checkpoint(text_b, key, source=f"checkpoint {path}"))
        except CheckpointError as exc:
            console.print(f"[red]checkpoint refused:[/red] {exc}")
            raise typer.Exit(2)
    return anchors


@log_app.command("checkpoint")
def checkpoint(
    db_url: Annotated[str | None, typer.Argument(help="database URL (default: from settings)")] = None,
    settings_file: Annotated[str | None, typer.Option("--settings", "-s", help="settings file",
                                                      envvar="POLICYENGINE_SETTINGS_FILE")] = None,
    key_env: KeyEnvOpt = "POLICYENGINE_CHECKPOINT_KEY",
    out: Annotated[Path | None, typer.Option("--out", help="also write it to this new file (never overwritten)")] = None,
) -> None:
    """Verify the log, then print a signed checkpoint of its heads (one JSON line).

    Keep checkpoints outside the database (an append-only store, a ticket, another system);
    `verify-log --checkpoint FILE` then fails if the log no longer holds that head at that count.
    Exit 0: printed; 1: the log does not verify (nothing printed); 2: no key or cannot read."""
    from policyengine.store import make_sync_engine, verify_chain
    from policyengine.store.checkpoint import CheckpointError, checkpoint_key, make_checkpoint

    url = _db_url(db_url, settings_file)
    try:
        key = checkpoint_key(key_env)
    except CheckpointError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    engine = make_sync_engine(url)
    try:
        res = verify_chain(engine)
    except Exception as exc:
        console.print(f"[red]cannot read the decision log:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2)
    finally:
        engine.dispose()
    try:
        cp = make_checkpoint(res, key)
    except CheckpointError as exc:
        console.print(f"[red]BROKEN[/red] {exc}")
        raise typer.Exit(1)
    line = json.dumps(cp, sort_keys=True)
    if out is not None:
        try:
            with out.open("x") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            console.print(f"[red]cannot write {out}:[/red] {exc}")
            raise typer.Exit(2)
    typer.echo(line)


@app.command("verify-log")
def verify_log(
    db_url: Annotated[str | None, typer.Argument(help="database URL (default: from settings)")] = None,
    settings_file: SettingsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    expect_head: Annotated[list[str] | None, typer.Option(
        "--expect-head", help="HASH: the log's head must be HASH; HASH:COUNT: row COUNT must have hash HASH "
                              "(the log may have grown since). Repeatable")] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        "--checkpoint", help="a signed checkpoint file (`policyengine log checkpoint`): the log must hold its "
                             "heads at its counts and continue intact from them. Repeatable")] = None,
    key_env: Annotated[str, typer.Option("--key-env", help="environment variable holding the checkpoint key")]
        = "POLICYENGINE_CHECKPOINT_KEY",
) -> None:
    """Verify the decision log's and the approval events' hash chains, and any anchors given;
    report the first broken row. Exit 0: OK; 1: broken or an anchor fails; 2: cannot read."""
    from policyengine.store import make_sync_engine, verify_chain

    url = _db_url(db_url, settings_file)
    anchors = anchors_from_options(expect_head, checkpoint, key_env)
    engine = make_sync_engine(url)
    try:
        res = verify_chain(engine, anchors)
    except Exception as exc:
        console.print(f"[red]cannot read the decision log:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2)
    finally:
        engine.dispose()
    if as_json:
        out.print_json(json.dumps(res.__dict__))
    elif res.ok:
        anchored = f"; {res.anchors_checked} anchor(s) hold" if res.anchors_checked else ""
        legacy = f" (+{res.approval_events_unchained} from before chaining)" if res.approval_events_unchained else ""
        out.print(f"[green]OK[/green] {res.rows} decisions, chain intact; head seq {res.head_seq} "
                  f"hash {res.head_hash}\n   {res.approval_events} approval events{legacy}, chain intact; head seq "
                  f"{res.approval_head_seq} hash {res.approval_head_hash}{anchored}")
    elif res.first_bad_seq is None and res.first_bad_id is None:
        out.print(f"[red]BROKEN[/red] {res.table or 'decisions'}: {res.problem}")
    else:
        good = res.rows if res.table == "decisions" else res.approval_events
        out.print(f"[red]BROKEN[/red] {res.table} after {good} good rows: first bad row seq={res.first_bad_seq} "
                  f"id={res.first_bad_id}\n  {res.problem}")
    for d in res.details:
        out.print(f"  {d}")
    if res.ok and not res.anchors_checked and not as_json:
        console.print("not anchored: a log emptied or rewritten together with its head would read the same; "
                      "check against --checkpoint FILE (policyengine log checkpoint) or --expect-head HASH:COUNT")
    raise typer.Exit(0 if res.ok else 1)
