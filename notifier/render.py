"""Jinja2 rendering with per-deployment overrides.

Templates are looked up first in the deployment's directory
(``POLICYENGINE_APPROVALS_TEMPLATES_DIR``), then in the built-ins in ``notifier/templates/``.
Names ending in ``.html.j2`` are autoescaped; text templates are not (they are
never shown as HTML). Slack mrkdwn goes through the ``slack`` filter, which
escapes ``& < >`` as Slack requires, so action data cannot inject links or mentions.
``letter`` labels answers (0 -> A), ``clip(n)`` cuts long text (prompts, answers) with a note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined


def _autoescape(name: str | None) -> bool:
    return bool(name) and (name.endswith(".html.j2") or name.endswith(".html"))


def slack_escape(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def letter(index: int) -> str:
    """The label of the answer at 0-based `index`: A, B, ... Z, then 27, 28, ..."""
    return chr(ord("A") + index) if 0 <= index < 26 else str(index + 1)


def clip(value: Any, limit: int = 4000) -> str:
    """`value` as text, cut to `limit` characters with a note of how much was left out."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters: see the review page]"


def _tojson_pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


class TemplateRenderer:
    def __init__(self, override_dir: str | Path | None = None, *, package: str = "policyengine.notifier") -> None:
        loaders = []
        if override_dir is not None:
            path = Path(override_dir)
            if not path.is_dir():
                raise ValueError(f"templates override directory does not exist: {path}")
            loaders.append(FileSystemLoader(str(path)))
        loaders.append(PackageLoader(package, "templates"))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=_autoescape,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["slack"] = slack_escape
        self.env.filters["pretty"] = _tojson_pretty
        self.env.filters["letter"] = letter
        self.env.filters["clip"] = clip

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context).strip()
