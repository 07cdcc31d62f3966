#!/usr/bin/env bash
# Build the images of the compose stack (docs/deployment.md, "Building the images").
#
#   examples/deploy/build.sh            online if the registry answers, else offline
#   examples/deploy/build.sh --offline  never pull: a debootstrap base + a host wheelhouse
#   examples/deploy/build.sh --online   official base images, dependencies from PyPI
#
# Online: the policyengine image FROM python:3.11-slim-bookworm, with postgres:16-alpine,
# redis:7-alpine and nginx:1.27-alpine pulled as they are.
# Offline (no registry, no Python index inside containers, only Debian's mirror):
#   1. pe-base:bookworm   debootstrap --variant=minbase from the Debian mirror, `docker import`
#   2. a wheelhouse       `pip wheel` on the host into examples/deploy/wheelhouse/ (the host must
#                         be CPython 3.11 on glibc >= 2.28 x86_64, like the base: Debian 12)
#   3. policyengine:0.1.0 FROM pe-base with WHEELHOUSE=1 (`pip install --no-index`)
#   4. pe-postgres, pe-redis, pe-nginx: Debian's packages on pe-base (examples/deploy/images/)
# It writes examples/deploy/.images.env naming the images, which smoke.sh and
# `docker-compose --env-file` read (POSTGRES_IMAGE, REDIS_IMAGE, NGINX_IMAGE).
#
# Needs: docker (dockerd running), and for offline builds debootstrap, root and python3.11.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DOCKER="${DOCKER:-docker}"
TAG="${PE_IMAGE:-policyengine:0.1.0}"
BASE_TAG="pe-base:bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
MODE="${1:-auto}"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

"$DOCKER" info >/dev/null 2>&1 || die "no container engine: start dockerd (apt-get install docker.io) and retry"
# Docker >= 23 builds with BuildKit through the buildx plugin; Debian's docker.io client may
# lack the plugin. The Dockerfiles need nothing BuildKit-only, so the classic builder is used
# when buildx is missing.
BUILD_FLAGS=()
if ! "$DOCKER" buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
  BUILD_FLAGS=(--force-rm)   # the classic builder leaves a failed step's container behind otherwise
fi

case "$MODE" in
  --online) MODE=online ;;
  --offline) MODE=offline ;;
  auto|--auto)
    if timeout 60 "$DOCKER" pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then MODE=online; else MODE=offline; fi
    log "registry $([ "$MODE" = online ] && echo reachable || echo unreachable): building $MODE" ;;
  *) die "usage: build.sh [--online|--offline]" ;;
esac

image_size() { "$DOCKER" image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }

if [ "$MODE" = online ]; then
  "$DOCKER" build "${BUILD_FLAGS[@]}" -f "$HERE/Dockerfile" -t "$TAG" "$ROOT"
  for img in postgres:16-alpine redis:7-alpine nginx:1.27-alpine; do "$DOCKER" pull -q "$img" >/dev/null; done
  cat > "$HERE/.images.env" <<EOF
PE_IMAGE=$TAG
POSTGRES_IMAGE=postgres:16-alpine
REDIS_IMAGE=redis:7-alpine
NGINX_IMAGE=nginx:1.27-alpine
EOF
else
  # 1. the base image, from the Debian mirror
  if ! "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || die "offline build needs debootstrap (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    rootfs="$(mktemp -d /var/tmp/pe-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap bookworm (minbase + python3, venv, curl) from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,curl \
      bookworm "$rootfs" "$MIRROR" >/dev/null
    # apt inside the image must find the same mirror; no caches or docs in the layer
    echo "deb $MIRROR bookworm main" > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/*
    tar -C "$rootfs" -c . | "$DOCKER" import -c 'ENV LANG=C.UTF-8' \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"; trap - EXIT
    log "made $BASE_TAG ($(image_size "$BASE_TAG"))"
  fi
  # 2. the wheelhouse: every wheel the image installs, built or fetched on the host
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
    || die "the wheelhouse is built for the image's CPython 3.11: set PYTHON=python3.11"
  wh="$HERE/wheelhouse"
  # rebuilt when the requirements (pyproject.toml) or this script change
  want="$(cat "$ROOT/pyproject.toml" "$HERE/build.sh" | sha256sum | cut -c1-16)"
  if ! ls "$wh"/torch-2.13.0*.whl >/dev/null 2>&1 || [ "$(cat "$wh/.stamp" 2>/dev/null)" != "$want" ]; then
    log "pip wheel '.[embeddings]' -> examples/deploy/wheelhouse/"
    venv="$(mktemp -d /var/tmp/pe-wheel-venv.XXXXXX)"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    # The project's own wheel is not kept: the Dockerfile installs from the source it copies.
    # The base's CPython is Debian's 3.11.2, the host's may be a later 3.11: requirements gated
    # on python_full_version are resolved for the host, so the ones the image needs besides are
    # named here (redis needs async-timeout below 3.11.3).
    "$venv/bin/pip" wheel -q --wheel-dir "$wh" "$ROOT[embeddings]" setuptools wheel 'async-timeout>=4.0.3'
    rm -f "$wh"/policyengine_llm-*.whl
    rm -rf "$venv"
    echo "$want" > "$wh/.stamp"
  fi
  log "wheelhouse: $(ls "$wh"/*.whl | wc -l) wheels, $(du -sh "$wh" | cut -f1)"
  # 3. the policyengine image
  "$DOCKER" build "${BUILD_FLAGS[@]}" -f "$HERE/Dockerfile" --build-arg BASE_IMAGE="$BASE_TAG" --build-arg WHEELHOUSE=1 \
    -t "$TAG" "$ROOT"
  # 4. PostgreSQL, Redis and nginx from Debian's packages on the same base
  for svc in postgres redis nginx; do
    "$DOCKER" build "${BUILD_FLAGS[@]}" -f "$HERE/images/$svc.Dockerfile" --build-arg BASE_IMAGE="$BASE_TAG" \
      -t "pe-$svc:bookworm" "$HERE/images"
  done
  cat > "$HERE/.images.env" <<EOF
PE_IMAGE=$TAG
POSTGRES_IMAGE=pe-postgres:bookworm
REDIS_IMAGE=pe-redis:bookworm
NGINX_IMAGE=pe-nginx:bookworm
EOF
fi

log "images ($MODE):"
while IFS='=' read -r _ img; do log "  $img  $(image_size "$img")"; done < "$HERE/.images.env"
