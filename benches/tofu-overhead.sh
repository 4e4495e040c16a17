#!/usr/bin/env bash
# How much the `tofu` action's plan-then-apply path costs over running the same commands by
# hand in the same image: `pipewright exec` of a pipeline with `uses: tofu` (init, plan -out,
# show -json, apply of the saved plan) against four `docker run`s of those commands, each on
# a fresh copy of the same small root module, interleaved, N times (default 7).
# Needs scripts/test-env.sh (the pipewright-test/tools:1 image) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-7}
IMAGE=pipewright-test/tools:1
cargo build --release --quiet -p pipewright
BIN=target/release/pipewright
docker image inspect "$IMAGE" >/dev/null || { echo "no $IMAGE: run scripts/test-env.sh" >&2; exit 1; }

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
mkdir -p "$src/iac" "$src/.pipewright"
cat >"$src/iac/main.tf" <<'HCL'
resource "terraform_data" "edge" { input = "cloud edge" }
resource "terraform_data" "dns" { input = "records" }
HCL
cat >"$src/.pipewright/iac.yml" <<YAML
on: push
steps:
  - name: tofu
    uses: tofu
    with: { path: iac, image: $IMAGE, command: apply }
YAML

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

by_hand() {
  local dir
  dir=$(mktemp -d)
  cp -r "$src/." "$dir/"
  for args in "init -input=false -no-color" "plan -input=false -no-color -out=p.tfplan" "show -json p.tfplan" "apply -input=false -no-color p.tfplan"; do
    # shellcheck disable=SC2086
    docker run --rm -v "$dir:/workspace" -w /workspace/iac -e TF_IN_AUTOMATION=1 "$IMAGE" tofu $args >/dev/null
  done
  rm -rf "$dir"
}

by_pipewright() {
  "$BIN" exec "$src" --pipeline iac >/dev/null
}

by_pipewright; by_hand   # warm-up
a=(); b=()
for _ in $(seq "$N"); do
  t=$(date +%s%N); by_pipewright; a+=("$(ms "$t")")
  t=$(date +%s%N); by_hand; b+=("$(ms "$t")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
echo "tofu init + plan + show -json + apply, $N interleaved runs each (ms):"
echo "  pipewright exec (uses: tofu)   median $ma   all: ${a[*]}"
echo "  docker run x4 by hand          median $mb   all: ${b[*]}"
echo "  difference of medians: $((ma - mb)) ms ($(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", a/b}')x)"
