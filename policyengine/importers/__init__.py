"""Importers: other gateways' configuration files written as a `.policy` set.

- `litellm`: a LiteLLM proxy `config.yaml` (`policyengine import litellm CONFIG.yaml`).

An importer is pure: it reads the configuration's text and returns the policy files' text
and a report of what it could not translate, each note with the line it came from. The CLI
writes the files and lints them.
"""

from __future__ import annotations

__all__: list[str] = []
