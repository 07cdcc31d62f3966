"""The gateway's pure parts: the upstream specs and config file, a tools/call as an Action, the
`confirm by user` hold option, and `never_allowed` (what tools/list hides)."""

from __future__ import annotations

import pytest

from policyengine.dsl import compile_sources, format_source
from policyengine.mcpgate.config import ConfigError, load_config, parse_upstream
from policyengine.mcpgate.decide import ArgumentsRefused, argument_text, tool_action
from policyengine.types import Principal

POLICY = '''policy "u" version 1
authorize lookup_order
deny refund when user.role == "intern"
require approval for refund when amount > 100 GBP {
  confirm by user
}
authorize refund
deny wire_transfer
deny send_email when mcp.server == "legacy-mail"
authorize send_email
'''


def _p(**attrs) -> Principal:
    return Principal(tenant="acme", key_id="k1", subject="agent", roles=frozenset({"app"}), groups=frozenset(),
                     attributes=attrs)


def test_upstream_specs():
    s = parse_upstream("shop=stdio:python -m shop --db 'my file.db'")
    assert (s.name, s.kind, s.command) == ("shop", "stdio", ["python", "-m", "shop", "--db", "my file.db"])
    h = parse_upstream("crm=https://crm.internal/mcp")
    assert (h.kind, h.url) == ("http", "https://crm.internal/mcp")
    for bad, said in (("shop", "NAME=stdio"), ("x=ftp://a", "neither stdio"), ("b@d=stdio:x", "letters"),
                      ("s=stdio:", "needs a command"), ("s=stdio:'open", "quotation")):
        with pytest.raises(ConfigError, match=said):
            parse_upstream(bad)


def test_config_file(tmp_path, monkeypatch):
    f = tmp_path / "mcp.yaml"
    f.write_text("upstreams:\n  shop: stdio:python shop.py\n  crm:\n    url: https://crm/mcp\n"
                 "    headers: {Authorization: 'env:CRM_TOKEN'}\nhold_wait_s: 5\n")
    cfg = load_config(f)
    assert [u.name for u in cfg.upstreams] == ["shop", "crm"] and cfg.hold_wait_s == 5
    with pytest.raises(ConfigError, match="CRM_TOKEN"):
        cfg.upstreams[1].resolved_headers()
    monkeypatch.setenv("CRM_TOKEN", "Bearer s3cret")
    assert cfg.upstreams[1].resolved_headers() == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in cfg.upstreams[1].describe()
    f.write_text("hold_wait_s: -1\n")
    with pytest.raises(ConfigError, match="hold_wait_s"):
        load_config(f)


def test_a_tool_call_as_an_action():
    a = tool_action(_p(), "shop", "refund", {"order_id": "A1", "amount": 150, "currency": "GBP",
                                             "note": {"why": "broken"}, "mcp": "spoofed"},
                    session_id="s1", max_bytes=10_000, text_max_chars=100)
    assert a.action == "refund" and a.channel == "mcp" and a.tenant == "acme" and a.actor == "agent"
    assert a.fields["amount"] == {"amount": 150, "currency": "GBP"}
    assert a.fields["mcp"] == {"server": "shop", "tool": "refund"}  # the gateway's, not the argument's
    assert a.text == "A1\nGBP\nbroken\nspoofed"  # every string argument is text
    assert argument_text({"a": "x" * 50, "b": "y"}, 10) == "x" * 10
    with pytest.raises(ArgumentsRefused, match="over the limit of 10"):
        tool_action(_p(), "shop", "refund", {"order_id": "A1"}, session_id=None, max_bytes=10, text_max_chars=0)
    assert tool_action(_p(channel="desk"), "shop", "x", {}, session_id=None, max_bytes=99,
                       text_max_chars=9).channel == "desk"  # a key that pins a channel keeps it


def test_confirm_by_user_parses_formats_and_compiles():
    assert format_source(POLICY, "u.policy") == POLICY
    policy = compile_sources({"u.policy": POLICY})
    d = policy.evaluate(tool_action(_p(), "shop", "refund", {"amount": 150, "currency": "GBP"}, session_id=None,
                                    max_bytes=999, text_max_chars=99))
    assert d.effect == "require_approval" and [o.user_confirm for o in d.obligations] == [True]


def test_never_allowed_is_what_tools_list_hides():
    from policyengine.mcpgate.decide import probe_action

    policy = compile_sources({"u.policy": POLICY})
    hidden = {t for t in ("lookup_order", "refund", "wire_transfer", "unknown_tool", "send_email")
              if policy.never_allowed(probe_action(_p(), "shop", t))}
    assert hidden == {"wire_transfer", "unknown_tool"}  # denied whatever; the default deny
    assert policy.never_allowed(probe_action(_p(actor_role="intern"), "shop", "refund"))
    assert policy.never_allowed(probe_action(_p(), "legacy-mail", "send_email"))
    # a condition on an argument is undecidable before the call: the tool stays listed
    assert not policy.never_allowed(probe_action(_p(), "shop", "refund"))


def test_a_tool_two_servers_offer_is_shown_with_its_server():
    import mcp_types as types

    from policyengine.mcpgate.upstreams import Upstreams

    ups = Upstreams([parse_upstream("shop=stdio:a"), parse_upstream("crm=http://127.0.0.1:1/mcp")])
    tool = lambda n: types.Tool(name=n, input_schema={"type": "object"})  # noqa: E731
    ups.by_name["shop"].tools = [tool("lookup_order"), tool("search")]
    ups.by_name["crm"].tools = [tool("search")]
    for u in ups.by_name.values():
        u._client = object()  # connected, as far as routing goes
        u.version += 1
    routes = ups.routes()
    assert sorted(routes) == ["crm.search", "lookup_order", "shop.search"]
    assert (routes["crm.search"][0].upstream.name, routes["crm.search"][0].tool) == ("crm", "search")
    ups.by_name["crm"]._client = None  # down: its tools go, the other keeps its own
    assert sorted(ups.routes()) == ["lookup_order", "search"]
    assert ups.route("crm.search") is None and ups.owner_of("crm.search").name == "crm"


def test_an_upstream_url_is_checked_before_anything_starts(tmp_path):
    from policyengine.mcpgate import McpSettings
    from policyengine.mcpgate.http import create_gateway_app
    from policyengine.netcheck import OutboundRefused
    from policyengine.settings import Settings

    s = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", policy_path=[str(tmp_path)])
    metadata = McpSettings(upstreams=[parse_upstream("m=http://169.254.169.254/mcp")])
    with pytest.raises(OutboundRefused):
        create_gateway_app(s, metadata)


def test_when_an_allowed_call_commits_its_row():
    """`commit_before_forward`: the three modes (and the booleans of earlier configurations), and
    which tools wait for their row; a server's read-only hint counts only when it is trusted."""
    import mcp_types as types
    from pydantic import ValidationError

    from policyengine.mcpgate import McpSettings, UpstreamSpec
    from policyengine.mcpgate.upstreams import Upstream, _read_only

    s = McpSettings()
    assert s.commit_before_forward == "unless_read_only" and s.commit_first(False) and not s.commit_first(True)
    assert McpSettings(commit_before_forward=True).commit_before_forward == "always"
    assert McpSettings(commit_before_forward=False).commit_before_forward == "never"
    assert McpSettings(commit_before_forward="always").commit_first(True)
    assert not McpSettings(commit_before_forward="never").commit_first(False)
    with pytest.raises(ValidationError, match="always"):
        McpSettings(commit_before_forward="sometimes")
    trusted = Upstream(UpstreamSpec(name="m", kind="http", url="http://127.0.0.1:1/mcp"))
    doubted = Upstream(UpstreamSpec(name="d", kind="http", url="http://127.0.0.1:1/mcp", trust_read_only_hints=False))

    def tool(**hints):
        return types.Tool(name="t", input_schema={"type": "object"},
                          annotations=types.ToolAnnotations(**hints) if hints else None)

    assert _read_only(trusted, tool(read_only_hint=True))
    assert not _read_only(doubted, tool(read_only_hint=True))
    assert not _read_only(trusted, tool(read_only_hint=True, destructive_hint=True))  # contradictory: not trusted
    assert not _read_only(trusted, tool()) and not _read_only(trusted, tool(read_only_hint=False))
