#!/usr/bin/env bash
# Checks the runner-host image end to end: scripts/build-image.sh builds it (from the
# binary the tests built, so that CI compiles Pipewright once; a release build goes
# through the same script and Dockerfile), then the image must print its version, validate
# the example repository, and serve: /healthz answers and /readyz finds the Docker engine
# through the mounted socket, with git on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test-image: %s\n' "$*" >&2; }

binary=${PIPEWRIGHT_IMAGE_BINARY:-${CARGO_TARGET_DIR:-target}/debug/pipewright}
[ -x "$binary" ] || cargo build --quiet --locked -p pipewright --bin pipewright
tag=pipewright-test/image:ci
scripts/build-image.sh --binary "$binary" --tag "$tag"

docker run --rm "$tag" --version | grep -q '^pipewright ' || { log "--version printed nothing"; exit 1; }
docker run --rm -v "$PWD/examples/factory:/repo:ro" "$tag" validate /repo >/dev/null \
  || { log "the image did not validate examples/factory"; exit 1; }
docker run --rm --entrypoint git "$tag" --version >/dev/null || { log "no git in the image"; exit 1; }

data=$(mktemp -d)
name=pipewright-test-image-$$
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$data"; }
trap cleanup EXIT
mkdir -p /dev/shm/pipewright
docker run -d --name "$name" \
  -e PIPEWRIGHT_SERVER__DATA_DIR="$data" -e PIPEWRIGHT_API__READ_PUBLIC=true -e NO_COLOR=1 \
  -v /var/run/docker.sock:/var/run/docker.sock -v "$data:$data" \
  -v /dev/shm/pipewright:/dev/shm/pipewright \
  -p 127.0.0.1::8080 "$tag" serve >/dev/null
port=$(docker port "$name" 8080/tcp | head -n 1 | sed 's/.*://')
ready=
for _ in $(seq 1 60); do
  if body=$(curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null); then ready=$body; break; fi
  sleep 1
done
if [ -z "$ready" ]; then
  docker logs "$name" >&2 || true
  log "the image's server did not become ready: $(curl -sS "http://127.0.0.1:$port/readyz" 2>&1)"
  exit 1
fi
case "$ready" in *'"docker":true'*) ;; *) log "readyz without Docker: $ready"; exit 1 ;; esac
log "ok: $tag prints its version, validates the examples, serves and reaches the engine"
