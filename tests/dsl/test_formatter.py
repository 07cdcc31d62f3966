"""`policyengine fmt`: the canonical layout, and where comments go."""

from __future__ import annotations

from policyengine.dsl import format_source, parse

MESSY = '''policy   "t"   version 2   # header note


model qwen { # the big one
  provider vllm   # our GPU box
  # the endpoint comes from the environment
  base_url env("Q") keys [ env("K1") ,env("K2") ]
  cost 0 context 32768  # free
  cost 0.5 per 1m tokens
  timeout   connect 2s total 1m
  # trailing remark
}  # after block
require approval for refund when amount > £100 and not (vip or tier in ["a","b"]) { # money
  reviewers group "refunds"  # who
  notify slack "#r" , email "a@b.co"
  timeout 8h -> escalate to group "x"
}
verify when use_case == "legal" with a, b {
  # threshold agreed with legal
  escalate when divergence > 0.20 otherwise tag "ok"  # tag it
  reviewers group "legal"
}
authorize a,
  # why b
  b
route when x == "y" -> m fallback [n] prefer self_hosted sticky session return on recovery
'''

CANONICAL = '''policy "t" version 2  # header note

model qwen {  # the big one
  provider vllm  # our GPU box
  # the endpoint comes from the environment
  base_url env("Q")
  keys [env("K1"), env("K2")]
  cost 0
  context 32768  # free
  cost 0.5 per 1m tokens
  timeout connect 2s total 1m
  # trailing remark
}  # after block
require approval for refund when amount > 100 GBP and not (vip or tier in ["a", "b"]) {  # money
  reviewers group "refunds"  # who
  notify slack "#r", email "a@b.co"
  timeout 8h -> escalate to group "x"
}
verify when use_case == "legal" with a, b {
  # threshold agreed with legal
  escalate when divergence > 0.2 otherwise tag "ok"  # tag it
  reviewers group "legal"
}
# why b
authorize a, b
route when x == "y" -> m fallback [n] sticky session return on recovery prefer self_hosted
'''


def test_canonical_layout_and_comment_placement() -> None:
    out = format_source(MESSY)
    assert out == CANONICAL
    assert format_source(out) == out
    assert parse(out).items == parse(MESSY).items


def test_parenthesised_precedence_is_kept() -> None:
    src = 'authorize a when (x == 1 or y == 2) and not (z == 3 and w == 4)\n'
    out = format_source(src)
    assert out == src
    tree = parse(out).items[0].cond  # type: ignore[union-attr]
    assert type(tree).__name__ == "And"


def test_empty_and_comment_only_files() -> None:
    assert format_source("") == ""
    assert format_source("# only a comment\n\n\n// and another") == "# only a comment\n\n// and another\n"


def test_strings_are_re_escaped() -> None:
    assert format_source('lexicon l ["a\\\\b", "say \\"x\\"", "tab\\there"]\n') == \
        'lexicon l ["a\\\\b", "say \\"x\\"", "tab\\there"]\n'
