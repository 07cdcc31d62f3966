"""examples/deploy/ stays consistent with the code it deploys.

No Docker or Kubernetes here: these checks read the files and hold them against
the real settings classes, the policy checker and the CLI, so that a renamed
setting, a policy that no longer lints or a missing env var breaks the build
instead of a deployment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from policyengine.approvals.settings import ApprovalSettings
from policyengine.dsl import check, load_policy_set
from policyengine.settings import Settings
from policyengine.types import EnvRef

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "examples" / "deploy"
K8S = DEPLOY / "k8s"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _known_env() -> set[str]:
    names = {f"POLICYENGINE_{n.upper()}" for n in Settings.model_fields}
    names |= {f"POLICYENGINE_APPROVALS_{n.upper()}" for n in ApprovalSettings.model_fields}
    return names


def _env_refs(policy: Any) -> set[str]:
    refs: set[str] = set()
    for spec in policy.models.values():
        for v in (spec.base_url, spec.project, *spec.keys, *spec.headers.values()):
            if isinstance(v, EnvRef):
                refs.add(v.name)
    return refs


def test_deploy_policies_lint_clean_and_load() -> None:
    diags = check([DEPLOY / "policies"])
    assert [d.format() for d in diags if d.severity == "error"] == []
    policy = load_policy_set([DEPLOY / "policies"])
    assert {"qwen-72b", "gemma-9b", "llama-local", "bedrock-llama"} <= set(policy.models)
    bedrock = policy.models["bedrock-llama"]
    assert bedrock.provider.value == "bedrock" and not bedrock.self_hosted
    assert all(policy.models[m].self_hosted for m in ("qwen-72b", "gemma-9b", "llama-local"))  # cost 0
    # every chain that starts on self-hosted GPUs ends on the managed fallback or stays internal
    from policyengine.types import Action

    for use_case in (None, "code", "summarisation", "classification"):
        chain = policy.route(Action(action="chat", use_case=use_case)).chain
        assert chain[-1] == "bedrock-llama", (use_case, chain)


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_every_policy_env_reference_is_provided(where: str) -> None:
    refs = _env_refs(load_policy_set([DEPLOY / "policies"]))
    if where == "compose":
        env = set(_compose()["x-policyengine"]["environment"])
    else:
        env = set()
        for d in _k8s_docs():
            if d.get("kind") == "Deployment" and d["metadata"]["name"] == "policyengine":
                c = d["spec"]["template"]["spec"]["containers"][0]
                env |= {e["name"] for e in c.get("env", [])}
        secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
        env |= set(secret["stringData"])
    assert refs - env == set(), f"{where}: the policy reads env vars nobody sets: {sorted(refs - env)}"


def test_every_policyengine_setting_used_exists() -> None:
    known = _known_env()
    texts = [(DEPLOY / "docker-compose.yml").read_text(), (DEPLOY / ".env.example").read_text(),
             (DEPLOY / "Dockerfile").read_text(), *(f.read_text() for f in K8S.glob("*.yaml")),
             (ROOT / "docs" / "deployment.md").read_text()]
    used = {m for t in texts for m in re.findall(r"\b(POLICYENGINE_[A-Z0-9_]+)", t)}
    used = {u for u in used if not u.endswith("_")}  # prose about a prefix, e.g. POLICYENGINE_APPROVALS_SMTP_*
    used -= {"POLICYENGINE_SETTINGS_FILE"}  # read by the settings loader itself
    assert used - known == set(), f"settings that do not exist: {sorted(used - known)}"


def test_compose_stack_shape() -> None:
    c = _compose()
    services = c["services"]
    replicas = [n for n in services if n.startswith("policyengine-")]
    assert len(replicas) == 2
    for n in replicas:
        env = services[n]["environment"]
        assert env["POLICYENGINE_REDIS_URL"].startswith("redis://")
        assert env["POLICYENGINE_DATABASE_URL"].startswith("postgresql")
        assert env["POLICYENGINE_MIGRATE_ON_START"] == "false"
        assert services[n]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"]
    assert {"postgres", "redis", "proxy", "vllm-qwen", "vllm-gemma", "ollama"} <= set(services)
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    for n in replicas:
        assert f"server {n}:8000" in conf
    assert "proxy_buffering off" in conf  # streamed chat completions


def test_k8s_manifests_shape() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    for f in kust["configMapGenerator"][0]["files"]:
        assert (K8S / f).resolve().is_file(), f
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs() if "metadata" in d}
    dep = docs[("Deployment", "policyengine")]["spec"]
    assert dep["replicas"] == 2
    c = dep["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["envFrom"][0]["secretRef"]["name"] == "policyengine-secrets"
    assert {"name": "policies", "configMap": {"name": "policies"}} in dep["template"]["spec"]["volumes"]
    job = docs[("Job", "policyengine-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    assert ("HorizontalPodAutoscaler", "policyengine") in docs
    assert ("Service", "policyengine") in docs


def test_probe_and_cli_names_exist() -> None:
    from policyengine.api.app import discover_routes
    from policyengine.cli import app

    paths = {getattr(r, "path", None) for router in discover_routes()[0] for r in router.routes}
    assert {"/readyz", "/healthz", "/metrics"} <= paths
    commands = {c.name for c in app.registered_commands}
    assert {"serve", "migrate", "lint", "demo", "verify-log"} <= commands


def test_a_configmap_mount_loads_the_same_policy(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as symlinks into a hidden timestamped directory; the
    replicas must load exactly the policy set (same hash) that CI linted."""
    stamp = tmp_path / "..2026_11_25_19_00_00.123456789"
    stamp.mkdir()
    for f in (DEPLOY / "policies").glob("*.policy"):
        (stamp / f.name).write_text(f.read_text())
        (tmp_path / f.name).symlink_to(Path("..data") / f.name)
    (tmp_path / "..data").symlink_to(stamp.name)
    mounted, linted = load_policy_set([tmp_path]), load_policy_set([DEPLOY / "policies"])
    assert mounted.hash == linted.hash
    assert set(mounted.models) == set(linted.models)
