#!/usr/bin/env bash
# Builds Pipewright's runner-host image (packaging/Dockerfile) here, without pulling any
# image: a Debian root made with `debootstrap --variant=minbase` (git, ca-certificates),
# imported with `docker import`, then packaging/Dockerfile on top of it with the binary.
#
#   scripts/build-image.sh [--arch amd64|arm64] [--binary PATH] [--tag NAME:TAG]
#
# --arch: the image's architecture (default: this machine's). A foreign one needs the
#   binary built for it (cross build --release --target aarch64-unknown-linux-gnu, or
#   cargo zigbuild) and qemu-user-static with binfmt_misc for debootstrap's second stage.
# --binary: default target/release/pipewright (built when missing) for this machine's
#   architecture, target/aarch64-unknown-linux-gnu/release/pipewright for arm64 on amd64
#   (under $CARGO_TARGET_DIR instead of target/ when that is set).
# --tag: default pipewright:<version>-<arch>, also tagged pipewright:latest for this arch.
# The Debian root is cached under /var/cache/pipewright-image/ (by suite, arch and package
# list), so a second build downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'build-image: %s\n' "$*" >&2; }

arch=$(dpkg --print-architecture)
binary=
tag=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) log "unknown argument $1 (see the head of $0)"; exit 2 ;;
  esac
done
case "$arch" in
  amd64) target=x86_64-unknown-linux-gnu ;;
  arm64) target=aarch64-unknown-linux-gnu ;;
  *) log "unsupported --arch $arch: amd64 or arm64"; exit 2 ;;
esac
native=$(dpkg --print-architecture)
targets=${CARGO_TARGET_DIR:-target}
if [ -z "$binary" ]; then
  if [ "$arch" = "$native" ]; then binary=$targets/release/pipewright; else binary=$targets/$target/release/pipewright; fi
fi
if [ ! -x "$binary" ] && [ "$binary" = "$targets/release/pipewright" ]; then
  log "building the release binary"
  cargo build --release --locked -p pipewright --bin pipewright
fi
[ -x "$binary" ] || { log "no binary at $binary: build it first (cross build --release --target $target, or cargo zigbuild)"; exit 1; }
# The ELF header's e_machine (bytes 18-19): 62 is x86-64, 183 is AArch64.
machine=$(od -An -t u2 -j 18 -N 2 "$binary" | tr -d ' ')
case "$arch:$machine" in
  amd64:62 | arm64:183) ;;
  *) log "$binary is not an $arch binary (ELF machine $machine)"; exit 1 ;;
esac
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
default_tag=pipewright:$version-$arch
tag=${tag:-$default_tag}

SUITE=bookworm
PACKAGES=git,ca-certificates
MIRROR=${PIPEWRIGHT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=/var/cache/pipewright-image
TRIM='
rm -rf var/cache/apt/*.bin var/cache/apt/archives/*.deb var/lib/apt/lists/* \
  usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian \
  var/log/*.log var/log/apt/* var/cache/debconf/*-old
'
root_hash=$(printf '%s\n' "$SUITE" "$arch" "$PACKAGES" "$TRIM" | sha256sum | cut -c1-16)
root_tar="$CACHE/root-$SUITE-$arch-$root_hash.tar"
base="pipewright-image/base:$root_hash"

mkdir -p "$CACHE/debs-$arch"
exec 9>"$CACHE/lock"
flock 9
work=$(mktemp -d)
cleanup() {
  # debootstrap mounts /proc and /sys inside the root and may leave them mounted.
  for m in proc sys; do umount "$work/root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

if [ ! -s "$root_tar" ]; then
  command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  foreign=()
  if [ "$arch" != "$native" ]; then
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
      log "--arch $arch on $native needs qemu-user-static registered in binfmt_misc (/proc/sys/fs/binfmt_misc/qemu-aarch64 is missing)"
      exit 1
    }
    foreign=(--arch "$arch")
  fi
  log "debootstrap $SUITE $arch (minbase + $PACKAGES)"
  started=$(date +%s)
  if ! debootstrap --variant=minbase "${foreign[@]}" --include="$PACKAGES" --cache-dir="$CACHE/debs-$arch" \
    "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    log "debootstrap failed (log above)"
    exit 1
  fi
  (cd "$work/root" && eval "$TRIM")
  tar --numeric-owner -C "$work/root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$root_tar.tmp" .
  mv "$root_tar.tmp" "$root_tar"
  find "$CACHE" -maxdepth 1 -name "root-$SUITE-$arch-*.tar" ! -name "$(basename "$root_tar")" -delete
  log "debootstrap took $(($(date +%s) - started))s"
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  docker import --platform "linux/$arch" "$root_tar" "$base" >/dev/null
fi

# The build context: the Dockerfile and the binary alone.
mkdir -p "$work/context"
cp packaging/Dockerfile "$work/context/Dockerfile"
cp "$binary" "$work/context/pipewright"
DOCKER_BUILDKIT=0 docker build -q \
  --build-arg BASE="$base" --build-arg INSTALL_PACKAGES=0 --build-arg BINARY=pipewright \
  --label "org.opencontainers.image.version=$version" \
  -t "$tag" "$work/context" >/dev/null
if [ "$arch" = "$native" ] && [ "$tag" = "$default_tag" ]; then docker tag "$tag" pipewright:latest; fi
log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
