"""`policyengine import litellm`: a LiteLLM proxy config written the way LiteLLM's docs show it
(model_list with provider prefixes and os.environ keys, router fallbacks, context-window and
content-policy fallbacks, tags, per-key model lists) becomes a policy set that lints clean and
evaluates as the config meant; what cannot be translated is reported with its line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from policyengine.cli import app
from policyengine.dsl import check, load_policy_set
from policyengine.importers.litellm import import_litellm
from policyengine.types import Action

CONFIG = Path(__file__).parents[1] / "data" / "litellm" / "config.yaml"


def _imported(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "policies"
    res = CliRunner().invoke(app, ["import", "litellm", str(CONFIG), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_import_lints_clean_and_reports_by_line(tmp_path):
    out, output = _imported(tmp_path)
    assert "lint: ok" in output
    assert [d for d in check([out]) if d.is_error] == []
    models = (out / "models.policy").read_text()
    # os.environ/KEY -> env("KEY"); api_base -> base_url; provider prefixes -> providers
    assert 'keys [env("OPENAI_API_KEY")]' in models and 'base_url env("VLLM_API_BASE")' in models
    assert "provider vllm" in models and "provider bedrock" in models and "provider vertex" in models
    assert 'base_url "http://ollama.internal:11434/v1"' in models  # ollama's OpenAI-compatible API
    assert "serves [embeddings]" in models
    assert 'provider anthropic\n  base_url "https://api.anthropic.com"' in models
    assert "sk-literal" not in models  # a literal key is never copied
    report = (out / "import-report.txt").read_text().splitlines()
    lines = CONFIG.read_text().splitlines()
    for entry in report:
        _, line, key, _ = entry.split(":", 3)
        leaf = key.strip().split(".")[-1]
        assert leaf in lines[int(line) - 1], entry  # each note points at the line it is about
    keys = {e.split(":", 3)[2].strip() for e in report}
    assert {"litellm_params.rpm", "router_settings.routing_strategy", "litellm_settings.success_callback",
            "general_settings.master_key", "litellm_params.api_key"} <= keys
    # running it again over the same directory needs --force
    again = CliRunner().invoke(app, ["import", "litellm", str(CONFIG), "-o", str(out)])
    assert again.exit_code == 2


def test_imported_policy_evaluates_as_the_config_meant(tmp_path):
    out, _ = _imported(tmp_path)
    policy = load_policy_set([out])

    def chain(**kw):
        d = policy.evaluate(Action(tenant="acme", **{"action": "chat", **kw}))
        assert d.effect == "allow", d
        return d.routing.chain, d.allowed_models

    # router fallbacks (+ content-policy fallbacks) after both deployments of gpt-4o
    assert chain(requested_model="gpt-4o")[0] == ["gpt-4o", "gpt-4o-2", "claude-bedrock", "gemini-pro"]
    # context-window fallbacks join the chain; default_fallbacks for a model without its own
    assert chain(requested_model="llama-3.1-70b")[0] == ["llama-3.1-70b", "claude-bedrock", "gpt-4o", "gpt-4o-2"]
    assert chain(requested_model="claude-bedrock")[0] == ["claude-bedrock"]
    # tags -> use-case routes
    assert chain(use_case="free")[0] == ["llama-3.1-70b", "qwen2.5"]
    # per-key model lists -> allowlists keyed on the key's role
    assert set(chain(actor_role="support-bot")[1]) == {"gpt-4o", "qwen2.5"}
    assert "gemini-pro" in chain()[1]
    # embeddings are routed to the embedding models only
    d = policy.evaluate(Action(action="embeddings", tenant="acme", requested_model="text-embedding-3-small"))
    assert d.effect == "allow" and d.routing.chain == ["text-embedding-3-small", "nomic-embed"]
    # and the CLI's eval reads the set
    actions = tmp_path / "a.json"
    actions.write_text(json.dumps({"action": "chat", "tenant": "acme", "requested_model": "gpt-4o"}))
    res = CliRunner().invoke(app, ["eval", str(out), "-i", str(actions), "-f", "json", "--no-signals"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["routing"]["chain"][0] == "gpt-4o"


def test_what_cannot_be_imported_is_said():
    res = import_litellm("model_list:\n  - model_name: x\n    litellm_params:\n      model: cohere/command-r\n")
    assert res.files == {}
    assert res.notes[0].line == 4 and "cohere" in res.notes[0].message
    res = import_litellm("general_settings: {}\n")
    assert res.files == {} and res.notes[0].key == "model_list"
