"""`policyengine lsp`: the policy language server over stdio (the `lsp` extra: pygls)."""

from __future__ import annotations

import typer

from policyengine.cli import app


@app.command("lsp")
def lsp() -> None:
    """Run the language server for `.policy` files on stdin/stdout (diagnostics as you type, hover,
    go to definition, completion, formatting). Editors start it; see docs/editors.md."""
    try:
        from policyengine.lsp.server import main
    except ImportError as e:  # pygls is an extra
        typer.echo(f"policyengine lsp needs the lsp extra: pip install 'policyengine-llm[lsp]' ({e})", err=True)
        raise typer.Exit(2) from None
    main()
