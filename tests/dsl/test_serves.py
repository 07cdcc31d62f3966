"""`serves [chat, embeddings]`: what a model answers, and the routes that may use it."""

from __future__ import annotations

from policyengine.dsl import check_sources, compile_sources, format_source
from policyengine.types import Action

MODELS = """
policy "s" version 1
model chat-a { provider openai base_url env("A") }
model emb-a { provider openai base_url env("B") serves [embeddings] }
model both { provider openai base_url env("C") serves [chat, embeddings] }
"""


def _codes(src: str) -> list[str]:
    return [d.code for d in check_sources({"s.policy": MODELS + src}) if d.is_error]


def test_chat_and_embeddings_are_routed_apart():
    p = compile_sources({"s.policy": MODELS + """
route default -> chat-a fallback [both]
route default -> emb-a fallback [both]
route when use_case == "x" -> both
"""})
    assert p.evaluate(Action(action="chat", tenant="t")).routing.chain == ["chat-a", "both"]
    assert p.evaluate(Action(action="embeddings", tenant="t")).routing.chain == ["emb-a", "both"]
    # a route whose primary serves both serves both kinds, each inheriting its own default's chain
    assert p.evaluate(Action(action="chat", tenant="t", use_case="x")).routing.chain == ["both", "chat-a"]
    assert p.evaluate(Action(action="embeddings", tenant="t", use_case="x")).routing.chain == ["both", "emb-a"]
    assert p.models["emb-a"].serves == ("embeddings",) and p.models["chat-a"].serves == ("chat",)


def test_embeddings_without_an_embedding_route_are_denied_with_the_reason():
    p = compile_sources({"s.policy": MODELS + "route default -> chat-a\n"})
    d = p.evaluate(Action(action="embeddings", tenant="t"))
    assert d.effect == "deny" and "serves [embeddings]" in " ".join(d.rules[-1].because)


def test_checker_refuses_mixed_chains_and_unknown_kinds():
    assert _codes("route default -> chat-a fallback [emb-a]\n") == ["E217"]
    assert _codes("route default -> emb-a fallback [chat-a]\n") == ["E217"]
    assert _codes("route default -> chat-a\nroute default -> emb-a\n") == []  # one default per kind
    assert _codes("route default -> chat-a\nroute default -> both\n") == ["E212"]
    assert _codes('model bad { provider openai base_url env("D") serves [embedings] }\n') == ["E216"]
    assert _codes("verify when use_case == \"x\" with chat-a, emb-a { escalate when divergence > 0.3 }\n"
                  "route default -> chat-a\n") == ["E217"]


def test_serves_round_trips_through_the_formatter():
    out = format_source(MODELS, "s.policy")
    assert "serves [chat, embeddings]" in out and "serves [embeddings]" in out
