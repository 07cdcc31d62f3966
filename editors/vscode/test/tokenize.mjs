// Tokenizes .policy text with the extension's TextMate grammar, the way VS Code does
// (vscode-textmate over the Oniguruma WebAssembly build), without VS Code itself.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import vsctm from "vscode-textmate";
import oniguruma from "vscode-oniguruma";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
export const packageDir = path.resolve(here, "..");
export const repoRoot = path.resolve(packageDir, "..", "..");

const wasm = readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
const onigLib = oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength)).then(() => ({
  createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
  createOnigString: (s) => new oniguruma.OnigString(s),
}));

const registry = new vsctm.Registry({
  onigLib,
  loadGrammar: async (scopeName) => {
    if (scopeName !== "source.policy") return null;
    const file = path.join(packageDir, "syntaxes", "policy.tmLanguage.json");
    return vsctm.parseRawGrammar(readFileSync(file, "utf8"), file);
  },
});

let grammarPromise;
export function grammar() {
  grammarPromise ??= registry.loadGrammar("source.policy");
  return grammarPromise;
}

/** Every token of `text`: {line (1-based), col (1-based), text, scopes}. */
export async function tokenize(text) {
  const g = await grammar();
  const out = [];
  let stack = vsctm.INITIAL;
  text.split(/\r?\n/).forEach((line, i) => {
    const r = g.tokenizeLine(line, stack);
    for (const t of r.tokens) {
      out.push({ line: i + 1, col: t.startIndex + 1, text: line.slice(t.startIndex, t.endIndex), scopes: t.scopes });
    }
    stack = r.ruleStack;
  });
  return out;
}

/** The innermost scope of the token `word` on the first line of `tokens` that contains `lineHas`
 * (the `nth` occurrence of the word on that line, 0-based). */
export function scopeOf(tokens, lineHas, word, nth = 0) {
  const lines = new Map();
  for (const t of tokens) {
    if (!lines.has(t.line)) lines.set(t.line, []);
    lines.get(t.line).push(t);
  }
  for (const [, ts] of lines) {
    const whole = ts.map((t) => t.text).join("");
    if (!whole.includes(lineHas)) continue;
    const hits = ts.filter((t) => t.text.trim() === word);
    if (hits.length > nth) return hits[nth].scopes[hits[nth].scopes.length - 1];
    throw new Error(`no token ${JSON.stringify(word)} (#${nth}) on the line with ${JSON.stringify(lineHas)}: ` +
      JSON.stringify(ts.map((t) => [t.text, t.scopes.at(-1)])));
  }
  throw new Error(`no line contains ${JSON.stringify(lineHas)}`);
}

export function policy(rel) {
  return readFileSync(path.join(repoRoot, "policies", rel), "utf8");
}
