"""Renderers of the CI reports: Rich text, Markdown, JSON, JUnit XML and GitHub workflow commands.

One module per report (`diff`, `dryrun`, `tests_report`) plus the shared formats (`github`,
`junit`); each is imported on its own by the CLI. The package re-exports nothing.
"""

__all__: list[str] = []
