#!/usr/bin/env bash
# Pipewright's whole test suite, from a fresh machine: prepares what the tests need
# (scripts/test-env.sh), checks formatting and lints, runs every test, then builds and
# tries the runner-host image (scripts/test-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-env.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi

# The runner-host image (packaging/), built here without pulling anything, and tried.
scripts/test-image.sh
