"""The policy language server (`policyengine lsp`): diagnostics, hover, definitions, formatting
and completion for `.policy` files, over stdio (pygls, the `lsp` extra).

`analysis` is the pure part (a policy set's text in, diagnostics / symbols / hovers out);
`server` wires it to the Language Server Protocol.
"""
