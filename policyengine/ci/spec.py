"""The policy test file format (`*.tests.yaml`, kept beside the `.policy` files).

```yaml
policy: .                       # the policy set under test, relative to this file (default: its folder)
defaults:                       # merged into every case's `given` (optional)
  tenant: acme
tests:
  - name: refund over the threshold is held for the refunds team
    given:                      # an Action (policyengine.types.Action)
      action: refund
      fields: {amount: "150 GBP"}
      signals: {sentiment: 0.8} # recorded/pre-computed signal values win over computed ones
    expect:
      effect: require_approval
      obligations:
        - group: refunds
          channels: ["slack:#refunds", "email:refunds@example.com"]
          timeout: 8h
      rules: ["require approval for refund"]
```

Every `expect` key is optional; only the keys written are checked. See docs/ci.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policyengine.ci.durations import parse_duration
from policyengine.types import Action, Channel, Effect

TEST_FILE_SUFFIX = ".tests.yaml"
TEST_FILE_SUFFIXES = (".tests.yaml", ".tests.yml")


class SpecError(ValueError):
    """A test file that cannot be read: names the file, the line and what is wrong."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file, self.line, self.message = file, line, message
        super().__init__(f"{file}:{line or 1}: {message}")


def parse_channel(value: str | dict[str, Any] | Channel) -> Channel:
    """`"slack:#refunds"`, `{"kind": "slack", "target": "#refunds"}` or a Channel."""
    if isinstance(value, Channel):
        return value
    if isinstance(value, dict):
        return Channel.model_validate(value)
    kind, sep, target = str(value).partition(":")
    if not sep or not target:
        raise ValueError(f"channel {value!r}: write it as kind:target, e.g. \"slack:#refunds\"")
    return Channel.model_validate({"kind": kind.strip(), "target": target.strip()})


class ExpectObligation(BaseModel):
    """One expected approval obligation; only the keys written are compared."""

    model_config = ConfigDict(extra="forbid")

    group: str | None = None
    channels: list[Channel] | None = None  # compared as a set
    remind_every: float | None = None  # seconds or "1h"
    timeout: float | None = None
    on_timeout: Literal["deny", "approve", "escalate"] | None = None
    escalate_to: str | None = None
    user_confirm: bool | None = None  # `confirm by user`

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list):
            v = [v]
        return [parse_channel(c) for c in v]

    @field_validator("remind_every", "timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)


class ExpectVerification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    threshold: float | None = None
    tag: str | None = None
    judge: str | None = None  # the judge model the rule names


class Expectation(BaseModel):
    """What a decision must look like. Unset keys are not checked."""

    model_config = ConfigDict(extra="forbid")

    effect: Effect | None = None
    chain: list[str] | None = None  # the whole model chain, in order
    primary: str | None = None  # just the first model of the chain
    sticky: bool | None = None
    hedge_after: float | None = None  # the route's hedge delay ("300ms", "1.5s" or seconds); 0: no hedging
    hedge_budget: float | None = None  # the route's hedge budget ("10%" or 0.1)
    tags: list[str] | None = None  # exactly these tags (any order)
    tags_include: list[str] | None = None  # at least these tags
    obligations: list[ExpectObligation] | None = None  # same count, compared in order
    rules: list[str] | None = None  # each must have fired (id, file:line, or source text)
    rules_not: list[str] | None = None  # none of these may fire
    verified: bool | None = None  # a dual-model verification is (not) required
    verification: ExpectVerification | None = None
    allowed_models: list[str] | None = None  # the user-switchable allowlist (any order)
    default_applied: bool | None = None  # no rule named the action: default deny
    # the effect with the fired `shadow` rules enforced (Decision.shadow_effect); "none": no shadow rule fires
    shadow_effect: Literal["allow", "deny", "require_approval", "escalate", "none"] | None = None

    @field_validator("hedge_after", mode="before")
    @classmethod
    def _hedge_after(cls, v: Any) -> Any:
        return None if v is None else (0.0 if v in (0, "0", "none", False) else parse_duration(v))

    @field_validator("hedge_budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().endswith("%"):
            return float(v.strip()[:-1]) / 100
        return v

    @field_validator("chain", "tags", "tags_include", "rules", "rules_not", "allowed_models", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class PolicyTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    given: Action
    expect: Expectation
    # how far limits are used when the case runs: limit (rule id, line, or text of its source) -> value
    # in the limit's terms (`12` requests / tokens, `"49.9 GBP"`); limits not named are unused
    usage: dict[str, int | float | str] = Field(default_factory=dict)
    skip: bool | str = False  # true or a reason
    line: int = 0  # line of the case in its file (filled by the loader)


class PolicyTestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    policy: list[str]  # resolved paths of the policy set under test
    tests: list[PolicyTest]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the 1-based line of every mapping under `__line__`."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(case)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _error_line(item: dict[str, Any], exc: ValidationError) -> int | None:
    """The line of the innermost mapping on the first error's path (e.g. the `given:` mapping)."""
    node: Any = item
    line = None
    for part in exc.errors()[0]["loc"]:
        if isinstance(node, dict):
            line = node.get("__line__", line)
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    if isinstance(node, dict):
        line = node.get("__line__", line)
    return line


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_test_file(path: str | Path) -> PolicyTestFile:
    """Parse and validate one test file; SpecError (file:line: what) on any problem."""
    p = Path(path)
    name = str(p)
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_LineLoader)
    except OSError as exc:
        raise SpecError(name, None, f"cannot read test file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(name, mark.line + 1 if mark else None, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SpecError(name, 1, "a test file is a mapping with a `tests:` list")
    unknown = set(raw) - {"policy", "defaults", "tests", "__line__"}
    if unknown:
        raise SpecError(name, 1, f"unknown top-level key(s) {sorted(unknown)}; expected policy, defaults, tests")
    policy = raw.get("policy", ".")
    policies = policy if isinstance(policy, list) else [policy]
    if not policies or not all(isinstance(x, str) and x for x in policies):
        raise SpecError(name, 1, "`policy:` is a path (or list of paths) relative to the test file")
    resolved = [str((p.parent / x).resolve()) for x in policies]
    defaults = _strip_lines(raw.get("defaults") or {})
    if not isinstance(defaults, dict):
        raise SpecError(name, 1, "`defaults:` must be a mapping of Action fields")
    items = raw.get("tests")
    if not isinstance(items, list) or not items:
        raise SpecError(name, raw.get("__line__"), "`tests:` must be a non-empty list of cases")
    cases: list[PolicyTest] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        line = item.get("__line__") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            raise SpecError(name, line, f"test #{i + 1} must be a mapping with name, given, expect")
        data = _strip_lines(item)
        given = data.get("given")
        if isinstance(given, dict):
            data["given"] = _deep_merge(defaults, given)
        try:
            case = PolicyTest.model_validate({**data, "line": line or 0})
        except ValidationError as exc:
            label = data.get("name") or f"#{i + 1}"
            raise SpecError(name, _error_line(item, exc) or line, f"test {label!r}: {_error_text(exc)}") from None
        if case.name in seen:
            raise SpecError(name, line, f"duplicate test name {case.name!r} (first at line {seen[case.name]})")
        seen[case.name] = case.line
        cases.append(case)
    return PolicyTestFile(path=name, policy=resolved, tests=cases)


def is_test_file(path: Path) -> bool:
    return path.name.endswith(TEST_FILE_SUFFIXES)


def discover_test_files(target: str | Path) -> list[Path]:
    """Test files for a path: the file itself, `<stem>.tests.yaml` beside a `.policy`, or all under a folder."""
    p = Path(target)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and is_test_file(f))
    if is_test_file(p):
        return [p]
    if p.suffix == ".policy":
        return [c for c in (p.with_name(p.stem + s) for s in TEST_FILE_SUFFIXES) if c.exists()]
    raise ValueError(f"{p}: expected a folder, a .policy file or a *{TEST_FILE_SUFFIX} file")
