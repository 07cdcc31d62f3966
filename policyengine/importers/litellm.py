"""A LiteLLM proxy `config.yaml` as a `.policy` set (`import_litellm(text)`).

What is translated:

- `model_list` -> one `model` per deployment. The deployment's `model_name` is the policy's
  name (sanitised to the language's names; a second deployment of the same name becomes
  `NAME-2`, tried after the first); `litellm_params.model`'s provider prefix picks the
  provider (`openai/`, `hosted_vllm/`, `ollama/`, `ollama_chat/`, `lm_studio/`,
  `huggingface/` (TGI), `bedrock/`, `vertex_ai/`, `azure/`, and the OpenAI-compatible hosted
  APIs: `groq/`, `together_ai/`, `mistral/`, `deepseek/`, `fireworks_ai/`, `openrouter/`,
  `xai/`, `perplexity/`; `anthropic/` (and a bare `claude-...`) -> `provider anthropic`) and
  the rest is the `model_id`; `api_base` -> `base_url`;
  `os.environ/KEY` -> `env("KEY")` (a literal key is never copied: an `env()` reference takes
  its place and the report says which variable to set); `model_info.mode: embedding` ->
  `serves [embeddings]`; `max_input_tokens` -> `context`; `input_cost_per_token` -> `cost`;
  `timeout` -> `timeout total`.
- `fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks` (in `router_settings` or
  `litellm_settings`), `default_fallbacks` -> the model chains: one
  `route when requested_model == "NAME" -> NAME fallback [...]` per model (a model with no
  fallbacks gets `fallback []`, as in LiteLLM), and `route default` for model `auto`.
- `litellm_params.tags` -> `route when use_case == "TAG" -> ...` (tag `default`: the default route).
- Allowlists: every model may be chosen, as in LiteLLM; `default_key_generate_params.models`
  narrows that; per-key model lists (`keys:` at the top level or in `general_settings`, each
  `{key_alias, models}` as LiteLLM's `/key/generate` takes them; `model_info.access_groups`
  expanded) -> `allow model choice [...] when user.role == "ALIAS"` (the key is then created
  with `--attr actor_role=ALIAS`).

Everything else (rate limits, callbacks, caching, budgets, the master key, ...) is reported,
with its line, as not translated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policyengine.dsl.parser import escape

__all__ = ["ImportResult", "Note", "import_litellm"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*([.\-/][A-Za-z0-9_]+)*$")
ENV_PREFIX = "os.environ/"

# provider prefix -> (policy provider, default base URL or None when api_base is required)
PREFIXES: dict[str, tuple[str, str | None]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "hosted_vllm": ("vllm", None),
    "vllm": ("vllm", None),
    "ollama": ("ollama", "http://localhost:11434"),
    "ollama_chat": ("ollama", "http://localhost:11434"),
    "lm_studio": ("lmstudio", "http://localhost:1234/v1"),
    "huggingface": ("tgi", None),
    "groq": ("openai", "https://api.groq.com/openai/v1"),
    "together_ai": ("openai", "https://api.together.xyz/v1"),
    "mistral": ("openai", "https://api.mistral.ai/v1"),
    "deepseek": ("openai", "https://api.deepseek.com/v1"),
    "fireworks_ai": ("openai", "https://api.fireworks.ai/inference/v1"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1"),
    "xai": ("openai", "https://api.x.ai/v1"),
    "perplexity": ("openai", "https://api.perplexity.ai"),
    "azure": ("openai", None),
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "bedrock": ("bedrock", None),
    "vertex_ai": ("vertex", None),
}
_CHAT_MODES = (None, "chat", "completion", "responses")
_LP_USED = {"model", "api_key", "api_base", "api_version", "aws_region_name", "vertex_project", "vertex_location",
            "tags", "timeout", "input_cost_per_token", "max_input_tokens"}
_MI_USED = {"mode", "max_input_tokens", "input_cost_per_token", "access_groups"}
_FALLBACK_KEYS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


@dataclass(frozen=True)
class Note:
    """One thing the import could not translate (or translated differently): where and why."""

    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.key}: {self.message}"


@dataclass
class ImportResult:
    """The policy files (name -> text) and the notes, in the configuration's line order."""

    files: dict[str, str]
    notes: list[Note] = field(default_factory=list)


@dataclass
class _Model:
    name: str
    group: str
    line: int
    props: list[str]
    serves: str  # "chat" | "embeddings"
    tags: list[str]
    access_groups: list[str]
    tags_line: int = 0


# ------------------------------------------------------------------------------ YAML with lines


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _items(node: Node | None) -> list[tuple[str, Node, Node]]:
    """A mapping's (key, key node, value node) in order ([] for anything else)."""
    if not isinstance(node, MappingNode):
        return []
    return [(str(k.value), k, v) for k, v in node.value if isinstance(k, ScalarNode)]


def _get(node: Node | None, key: str) -> Node | None:
    return next((v for k, _, v in _items(node) if k == key), None)


def _py(node: Node | None) -> Any:
    if node is None:
        return None
    return yaml.safe_load(yaml.serialize(node))


def _strs(node: Node | None) -> list[str]:
    v = _py(node)
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v] if isinstance(v, list) else []


# ------------------------------------------------------------------------------ the import


class _Importer:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.notes: list[Note] = []
        self.root: Node | None = yaml.compose(text)
        self.models: list[_Model] = []
        self.groups: dict[str, list[_Model]] = {}  # model_name -> its deployments, in order
        self.taken: set[str] = set()
        self.default_fallbacks: Node | None = None

    def note(self, node: Node | None, key: str, message: str) -> None:
        self.notes.append(Note(_line(node) if node is not None else 1, key, message))

    # -------------------------------------------------------------- values
    def strval(self, node: Node, key: str, env_hint: str, *, secret: bool = False) -> str:
        """A policy string value: `env("X")` for `os.environ/X`; a literal secret becomes an env
        reference named `env_hint` (reported)."""
        v = _py(node)
        s = "" if v is None else str(v)
        if s.startswith(ENV_PREFIX):
            return f"env({escape(s[len(ENV_PREFIX):])})"
        if secret:
            self.note(node, key, f"a literal secret is never written into a policy: it became env(\"{env_hint}\"); "
                                 f"set {env_hint} in the environment (or the secrets file)")
            return f"env({escape(env_hint)})"
        return escape(s)

    def policy_name(self, group: str, node: Node) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\-/]+", "-", group).strip("-./") or "model"
        base = re.sub(r"[.\-/]{2,}", "-", base)
        if not base[0].isalpha() and base[0] != "_":
            base = "m-" + base
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}-{n}"
        if not _NAME_RE.match(name):
            name = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if name != group and group not in self.groups:
            self.note(node, "model_name", f"{group!r} is called `{name}` in the policy (policy names are letters, "
                                          f"digits, _ and single . - / between them): clients request `{name}`")
        self.taken.add(name)
        return name

    # -------------------------------------------------------------- models
    def deployment(self, entry: Node) -> None:
        group_node = _get(entry, "model_name")
        lp = _get(entry, "litellm_params")
        mi = _get(entry, "model_info")
        if group_node is None or lp is None or _get(lp, "model") is None:
            self.note(entry, "model_list", "an entry without model_name and litellm_params.model was skipped")
            return
        group = str(_py(group_node))
        mode = _py(_get(mi, "mode"))
        if mode not in (*_CHAT_MODES, "embedding"):
            self.note(_get(mi, "mode"), "model_info.mode", f"{group!r}: mode {mode!r} is not served through the "
                                                            "gateway (chat and embeddings are): skipped")
            return
        model_node = _get(lp, "model")
        mstr = str(_py(model_node))
        prefix, sep, rest = mstr.partition("/")
        if not sep:
            prefix, rest = ("anthropic" if mstr.startswith("claude") else "openai"), mstr
        if prefix not in PREFIXES:
            self.note(model_node, "litellm_params.model", f"{group!r}: provider {prefix!r} ({mstr}) has no adapter "
                      "here (OpenAI-compatible servers, Bedrock and Vertex do): skipped; declare it by hand if it "
                      "speaks the OpenAI API")
            return
        provider, default_base = PREFIXES[prefix]
        name = self.policy_name(group, group_node)
        env_stem = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
        props = [f"provider {provider}"]
        base_node = _get(lp, "api_base")
        key_node = _get(lp, "api_key")
        if prefix == "azure":
            if base_node is None:
                self.note(model_node, "litellm_params.api_base", f"{group!r}: azure needs api_base; base_url is "
                          f"env(\"{env_stem}_URL\"): set it to the deployment URL")
                props.append(f"base_url env({escape(env_stem + '_URL')})")
            else:
                raw = str(_py(base_node))
                if raw.startswith(ENV_PREFIX):
                    self.note(base_node, "litellm_params.api_base", f"{group!r}: set {raw[len(ENV_PREFIX):]} to the "
                              f"full deployment URL (https://NAME.openai.azure.com/openai/deployments/{rest}"
                              "?api-version=...): an azure base_url names the deployment")
                    props.append(f"base_url env({escape(raw[len(ENV_PREFIX):])})")
                else:
                    version = _py(_get(lp, "api_version")) or "2024-06-01"
                    props.append("base_url " + escape(f"{raw.rstrip('/')}/openai/deployments/{rest}"
                                                      f"?api-version={version}"))
            if key_node is not None:
                props.append(f"header \"api-key\" {self.strval(key_node, 'litellm_params.api_key', env_stem + '_API_KEY', secret=True)}")
        elif provider in ("bedrock", "vertex"):
            props.append(f"model_id {escape(rest)}")
            if provider == "bedrock":
                region = _py(_get(lp, "aws_region_name"))
                if not isinstance(region, str) or region.startswith(ENV_PREFIX):
                    self.note(_get(lp, "aws_region_name") or model_node, "litellm_params.aws_region_name",
                              f"{group!r}: the region must be written in the policy: region \"us-east-1\" was "
                              "written; change it to yours")
                    region = "us-east-1"
                props.append(f"region {escape(region)}")
                for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_profile_name"):
                    if _get(lp, k) is not None:
                        self.note(_get(lp, k), f"litellm_params.{k}", "AWS credentials come from the standard AWS "
                                  "chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE): not written")
            else:
                proj = _get(lp, "vertex_project")
                if proj is None:
                    self.note(model_node, "litellm_params.vertex_project", f"{group!r}: project is "
                              "env(\"GOOGLE_CLOUD_PROJECT\"); set it")
                    props.append('project env("GOOGLE_CLOUD_PROJECT")')
                else:
                    props.append(f"project {self.strval(proj, 'litellm_params.vertex_project', '')}")
                loc = _py(_get(lp, "vertex_location"))
                if isinstance(loc, str) and not loc.startswith(ENV_PREFIX):
                    props.append(f"region {escape(loc)}")
                if _get(lp, "vertex_credentials") is not None:
                    self.note(_get(lp, "vertex_credentials"), "litellm_params.vertex_credentials",
                              "Vertex credentials come from Google ADC (GOOGLE_APPLICATION_CREDENTIALS): not written")
            if key_node is not None:
                props.append(f"keys [{self.strval(key_node, 'litellm_params.api_key', env_stem + '_API_KEY', secret=True)}]")
        else:
            if base_node is not None:
                base = self.strval(base_node, "litellm_params.api_base", "")
                if provider == "ollama" and not base.startswith("env("):
                    b = str(_py(base_node)).rstrip("/")
                    base = escape(b if b.endswith("/v1") else b + "/v1")
                elif provider == "ollama":
                    self.note(base_node, "litellm_params.api_base", f"{group!r}: the gateway calls Ollama's "
                              "OpenAI-compatible API: the URL in this variable must end in /v1")
                props.append(f"base_url {base}")
            elif default_base is not None:
                props.append(f"base_url {escape(default_base + ('/v1' if provider == 'ollama' else ''))}")
            else:
                self.note(model_node, "litellm_params.api_base", f"{group!r}: {prefix}/ needs api_base; base_url is "
                          f"env(\"{env_stem}_URL\")")
                props.append(f"base_url env({escape(env_stem + '_URL')})")
            props.append(f"model_id {escape(rest)}")
            if key_node is not None:
                props.append(f"keys [{self.strval(key_node, 'litellm_params.api_key', env_stem + '_API_KEY', secret=True)}]")
        ctx = _py(_get(mi, "max_input_tokens")) or _py(_get(lp, "max_input_tokens"))
        if isinstance(ctx, int) and ctx > 0:
            props.append(f"context {ctx}")
        cost = _py(_get(mi, "input_cost_per_token")) or _py(_get(lp, "input_cost_per_token"))
        if isinstance(cost, int | float) and cost > 0:
            per_1k = (Decimal(str(cost)) * 1000).normalize()
            props.append(f"cost {format(per_1k, 'f')} per 1k tokens")
            out_cost = _get(mi, "output_cost_per_token") or _get(lp, "output_cost_per_token")
            if out_cost is not None:
                self.note(out_cost, "output_cost_per_token", "the policy has one cost per 1k tokens: the input "
                          "cost was used")
        timeout = _py(_get(lp, "timeout"))
        if isinstance(timeout, int | float) and timeout > 0:
            props.append(f"timeout total {format(Decimal(str(timeout)).normalize(), 'f')}s")
        serves = "embeddings" if mode == "embedding" else "chat"
        if serves == "embeddings":
            props.append("serves [embeddings]")
        for k, kn, _v in _items(lp):
            if k not in _LP_USED and not k.startswith(("aws_", "vertex_")):
                self.note(kn, f"litellm_params.{k}", f"{group!r}: not translated (the policy language has no "
                                                     f"{_why(k)})")
        for k, kn, _v in _items(mi):
            if k not in _MI_USED and k not in ("output_cost_per_token",):
                self.note(kn, f"model_info.{k}", f"{group!r}: not translated")
        for k, kn, _v in _items(entry):
            if k not in ("model_name", "litellm_params", "model_info"):
                self.note(kn, k, f"{group!r}: not translated (the policy language has no {_why(k)})")
        tags = [t for t in _strs(_get(lp, "tags"))]
        tags_node = _get(lp, "tags")
        m = _Model(name, group, _line(entry), props, serves, tags, _strs(_get(mi, "access_groups")),
                   _line(tags_node) if tags_node is not None else 0)
        self.models.append(m)
        self.groups.setdefault(group, []).append(m)

    # -------------------------------------------------------------- chains
    def fallback_map(self, kind: str) -> dict[str, tuple[list[str], Node]]:
        out: dict[str, tuple[list[str], Node]] = {}
        for section in ("router_settings", "litellm_settings"):
            node = _get(_get(self.root, section), kind)
            if node is None:
                continue
            entries = node.value if isinstance(node, SequenceNode) else [node]
            for e in entries:
                for k, kn, v in _items(e):
                    prev = out.get(k, ([], kn))[0]
                    out[k] = ([*prev, *_strs(v)], kn)
        return out

    def members(self, group: str, node: Node | None, where: str) -> list[str]:
        ms = self.groups.get(group)
        if ms is None:
            self.note(node, where, f"{group!r} is not a model_name in model_list: left out of the chain")
            return []
        untagged = [m.name for m in ms if not m.tags or "default" in m.tags]
        return untagged or [m.name for m in ms]

    def chain(self, group: str, maps: list[dict[str, tuple[list[str], Node]]]) -> list[str]:
        """The group's deployments, then its fallbacks' (general, context-window, content-policy; a
        group without general fallbacks takes `default_fallbacks`), each kept to its kind."""
        kind = self.groups[group][0].serves
        out = self.members(group, None, "")
        for i, mp in enumerate(maps):
            fbs, node = mp.get(group, ([], None))
            if i == 0 and not fbs and self.default_fallbacks is not None:
                fbs, node = _strs(self.default_fallbacks), self.default_fallbacks
            for f in fbs:
                for n in self.members(f, node, "fallbacks"):
                    spec = next(m for m in self.models if m.name == n)
                    if spec.serves != kind:
                        self.note(node, "fallbacks", f"{group!r} falls back to {f!r}, which serves {spec.serves} "
                                                     "only: left out of the chain")
                        continue
                    out.append(n)
        return list(dict.fromkeys(out))

    # -------------------------------------------------------------- the rest
    def report_sections(self) -> None:
        router = _get(self.root, "router_settings")
        for k, kn, _v in _items(router):
            if k in (*_FALLBACK_KEYS, "enable_tag_filtering"):
                continue
            self.note(kn, f"router_settings.{k}", "not translated" + _router_hint(k))
        ls = _get(self.root, "litellm_settings")
        for k, kn, _v in _items(ls):
            if k in (*_FALLBACK_KEYS, "default_fallbacks", "default_key_generate_params"):
                continue
            self.note(kn, f"litellm_settings.{k}", "not translated" + _router_hint(k))
        gs = _get(self.root, "general_settings")
        for k, kn, _v in _items(gs):
            if k == "keys":
                continue
            hint = (": create API keys with `policyengine keys create --tenant T --role app`" if k == "master_key"
                    else ": the service's database is `database_url` in its settings" if k == "database_url" else "")
            self.note(kn, f"general_settings.{k}", "not translated" + hint)
        for k, kn, _v in _items(_get(self.root, "environment_variables")):
            self.note(kn, f"environment_variables.{k}", "not translated: set it in the service's environment")
        for k, kn, _v in _items(self.root):
            if k not in ("model_list", "router_settings", "litellm_settings", "general_settings",
                         "environment_variables", "keys"):
                self.note(kn, k, "not translated")

    def allowlists(self) -> list[str]:
        chat_groups = list(self.groups)
        access: dict[str, list[str]] = {}
        for m in self.models:
            for g in m.access_groups:
                access.setdefault(g, []).append(m.group)

        def expand(names: list[str], node: Node | None, where: str) -> list[str]:
            out: list[str] = []
            for n in names:
                if n in ("*", "all-proxy-models"):
                    out.extend(chat_groups)
                elif n in self.groups:
                    out.append(n)
                elif n in access:
                    out.extend(access[n])
                else:
                    self.note(node, where, f"{n!r} is not a model_name or access group: left out")
            return [self.groups[g][0].name for g in dict.fromkeys(out)]

        lines: list[str] = []
        dk = _get(_get(_get(self.root, "litellm_settings"), "default_key_generate_params"), "models")
        everyone = expand(_strs(dk), dk, "default_key_generate_params.models") if dk is not None else \
            [self.groups[g][0].name for g in chat_groups]
        keys_node = _get(self.root, "keys") or _get(_get(self.root, "general_settings"), "keys")
        aliases: list[str] = []
        per_key: list[str] = []
        for k in keys_node.value if isinstance(keys_node, SequenceNode) else []:
            alias = _py(_get(k, "key_alias")) or _py(_get(k, "key_name"))
            models = _get(k, "models")
            if not isinstance(alias, str) or models is None:
                self.note(k, "keys", "a key without key_alias and models: left out")
                continue
            allowed = expand(_strs(models), models, "keys.models")
            for kk, kn, _v in _items(k):
                if kk not in ("key_alias", "key_name", "models"):
                    self.note(kn, f"keys.{kk}", f"key {alias!r}: not translated")
            if allowed:
                aliases.append(alias)
                per_key.append(f"allow model choice [{', '.join(allowed)}] when user.role == {escape(alias)}")
                self.note(_get(k, "key_alias") or _get(k, "key_name"), "keys.key_alias", f"key {alias!r}: create it with `policyengine keys create --tenant T --role app "
                                     f"--attr actor_role={alias}` (the allowlist is keyed on user.role)")
        if everyone:
            cond = f" when not user.role in [{', '.join(escape(a) for a in aliases)}]" if aliases else ""
            lines.append(f"allow model choice [{', '.join(everyone)}]{cond}")
        return lines + per_key

    def run(self) -> ImportResult:
        if not isinstance(self.root, MappingNode):
            return ImportResult({}, [Note(1, "(file)", "not a LiteLLM config: the file is not a YAML mapping")])
        ml = _get(self.root, "model_list")
        if not isinstance(ml, SequenceNode) or not ml.value:
            return ImportResult({}, [Note(_line(ml) if ml else 1, "model_list", "no model_list: nothing to import")])
        for entry in ml.value:
            self.deployment(entry)
        self.report_sections()
        if not self.models:
            return ImportResult({}, sorted(self.notes, key=lambda n: n.line))
        self.default_fallbacks = _get(_get(self.root, "litellm_settings"), "default_fallbacks") or \
            _get(_get(self.root, "router_settings"), "default_fallbacks")
        maps = [self.fallback_map(k) for k in _FALLBACK_KEYS]
        for mp in maps:
            for g, (_, node) in mp.items():
                if g not in self.groups:
                    self.note(node, "fallbacks", f"{g!r} is not a model_name in model_list: its fallbacks are left out")
        cw = maps[1]
        if cw:
            first = next(iter(cw.values()))[1]
            self.note(first, "context_window_fallbacks", "joined each model's chain: the gateway skips a model whose "
                      "`context` is too small and fails over on a context-length error")
        if maps[2]:
            first = next(iter(maps[2].values()))[1]
            self.note(first, "content_policy_fallbacks", "joined each model's chain, but a content-policy refusal is "
                      "fatal by default (another model is not asked the same thing): add a classifier rule with "
                      "class failover for reason content_filter to fail over on it")
        models_txt = [f"# Imported from {self.source} (LiteLLM proxy config) by `policyengine import litellm`.", ""]
        for m in self.models:
            models_txt.append(f"# {self.source}:{m.line}: model_name {m.group}")
            models_txt.append(f"model {m.name} {{")
            models_txt += [f"  {p}" for p in m.props]
            models_txt += ["}", ""]
        routes = [f'policy "{_policy_name(self.source)}" version 1', ""]
        for kind in ("chat", "embeddings"):
            groups = [g for g, ms in self.groups.items() if ms[0].serves == kind]
            if not groups:
                continue
            routes.append(f"# {kind}: model `auto` takes the default route; a requested model takes its own chain")
            # tags: a use case per tag (LiteLLM's tag routing)
            tags: dict[str, list[str]] = {}
            for m in self.models:
                if m.serves == kind:
                    for t in m.tags:
                        if t != "default":
                            tags.setdefault(t, []).append(m.name)
            for t, names in tags.items():
                routes.append(f"route when use_case == {escape(t)} -> {names[0]} fallback [{', '.join(names[1:])}]")
            first = self.chain(groups[0], maps)
            for g in groups:
                ch = self.chain(g, maps)
                routes.append(f"route when requested_model == {escape(self.groups[g][0].name)} -> {ch[0]} "
                              f"fallback [{', '.join(ch[1:])}]")
            routes.append(f"route default -> {first[0]} fallback [{', '.join(first[1:])}]")
            routes.append("")
        if tagged := [m for m in self.models if m.tags and m.tags != ["default"]]:
            self.notes.append(Note(tagged[0].tags_line, "litellm_params.tags",
                                   "tag routing became `route when use_case == TAG`: send model `auto` with the header "
                                   "X-PolicyEngine-Use-Case: TAG (or metadata.use_case); a requested model always "
                                   "goes first"))
        routes += self.allowlists()
        routes.append("")
        files = {"models.policy": "\n".join(models_txt), "routing.policy": "\n".join(routes)}
        return ImportResult(files, sorted(self.notes, key=lambda n: (n.line, n.key)))


def _policy_name(source: str) -> str:
    stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "litellm"


def _why(key: str) -> str:
    return {"rpm": "rate limits", "tpm": "rate limits", "temperature": "default sampling parameters",
            "max_tokens": "default sampling parameters", "top_p": "default sampling parameters",
            "stream_timeout": "stream-only timeout (set `timeout first_token` by hand)",
            "organization": "OpenAI organization header (add `header \"OpenAI-Organization\" ...` by hand)",
            "drop_params": "parameter dropping", "weight": "deployment weights (deployments are tried in order)",
            "order": "deployment order (deployments are tried in file order)"}.get(key, f"`{key}` setting")


def _router_hint(key: str) -> str:
    return {"num_retries": ": retries are the dispatcher's `max_attempts` setting",
            "timeout": ": per-model `timeout total` or the dispatcher's deadline",
            "request_timeout": ": per-model `timeout total` or the dispatcher's deadline",
            "cooldown_time": ": cooldowns are the dispatcher's settings (`cooldown_default`)",
            "allowed_fails": ": the circuit breaker is the dispatcher's setting",
            "routing_strategy": ": deployments of one model are tried in order",
            "model_group_alias": ": declare the alias as its own model, or allow it by name",
            "redis_host": ": shared state is the service's `redis_url` setting",
            "redis_port": ": shared state is the service's `redis_url` setting",
            "redis_password": ": shared state is the service's `redis_url` setting"}.get(key, "")


def import_litellm(text: str, source: str = "config.yaml") -> ImportResult:
    """Translate a LiteLLM proxy config (YAML text) into `models.policy` and `routing.policy`;
    `notes` say, by line, what was not translated. Raises `yaml.YAMLError` on text that is not YAML."""
    return _Importer(text, source).run()
