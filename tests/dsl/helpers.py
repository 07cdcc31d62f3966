"""Shared helpers for the language tests."""

from __future__ import annotations

from pathlib import Path

from policyengine.dsl import check_sources, compile_sources
from policyengine.dsl.diagnostics import Diagnostic
from policyengine.evaluator import CompiledPolicy

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"

MODELS = """\
policy "t" version 1
model qwen-72b { provider vllm base_url env("QWEN_URL") cost 0 context 32768 }
model gemma-27b { provider ollama base_url env("GEMMA_URL") cost 0 context 8192 }
model kimi-large { provider openai base_url env("KIMI_URL") cost 0.0006 per 1k tokens context 200000 }
model bedrock-llama { provider bedrock region "eu-west-2" model_id "meta.llama3-70b-instruct-v1:0" cost 0.00265 per 1k tokens }
"""


def compile_text(text: str, file: str = "t.policy") -> CompiledPolicy:
    return compile_sources({file: text})


def with_models(rules: str) -> CompiledPolicy:
    return compile_text(MODELS + rules)


def diags(text: str, file: str = "t.policy") -> list[Diagnostic]:
    return check_sources({file: text})
