#!/usr/bin/env bash
# The compose stack, proven on a real container engine (docs/deployment.md, "Smoke test"):
#
#   sudo apt-get install docker.io docker-compose debootstrap   # Debian 12
#   sudo dockerd &                                              # if not started by systemd
#   examples/deploy/smoke.sh
#
# 1. builds the images (build.sh: official bases online, Debian's mirror offline)
# 2. starts PostgreSQL and Redis, runs the migration job, creates an application key
# 3. starts two policyengine replicas behind nginx, the simulated fleet and an SMTP sink
# 4. drives traffic through nginx with the openai SDK (smoke/drive.py): routing, a failover,
#    a cooldown seen by both replicas, a held refund approved through its emailed link;
#    every step checked from the decision log
# 5. verify-log on the shared PostgreSQL log
# 6. tears it all down (containers, network, volumes) and checks nothing is left running
# Exit 0 only if every step held. SMOKE_SKIP_BUILD=1 reuses images already built.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DOCKER="${DOCKER:-docker}"
PROJECT="${SMOKE_PROJECT:-pe-smoke-$$}"
T0=$(date +%s)

log() { printf '[smoke %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

"$DOCKER" info >/dev/null 2>&1 || die "no container engine: start dockerd (apt-get install docker.io)"
if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE=("$DOCKER" compose)
elif command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
else die "neither 'docker compose' nor docker-compose (apt-get install docker-compose)"; fi
if ! "$DOCKER" buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0; fi

# ------------------------------------------------------------------ 1. images
if [ "${SMOKE_SKIP_BUILD:-0}" = 1 ] && [ -f "$HERE/.images.env" ]; then
  log "reusing the images named in .images.env"
else
  log "building the images"
  "$HERE/build.sh" ${PE_BUILD_MODE:+"$PE_BUILD_MODE"}
fi
set -a; . "$HERE/.images.env"; set +a

# ------------------------------------------------------------------ secrets and ports (fresh each run)
rnd() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export POSTGRES_PASSWORD="$(rnd)" PE_ADMIN_TOKEN="pe_admin_$(rnd)" QWEN_KEY_1="$(rnd)" QWEN_KEY_2="$(rnd)" \
       GEMMA_KEY="$(rnd)" POLICYENGINE_APPROVALS_LINK_SECRET="$(rnd)$(rnd)"
export PE_HTTP_PORT="$(free_port)" SMOKE_REPLICA_1_PORT="$(free_port)" SMOKE_REPLICA_2_PORT="$(free_port)" \
       SMOKE_FLEET_PORT="$(free_port)" SMOKE_FLEET_PORT_2="$(free_port)"

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$HERE/docker-compose.yml" -f "$HERE/smoke/docker-compose.smoke.yml" "$@"; }

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    log "logs of the failed run (last 40 lines per service):"
    compose logs --no-color --tail 40 >&2 2>/dev/null || true
    for port in "${SMOKE_REPLICA_1_PORT:-}" "${SMOKE_REPLICA_2_PORT:-}"; do
      [ -n "$port" ] && log "replica on :$port /readyz: $(curl -s --max-time 3 "http://127.0.0.1:$port/readyz" || echo unreachable)"
    done
  fi
  log "tearing down"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  left="$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
  vols="$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
  if [ -n "$left$vols" ]; then log "LEFT BEHIND: containers [$left] volumes [$vols]"; rc=1
  else log "nothing left running"; fi
  log "$([ "$rc" = 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - T0 )) s"
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------ 2. state, migration, a key
log "starting postgres and redis"
compose up -d --no-build postgres redis
log "migration job"
compose run --rm -T migrate
log "creating an application key"
APP_TOKEN="$(compose run --rm -T migrate keys create --tenant default --role app --subject smoke-app \
  | tail -1 | tr -d '\r')"
[ -n "$APP_TOKEN" ] || die "keys create printed no token"
export SMOKE_APP_TOKEN="$APP_TOKEN" SMOKE_ADMIN_TOKEN="$PE_ADMIN_TOKEN"

# ------------------------------------------------------------------ 3. replicas behind nginx
log "starting two replicas, nginx, the simulated fleet and the SMTP sink"
compose up -d --no-build proxy
for i in $(seq 1 180); do
  if curl -fsS "http://127.0.0.1:$PE_HTTP_PORT/readyz" >/dev/null 2>&1; then break; fi
  [ "$i" = 180 ] && die "nginx /readyz not ready after 180 s"
  sleep 1
done
log "ready through nginx on 127.0.0.1:$PE_HTTP_PORT"

# ------------------------------------------------------------------ 4. traffic, checked from the log
PY="${SMOKE_PYTHON:-python3}"
if ! "$PY" -c 'import openai, httpx' 2>/dev/null; then
  log "a driver venv with the openai SDK (.smoke-venv)"
  [ -x "$ROOT/.smoke-venv/bin/python" ] || python3 -m venv "$ROOT/.smoke-venv"
  "$ROOT/.smoke-venv/bin/pip" install -q openai httpx
  PY="$ROOT/.smoke-venv/bin/python"
fi
mail_cmd="${COMPOSE[*]} -p $PROJECT -f $HERE/docker-compose.yml -f $HERE/smoke/docker-compose.smoke.yml logs --no-color mail"
"$PY" "$HERE/smoke/drive.py" --base "http://127.0.0.1:$PE_HTTP_PORT" \
  --replica "http://127.0.0.1:$SMOKE_REPLICA_1_PORT" --replica "http://127.0.0.1:$SMOKE_REPLICA_2_PORT" \
  --fleet "qwen=http://127.0.0.1:$SMOKE_FLEET_PORT" --fleet "gemma=http://127.0.0.1:$SMOKE_FLEET_PORT_2" \
  --mail-cmd "$mail_cmd" || die "a traffic check failed"

# ------------------------------------------------------------------ 5. the log's hash chain
log "verify-log on the shared PostgreSQL log"
compose exec -T policyengine-1 policyengine verify-log || die "verify-log"

log "all steps held in $(( $(date +%s) - T0 )) s; image sizes:"
while IFS='=' read -r _ img; do
  log "  $img $("$DOCKER" image inspect -f '{{.Size}}' "$img" | awk '{printf "%.0f MB", $1/1e6}')"
done < "$HERE/.images.env"
