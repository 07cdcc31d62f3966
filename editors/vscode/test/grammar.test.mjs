// The TextMate grammar on the repository's real policies: scopes of specific tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { policy, repoRoot, scopeOf, tokenize } from "./tokenize.mjs";

test("approval-gates: rules, actions, hold blocks, channels, durations, strings, comments", async () => {
  const t = await tokenize(policy("approval-gates/approval-gates.policy"));
  assert.equal(scopeOf(t, "# Article, Step 4A", "#"), "punctuation.definition.comment.policy");
  assert.equal(scopeOf(t, "# Article, Step 4A", "Article, Step 4A: approval gates. send_email and modify_database are held"),
    "comment.line.number-sign.policy");
  assert.equal(scopeOf(t, 'policy "approval-gates"', "policy"), "keyword.other.policy.policy");
  assert.equal(scopeOf(t, 'policy "approval-gates"', "1"), "constant.numeric.policy");
  assert.equal(scopeOf(t, "authorize read_database", "authorize"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "authorize read_database", "search_knowledge_base"), "entity.name.function.action.policy");
  assert.equal(scopeOf(t, "require approval for send_email", "require"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "require approval for send_email", "send_email"), "entity.name.function.action.policy");
  assert.equal(scopeOf(t, 'reviewers group "comms"', "reviewers"), "variable.parameter.property.policy");
  assert.equal(scopeOf(t, 'reviewers group "comms"', "comms"), "string.quoted.double.policy");
  assert.equal(scopeOf(t, 'notify slack "#outbound-email"', "slack"), "support.type.channel.policy");
  // a `#` inside a string is not a comment
  assert.equal(scopeOf(t, 'notify slack "#outbound-email"', "#outbound-email"), "string.quoted.double.policy");
  assert.equal(scopeOf(t, "remind every 15m", "15m"), "constant.numeric.duration.policy");
  assert.equal(scopeOf(t, "timeout 2h -> deny", "->"), "keyword.operator.arrow.policy");
  assert.equal(scopeOf(t, "timeout 2h -> deny", "deny"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, 'environment == "production" {', "environment"), "variable.other.field.policy");
  assert.equal(scopeOf(t, 'environment == "production" {', "=="), "keyword.operator.comparison.policy");
  assert.equal(scopeOf(t, 'statement_kind == "ddl"', "and"), "keyword.operator.logical.policy");
  assert.equal(scopeOf(t, "deny drop_database", "drop_database"), "entity.name.function.action.policy");
});

test("budgets: models, money, costs per token unit, limits, percentages", async () => {
  const t = await tokenize(policy("budgets/budgets.policy"));
  assert.equal(scopeOf(t, "model qwen-72b {", "model"), "storage.type.model.policy");
  assert.equal(scopeOf(t, "model qwen-72b {", "qwen-72b"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "provider vllm", "vllm"), "support.constant.policy");
  assert.equal(scopeOf(t, 'base_url env("QWEN_URL")', "env"), "support.function.env.policy");
  assert.equal(scopeOf(t, "cost 2.5 GBP per 1m tokens", "2.5 GBP"), "constant.numeric.money.policy");
  assert.equal(scopeOf(t, "cost 2.5 GBP per 1m tokens", "1m"), "constant.numeric.unit.policy");
  assert.equal(scopeOf(t, "route default -> gpt-large", "gpt-large"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "fallback [qwen-72b]", "qwen-72b"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "limit requests 60 per minute", "limit"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "limit requests 60 per minute", "requests"), "keyword.other.limit-kind.policy");
  assert.equal(scopeOf(t, "limit requests 60 per minute", "minute"), "constant.language.window.policy");
  assert.equal(scopeOf(t, "on model gpt-large", "gpt-large"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "budget 50 GBP per day", "budget"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "budget 50 GBP per day", "50 GBP"), "constant.numeric.money.policy");
  assert.equal(scopeOf(t, "at 80% notify", "80%"), "constant.numeric.percent.policy");
});

test("escalations: lexicons, mentions, verify with two models, numbers in conditions", async () => {
  const t = await tokenize(policy("dual-verification/dual-verification.policy"));
  assert.equal(scopeOf(t, "verify when", "verify"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "verify when", "gemma-27b"), "entity.name.type.model.policy");
  // a judge model, its timeout (verify ... judge M timeout D)
  assert.equal(scopeOf(t, "gemma-27b judge kimi-large", "judge"), "keyword.other.judge.policy");
  assert.equal(scopeOf(t, "gemma-27b judge kimi-large", "kimi-large"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "judge kimi-large timeout 15s", "timeout"), "keyword.other.judge.policy");
  assert.equal(scopeOf(t, "judge kimi-large timeout 15s", "15s"), "constant.numeric.duration.policy");
  assert.equal(scopeOf(t, "escalate when divergence", "divergence"), "variable.other.field.policy");
  assert.equal(scopeOf(t, "escalate when divergence", "0.25"), "constant.numeric.policy");
  const desk = await tokenize(policy("support-desk/20-escalation.policy"));
  assert.equal(scopeOf(desk, "lexicon litigation", "litigation"), "entity.name.constant.lexicon.policy");
  assert.equal(scopeOf(desk, "when text mentions litigation", "mentions"), "keyword.operator.mentions.policy");
  assert.equal(scopeOf(desk, "when text mentions litigation", "litigation"), "entity.name.constant.lexicon.policy");
});

test("shadow rules, money symbols, booleans, in-lists, // comments", async () => {
  const t = await tokenize([
    'shadow deny refund when amount > €500 and vip == false // not yet',
    'shadow require approval for refund when region in ["eu", "uk"] {',
    "  timeout 8h -> escalate to group \"leads\"",
    "}",
    "shadow limit requests 10 per minute per user",
    "shadow verify for refund when amount > 10 GBP with qwen-72b, gemma-27b {",
    "  escalate when divergence > 0.25 otherwise tag \"checked\"",
    "}",
    "shadow budget 50 GBP per day per tenant { at 100% deny }",
    "route when tier == \"gold\" -> gpt-4o-mini fallback [llama-3.1-8b] sticky session",
  ].join("\n"));
  assert.equal(scopeOf(t, "shadow deny refund", "shadow"), "storage.modifier.shadow.policy");
  assert.equal(scopeOf(t, "shadow deny refund", "deny"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "shadow deny refund", "refund"), "entity.name.function.action.policy");
  assert.equal(scopeOf(t, "shadow deny refund", "€500"), "constant.numeric.money.policy");
  assert.equal(scopeOf(t, "shadow deny refund", "false"), "constant.language.boolean.policy");
  assert.equal(scopeOf(t, "shadow deny refund", "not yet"), "comment.line.double-slash.policy");
  assert.equal(scopeOf(t, "shadow require approval", "shadow"), "storage.modifier.shadow.policy");
  assert.equal(scopeOf(t, "shadow require approval", "in"), "keyword.operator.logical.policy");
  assert.equal(scopeOf(t, "shadow limit", "shadow"), "storage.modifier.shadow.policy");
  assert.equal(scopeOf(t, "shadow limit", "limit"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "-> escalate to group", "escalate"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "shadow verify for refund", "shadow"), "storage.modifier.shadow.policy");
  assert.equal(scopeOf(t, "shadow verify for refund", "verify"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "shadow verify for refund", "refund"), "entity.name.function.action.policy");
  assert.equal(scopeOf(t, "shadow verify for refund", "gemma-27b"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "otherwise tag", "checked"), "string.quoted.double.policy");
  assert.equal(scopeOf(t, "shadow budget 50 GBP", "budget"), "keyword.control.rule.policy");
  assert.equal(scopeOf(t, "shadow budget 50 GBP", "100%"), "constant.numeric.percent.policy");
  // a model name holding digits, dots and dashes stays one name (no number, no duration inside)
  assert.equal(scopeOf(t, "route when tier", "gpt-4o-mini"), "entity.name.type.model.policy");
  assert.equal(scopeOf(t, "route when tier", "llama-3.1-8b"), "entity.name.type.model.policy");
});

test("every policy of the repository tokenizes with no unscoped word", async () => {
  const dir = path.join(repoRoot, "policies");
  const files = readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith(".policy"));
  assert.ok(files.length >= 10, `found ${files.length} policies`);
  for (const f of files) {
    const t = await tokenize(readFileSync(path.join(dir, String(f)), "utf8"));
    for (const tok of t) {
      if (tok.text.trim() === "") continue;
      assert.ok(tok.scopes.length > 1, `${f}:${tok.line}:${tok.col} ${JSON.stringify(tok.text)} has no scope`);
    }
  }
});
