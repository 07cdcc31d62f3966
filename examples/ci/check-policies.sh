#!/usr/bin/env bash
# Lint, test and dry-run every policy set of this repository; used by the GitHub
# Actions workflow and the pre-commit hook in this folder.
#
#   examples/ci/check-policies.sh [POLICY_ROOT]
#
# A policy set is a folder holding *.policy files (all of them are one set).
# Environment (all optional):
#   PE_FORMAT            text (default) | github  -> workflow annotations for lint and test
#   PE_MIN_COVERAGE      rule coverage the tests must reach, in percent (default 90)
#   PE_DECISIONS_URL     decision log to dry-run against (sqlite:///... or postgresql://...);
#                        read it from a secret, never write credentials here
#   PE_DECISIONS_JSONL   or a JSON-lines export of logged decisions (default: the sample beside this script)
#   PE_SINCE             only replay decisions since this date (e.g. 2026-11-01)
#   PE_MAX_CHANGE_SHARE  fail when more than this share of decisions would change (default 0.05)
#   PE_REPORT_DIR        write dry-run reports as Markdown here (for a pull-request comment)
set -uo pipefail

root="${1:-policies}"
here="$(cd "$(dirname "$0")" && pwd)"
fmt="${PE_FORMAT:-text}"
min_cov="${PE_MIN_COVERAGE:-90}"
share="${PE_MAX_CHANGE_SHARE:-0.05}"
jsonl="${PE_DECISIONS_JSONL:-$here/sample-decisions.jsonl}"
pe="${POLICYENGINE:-policyengine}"
status=0

mapfile -t sets < <(find "$root" -name '*.policy' -printf '%h\n' | sort -u)
if [ "${#sets[@]}" -eq 0 ]; then
  echo "no .policy files under $root" >&2
  exit 2
fi

for set in "${sets[@]}"; do
  echo "== $set"
  lint_fmt=$([ "$fmt" = github ] && echo github || echo text)
  $pe lint --format "$lint_fmt" "$set" || status=1
  if compgen -G "$set/*.tests.yaml" >/dev/null || compgen -G "$set/*.tests.yml" >/dev/null; then
    $pe test "$set" --min-coverage "$min_cov" --format "$fmt" || status=1
  else
    echo "::warning::$set has no *.tests.yaml: add policy tests beside the policies"
  fi
  args=(--policy "$set" --max-change-share "$share" --no-progress)
  [ -n "${PE_SINCE:-}" ] && args+=(--since "$PE_SINCE")
  if [ -n "${PE_DECISIONS_URL:-}" ]; then
    args+=(--against "$PE_DECISIONS_URL")
  elif [ -f "$jsonl" ]; then
    args+=(--actions "$jsonl")
  else
    echo "no decision log to dry-run against (set PE_DECISIONS_URL or PE_DECISIONS_JSONL)"
    continue
  fi
  if [ -n "${PE_REPORT_DIR:-}" ]; then
    mkdir -p "$PE_REPORT_DIR"
    out="$PE_REPORT_DIR/dry-run-$(echo "$set" | tr '/' '_').md"
    $pe dry-run "${args[@]}" --format markdown --output "$out" || status=1
    cat "$out"
  else
    $pe dry-run "${args[@]}" || status=1
  fi
done
exit $status
